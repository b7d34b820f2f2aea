//! What every handler shares: the RPC's span and the shapes of its answer.
//!
//! The server opens one `rpc` span per request ([`span_for`]) with the
//! method and a request id. A handler names the resource the call is about
//! ([`Rpc::about`]: a collection, a namespace, a model, a query id), runs
//! its body, and answers through [`Rpc::unary`] or [`Rpc::stream`], which
//! record the final status code on the span and log the call: at debug
//! level normally, at error level when the status is INTERNAL (a bug, to be
//! found by its request id). Streams are followed to their end, so their
//! code is the one the client sees in the trailers; a stream dropped
//! before its end (the client went away) is CANCELLED.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tonic::{Code, Response, Status};
use tracing::Span;
use tracing::field::Empty;

use super::ResponseStream;

/// The span of one incoming request: `rpc{method, request_id, resource,
/// code}`, the last two filled in by the handler.
pub fn span_for<B>(request: &http::Request<B>) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned);
    tracing::info_span!(
        "rpc",
        method = %request.uri().path(),
        request_id = %request_id,
        resource = Empty,
        code = Empty,
    )
}

/// One RPC being served.
#[derive(Debug)]
pub struct Rpc {
    span: Span,
    started: Instant,
}

impl Rpc {
    /// The RPC being served, about nothing in particular (a listing, stats).
    pub fn begin() -> Rpc {
        Rpc {
            span: Span::current(),
            started: Instant::now(),
        }
    }

    /// The RPC being served, about the `kind` named `name` (for example a
    /// collection `docs`: `resource = "collection:docs"`).
    pub fn about(kind: &str, name: &str) -> Rpc {
        let rpc = Rpc::begin();
        rpc.record_resource(kind, name);
        rpc
    }

    /// Names the resource once the handler knows it (the collection of an
    /// UpsertStream is in its first message).
    pub fn record_resource(&self, kind: &str, name: &str) {
        self.span.record(
            "resource",
            tracing::field::display(format_args!("{kind}:{name}")),
        );
    }

    /// The answer of a unary RPC, its code recorded and logged.
    pub fn unary<T>(self, result: Result<T, Status>) -> Result<Response<T>, Status> {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let message = result.as_ref().err().map(Status::message);
        self.finish(code, message);
        result.map(Response::new)
    }

    /// The answer of a server-streaming or bidirectional RPC: `items`,
    /// polled inside the RPC's span, its final code recorded and logged.
    /// `on_drop` runs when the response stream is dropped, at its end or
    /// when the client goes away.
    pub fn stream<T, S>(
        self,
        items: S,
        on_drop: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<Response<ResponseStream<T>>, Status>
    where
        S: Stream<Item = Result<T, Status>> + Send + 'static,
        T: 'static,
    {
        Ok(Response::new(Box::pin(Followed {
            items: Box::pin(items),
            rpc: Some(self),
            on_drop,
        })))
    }

    fn finish(self, code: Code, message: Option<&str>) {
        let _entered = self.span.enter();
        self.span
            .record("code", tracing::field::display(format_args!("{code:?}")));
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1e3;
        if code == Code::Internal {
            tracing::error!(
                ?code,
                elapsed_ms,
                message = message.unwrap_or(""),
                "rpc failed inside the server"
            );
        } else {
            tracing::debug!(?code, elapsed_ms, "rpc finished");
        }
    }
}

/// A response stream that records how its RPC ended.
struct Followed<T> {
    items: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    /// Until the stream has ended.
    rpc: Option<Rpc>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> Stream for Followed<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let span = self.rpc.as_ref().map(|rpc| rpc.span.clone());
        let _entered = span.as_ref().map(Span::enter);
        let next = self.items.as_mut().poll_next(cx);
        match &next {
            Poll::Ready(None) => {
                if let Some(rpc) = self.rpc.take() {
                    rpc.finish(Code::Ok, None);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(rpc) = self.rpc.take() {
                    rpc.finish(status.code(), Some(status.message()));
                }
            }
            _ => {}
        }
        next
    }
}

impl<T> Drop for Followed<T> {
    fn drop(&mut self) {
        if let Some(rpc) = self.rpc.take() {
            rpc.finish(Code::Cancelled, None);
        }
        if let Some(on_drop) = self.on_drop.take() {
            on_drop();
        }
    }
}
