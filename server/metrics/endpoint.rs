//! `GET /metrics` over HTTP/1.1, on its own port (`--metrics-listen`), so
//! a scraper never shares the gRPC port's TLS or keys and the port can be
//! left unexposed. The same port answers `GET /healthz` (the process
//! serves) and `GET /readyz` (503 once shutdown began): probes for
//! orchestrators whose gRPC probes cannot speak TLS (Kubernetes').

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Scrape;

/// Serves `scrape` on `listener` until the task is aborted; `draining`
/// turns true when shutdown begins.
pub async fn serve(listener: TcpListener, scrape: Arc<Scrape>, draining: watch::Receiver<bool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accepting a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let scrape = Arc::clone(&scrape);
        let draining = draining.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let scrape = Arc::clone(&scrape);
                let draining = *draining.borrow();
                async move { Ok::<_, Infallible>(respond(&scrape, draining, request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

async fn respond(scrape: &Scrape, draining: bool, request: Request<Incoming>) -> Response<String> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = reply(StatusCode::OK, scrape.render().await);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") if draining => {
            reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
        }
        (&Method::GET, "/readyz") => reply(StatusCode::OK, "ready\n".into()),
        (_, "/metrics" | "/healthz" | "/readyz") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "/metrics, /healthz and /readyz only\n".into(),
        ),
    }
}
