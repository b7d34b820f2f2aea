//! Reports oversize messages as RESOURCE_EXHAUSTED.
//!
//! tonic refuses a message over `max_decoding_message_size` (or an answer over
//! `max_encoding_message_size`) with OUT_OF_RANGE, while the gRPC status-code
//! guide, grpc-go and grpc-java use RESOURCE_EXHAUSTED for "message larger
//! than the configured maximum", and that is what clients retry-classify on.
//! This layer rewrites exactly that status, wherever it travels: in the
//! response headers (unary and server-streaming calls fail before any message
//! is sent) or in the trailers (client and bidi streams fail later).

use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::util::MapResponseLayer;

/// tonic's message for both directions: "... message length too large: ...".
const TONIC_OVERSIZE_MARKERS: [&str; 2] =
    ["message length too large", "message%20length%20too%20large"];
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The response rewrite, as a plain function pointer so the layer has a
/// nameable type.
pub type MapFn<B> = fn(http::Response<B>) -> http::Response<LimitBody<B>>;

/// The layer to put in front of every service.
pub fn layer<B>() -> MapResponseLayer<MapFn<B>> {
    MapResponseLayer::new(map_response::<B>)
}

fn map_response<B>(response: http::Response<B>) -> http::Response<LimitBody<B>> {
    let (mut parts, body) = response.into_parts();
    rewrite(&mut parts.headers);
    http::Response::from_parts(parts, LimitBody { inner: body })
}

fn rewrite(headers: &mut HeaderMap) {
    let is_out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == OUT_OF_RANGE.as_bytes());
    if !is_out_of_range {
        return;
    }
    let oversize = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            TONIC_OVERSIZE_MARKERS
                .iter()
                .any(|marker| m.contains(marker))
        });
    if oversize {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
        );
    }
}

pin_project! {
    /// A response body whose trailers get the same rewrite as the headers.
    #[derive(Debug)]
    pub struct LimitBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B: Body> Body for LimitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        rewrite(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &'static str, message: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static(status));
        h.insert("grpc-message", http::HeaderValue::from_static(message));
        h
    }

    #[test]
    fn oversize_out_of_range_becomes_resource_exhausted() {
        let mut h = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%2020%20bytes",
        );
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "8");
    }

    #[test]
    fn other_statuses_are_left_alone() {
        let mut h = headers("11", "seek past end");
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "11");
        let mut h = headers("3", "message length too large");
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "3");
    }
}
