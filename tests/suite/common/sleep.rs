//! A tiny gRPC service for tests that need a call to stay in flight:
//! `/agentd.test.Sleep/Sleep` sleeps for the requested duration and echoes it.
//! Written against tonic's server and client building blocks, the same ones
//! generated code uses, so it behaves like any other service on the port.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

type Dur = prost_types::Duration;

/// The Sleep service.
#[derive(Debug, Clone, Default)]
pub struct SleepService;

impl tonic::server::NamedService for SleepService {
    const NAME: &'static str = "agentd.test.Sleep";
}

impl tower::Service<http::Request<tonic::body::Body>> for SleepService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Dur, Dur>::default());
            Ok(grpc.unary(Sleeper, request).await)
        })
    }
}

struct Sleeper;

impl tonic::server::UnaryService<Dur> for Sleeper {
    type Response = Dur;
    type Future = BoxFuture<'static, Result<Response<Dur>, Status>>;

    fn call(&mut self, request: Request<Dur>) -> Self::Future {
        Box::pin(async move {
            let d = request.into_inner();
            let std = std::time::Duration::try_from(d)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            tokio::time::sleep(std).await;
            Ok(Response::new(d))
        })
    }
}

/// Calls Sleep on `channel` for `duration`.
pub async fn sleep(
    channel: Channel,
    duration: std::time::Duration,
) -> Result<std::time::Duration, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let answer = grpc
        .unary(
            Request::new(Dur::try_from(duration).unwrap()),
            http::uri::PathAndQuery::from_static("/agentd.test.Sleep/Sleep"),
            ProstCodec::<Dur, Dur>::default(),
        )
        .await?;
    Ok(std::time::Duration::try_from(answer.into_inner()).unwrap())
}
