//! What every handler shares: the RPC's span, the caller, and the shapes
//! of its answer.
//!
//! The guard ([`super::guard`]) opens one `rpc` span per request with the
//! method, a request id and the key's id. A handler names the resource the
//! call is about ([`Rpc::about`]: a model, a query id; [`Rpc::on_namespace`]
//! and [`Rpc::on_collection`] also check that the caller's key may touch
//! it), runs its body, and answers through [`Rpc::unary`] or
//! [`Rpc::stream`], which record the final status code on the span and log
//! the call: at debug level normally, at error level when the status is
//! INTERNAL (a bug, to be found by its request id). Streams are followed
//! to their end, so their code is the one the client sees in the trailers;
//! a stream dropped before its end (the client went away) is CANCELLED.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tonic::{Code, Response, Status};
use tracing::Span;

use super::ResponseStream;
use super::guard::Call;
use crate::error::Error;
use crate::security::Caller;

/// One RPC being served.
#[derive(Debug)]
pub struct Rpc {
    span: Span,
    started: Instant,
    /// `None` when the handler is called without the guard (unit tests).
    call: Option<Arc<Call>>,
}

impl Rpc {
    /// The RPC being served, about nothing in particular (a listing, stats).
    pub fn begin() -> Rpc {
        Rpc {
            span: Span::current(),
            started: Instant::now(),
            call: Call::current(),
        }
    }

    /// The RPC being served, about the key-value namespace `name`, if the
    /// caller's key may touch it (PERMISSION_DENIED otherwise).
    pub fn on_namespace(name: &str) -> Result<Rpc, Status> {
        let rpc = Rpc::begin();
        rpc.record_checked("namespace", name)?;
        Ok(rpc)
    }

    /// The RPC being served, about the collection `name`, if the caller's
    /// key may touch it (PERMISSION_DENIED otherwise).
    pub fn on_collection(name: &str) -> Result<Rpc, Status> {
        let rpc = Rpc::begin();
        rpc.record_checked("collection", name)?;
        Ok(rpc)
    }

    /// Names the collection once the handler knows it (the collection of
    /// an UpsertStream is in its first message), if the caller's key may
    /// touch it.
    pub fn record_collection(&self, name: &str) -> Result<(), Status> {
        self.record_checked("collection", name)
    }

    fn record_checked(&self, kind: &str, name: &str) -> Result<(), Status> {
        self.record_resource(kind, name);
        let caller = self.caller();
        if caller.may_touch(name) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(caller.refusal(kind, name)).into())
        }
    }

    /// Who is calling.
    pub fn caller(&self) -> Caller {
        self.call
            .as_ref()
            .map_or_else(Caller::anyone, |call| call.caller.clone())
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
        let resource = format!("{kind}:{name}");
        self.span.record("resource", resource.as_str());
        if let Some(call) = &self.call {
            call.set_resource(resource);
        }
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
