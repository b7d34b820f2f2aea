//! The door every call passes: its span, its key, its limits, its audit
//! line.
//!
//! [`Guard`] is the outermost layer of the server. For each request it
//! opens the `rpc` span (method, request id, key id; the handler adds the
//! resource and the final code), and, when the server requires keys,
//! reads the key the call presents (`authorization: Bearer <key>` or
//! `x-api-key`), checks the scope the method needs ([`super::access`]) and
//! the key's limits, and refuses with UNAUTHENTICATED, PERMISSION_DENIED or
//! RESOURCE_EXHAUSTED (with RetryInfo) before any handler runs. An admitted
//! call runs with its [`Call`] in a task-local, where handlers find the
//! caller to check the namespace or collection they touch.
//!
//! The response body is followed to its end, so the status code is the
//! one the client gets (trailers of a stream, or the headers of a
//! trailers-only answer; CANCELLED when the client goes away first): the
//! call's count and duration are recorded then (metrics), and its audit
//! line written, for every write, admin call and refusal.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::access::{self, Names, Need};
use crate::error::Error;
use crate::security::{AuditEntry, AuditLog, Caller, KeyRing, Scope, StreamPermit};

tokio::task_local! {
    static CALL: Arc<Call>;
}

/// The call being served: who makes it, and what it turned out to be about.
#[derive(Debug)]
pub struct Call {
    /// Who is calling.
    pub caller: Caller,
    resource: Mutex<Option<String>>,
}

impl Call {
    /// The call the current task serves, if it came through the guard.
    pub fn current() -> Option<Arc<Call>> {
        CALL.try_with(Arc::clone).ok()
    }

    /// Names the resource for the audit line (`collection:docs`).
    pub fn set_resource(&self, resource: String) {
        *self.resource.lock().unwrap_or_else(|p| p.into_inner()) = Some(resource);
    }

    fn resource(&self) -> Option<String> {
        self.resource
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The layer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    /// `None`: the server requires no keys.
    keys: Option<Arc<KeyRing>>,
    audit: AuditLog,
}

impl Guard {
    /// A guard requiring the keys of `keys` (none: every call admitted)
    /// and writing audit lines to `audit`.
    pub fn new(keys: Option<Arc<KeyRing>>, audit: AuditLog) -> Guard {
        Guard {
            state: Arc::new(State { keys, audit }),
        }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// A service behind the guard.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    state: Arc<State>,
}

/// The request id: the client's `x-request-id` when it sends a sane one,
/// else a new ULID.
fn request_id<B>(request: &http::Request<B>) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned)
}

fn peer<B>(request: &http::Request<B>) -> Option<String> {
    let ext = request.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
        .map(|a| a.to_string())
}

/// The key the call presents, if any.
fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, key) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

impl State {
    /// Admits the call or says why not (and whose key it was, once known).
    fn admit(
        &self,
        method: &str,
        headers: &http::HeaderMap,
        rule: access::Rule,
    ) -> Result<(Caller, Option<StreamPermit>), (Error, Caller)> {
        let anonymous = |e: Error| (e, Caller::anyone());
        let (Some(keys), Need::Key(scope)) = (&self.keys, rule.need) else {
            return Ok((Caller::anyone(), None));
        };
        let presented = presented_key(headers).ok_or_else(|| {
            anonymous(Error::Unauthenticated(
                "this server requires an API key: send `authorization: Bearer <key>` \
                 (or `x-api-key: <key>`)"
                    .into(),
            ))
        })?;
        let principal = keys.authenticate(presented).ok_or_else(|| {
            anonymous(Error::Unauthenticated(
                "the API key is not recognised".into(),
            ))
        })?;
        let caller = Caller::with_key(Arc::clone(&principal));
        let refuse = |e: Error| (e, caller.clone());
        if principal.scope < scope {
            return Err(refuse(Error::PermissionDenied(format!(
                "key {} has scope {}; {method} needs {}",
                principal.id,
                principal.scope.name(),
                scope.name()
            ))));
        }
        if caller.is_limited() && rule.names == Names::Refused {
            return Err(refuse(Error::PermissionDenied(format!(
                "key {} is limited to namespaces [{}]; {method} can reach other namespaces \
                 (a query's tools, an agent's memory, server-wide figures), so keys limited \
                 to some are refused it",
                principal.id,
                principal.namespaces.join(", ")
            ))));
        }
        let limited = |refusal: crate::security::Refusal| {
            refuse(Error::RateLimited {
                message: format!("key {}: {refusal}", principal.id),
                retry_after: refusal.retry_after(),
            })
        };
        principal
            .limits
            .admit_call(Instant::now())
            .map_err(limited)?;
        let permit = if rule.streaming {
            Some(principal.limits.open_stream().map_err(limited)?)
        } else {
            None
        };
        Ok((caller, permit))
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<tower::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one to call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let request_id = request_id(&request);
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            request_id = %request_id,
            key = Empty,
            resource = Empty,
            code = Empty,
        );
        // A caller's W3C trace context makes this call's span its child.
        if let Some(parent) = crate::telemetry::remote_context(request.headers()) {
            let _ = span.set_parent(parent);
        }
        let rule = access::rule(&method);
        // Only audit lines show the peer: not formatted when none is written.
        let peer = if state.audit.is_on() {
            peer(&request)
        } else {
            None
        };
        let admitted = state.admit(&method, request.headers(), rule);
        let audited = |caller: &Caller| Ending {
            state: Arc::clone(&state),
            label: rule.path,
            key: caller.key_id().map(str::to_owned),
            method: method.clone(),
            request_id: request_id.clone(),
            peer: peer.clone(),
            started,
            writes: matches!(rule.need, Need::Key(s) if s >= Scope::Write),
            call: None,
            code: None,
            permit: None,
        };
        match admitted {
            Err((refusal, caller)) => {
                let mut ending = audited(&caller);
                let status = Status::from(refusal);
                ending.code = Some(status.code());
                // Refusals are audited whatever the method.
                ending.writes = true;
                span.record(
                    "code",
                    tracing::field::display(format_args!("{:?}", status.code())),
                );
                span.in_scope(|| {
                    tracing::debug!(code = ?status.code(), message = status.message(), "call refused");
                });
                Box::pin(std::future::ready(Ok(observed(status.into_http(), ending))))
            }
            Ok((caller, permit)) => {
                if let Some(id) = caller.key_id() {
                    span.record("key", id);
                }
                let mut ending = audited(&caller);
                let call = Arc::new(Call {
                    caller,
                    resource: Mutex::new(None),
                });
                ending.call = Some(Arc::clone(&call));
                ending.permit = permit;
                let served = CALL.scope(call, inner.call(request)).instrument(span);
                Box::pin(async move {
                    let response = served.await?;
                    Ok(observed(response.map(Body::new), ending))
                })
            }
        }
    }
}

/// The response with its body followed to the end; the code of a
/// trailers-only answer is already in its headers.
fn observed(response: http::Response<Body>, mut ending: Ending) -> http::Response<Body> {
    if let Some(code) = grpc_status(response.headers()) {
        ending.code = Some(code);
    }
    response.map(|inner| {
        Body::new(Followed {
            inner,
            ending: Some(ending),
        })
    })
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// What is left to do when a call ends: its audit line; its stream slot
/// frees with it.
struct Ending {
    state: Arc<State>,
    /// The method's path for metrics ("unknown" outside the contract).
    label: &'static str,
    key: Option<String>,
    method: String,
    request_id: String,
    peer: Option<String>,
    started: Instant,
    /// Whether the call is audited (a write or admin method, or refused).
    writes: bool,
    call: Option<Arc<Call>>,
    code: Option<Code>,
    permit: Option<StreamPermit>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        // No code by the end: the client went away before the trailers.
        let code = self.code.unwrap_or(Code::Cancelled);
        let elapsed = self.started.elapsed();
        super::rpc_metrics::record(self.label, code, elapsed, code_name(code));
        let audited = self.writes || matches!(code, Code::Unauthenticated | Code::PermissionDenied);
        if audited && self.state.audit.is_on() {
            let resource = self.call.as_ref().and_then(|c| c.resource());
            self.state.audit.record(&AuditEntry {
                key: self.key.as_deref(),
                method: &self.method,
                resource: resource.as_deref(),
                code: code_name(code),
                peer: self.peer.take(),
                request_id: &self.request_id,
                elapsed_ms: elapsed.as_secs_f64() * 1e3,
            });
        }
    }
}

/// The code's name as the gRPC spec writes it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pin_project! {
    /// A response body that notes the status in its trailers and runs its
    /// call's [`Ending`] when it ends or is dropped.
    struct Followed {
        #[pin]
        inner: Body,
        ending: Option<Ending>,
    }
}

impl http_body::Body for Followed {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status)
                    && let Some(ending) = this.ending.as_mut()
                {
                    ending.code = Some(code);
                }
            }
            Poll::Ready(None) => {
                this.ending.take();
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
