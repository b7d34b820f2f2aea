//! The gRPC face of agentd: one tonic service per engine.
//!
//! Each handler reads the same way: validate the request, convert it from
//! protobuf to domain types, call the engine, convert the answer back. Domain
//! errors become statuses through the single `From<Error> for Status` in
//! [`error`]. Nothing outside this module sees tonic or generated types.
//!
//! RPCs whose engine is not built yet answer `UNIMPLEMENTED` with a message
//! naming the engine (see [`not_built`]): a client can tell "not there yet"
//! from a failure, and never receives a fake success.

pub mod agents;
pub mod convert;
pub mod embedding;
pub mod error;
pub mod memory;
pub mod message_limit;
pub mod query;
pub mod query_convert;

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
