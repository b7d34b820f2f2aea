//! The gRPC face of agentd: one tonic service per engine.
//!
//! Each handler reads the same way: name the resource the call is about
//! ([`rpc::Rpc`]), convert the request to domain types ([`convert`]), call
//! the engine (which validates against its limits), convert the answer
//! back, and answer through the `Rpc`, which records the status code on the
//! call's span. Domain errors become statuses through the single
//! `From<Error> for Status` in [`error`]. Nothing outside this module (and
//! the server's wiring) sees tonic or generated types.
//!
//! RPCs whose engine is not built yet answer `UNIMPLEMENTED` with a message
//! naming the engine (see [`not_built`]): a client can tell "not there yet"
//! from a failure, and never receives a fake success.

pub(crate) mod agents;
pub mod codec;
pub(crate) mod convert;
pub(crate) mod embedding;
pub(crate) mod error;
pub(crate) mod memory;
pub(crate) mod message_limit;
pub(crate) mod query;
pub(crate) mod rpc;

use std::pin::Pin;

use futures::Stream;
use tonic::server::NamedService;
use tonic::{Response, Status};

use crate::error::{Engine, Error};

/// The stream type of every server-streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The answer of an RPC of service `S` whose engine is not built yet:
/// `UNIMPLEMENTED`, naming the full method and the engine.
pub fn not_built<S: NamedService, T>(engine: Engine, method: &str) -> Result<Response<T>, Status> {
    Err(Error::not_implemented(engine, format!("{}/{method}", S::NAME)).into())
}
