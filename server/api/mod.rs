//! The gRPC face of agentd: one tonic service per engine.
//!
//! Every call first passes the [`guard`]: its span, its API key and scope
//! ([`access`] classifies every method), its limits, its audit line.
//! Each handler then reads the same way: name the resource the call is about
//! ([`rpc::Rpc`]), convert the request to domain types ([`convert`]), call
//! the engine (which validates against its limits), convert the answer
//! back, and answer through the `Rpc`, which records the status code on the
//! call's span. Domain errors become statuses through the single
//! `From<Error> for Status` in [`error`]. Nothing outside this module (and
//! the server's wiring) sees tonic or generated types.

pub(crate) mod access;
pub(crate) mod agents;
pub mod codec;
pub(crate) mod convert;
pub(crate) mod embedding;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod memory;
pub(crate) mod message_limit;
pub(crate) mod query;
pub(crate) mod rpc;
pub(crate) mod rpc_metrics;

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

/// The stream type of every server-streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
