//! Tool calling inside a query: the model calls tools, their results come
//! back, and the next model turn starts with the whole history.
//!
//! A tool call is an event of the query's log, like a delta: recorded
//! once, when the model's turn ends, and never run twice. Its result is
//! another event. Both survive pause, model switch, fallback and restart,
//! and Attach replays them. The driver (`super::driver`) runs the loop;
//! this module holds what it needs:
//!
//! - [`types`]: tools, calls, results.
//! - [`schema`]: argument schemas checked at Start and against every call.
//! - [`offered`]: the tools of one query: descriptions, locations,
//!   timeouts, the check of each call.
//! - [`builtin`]: the tools agentd runs itself (the `ServerTool` trait; the
//!   tools are `crate::tools`).
//! - [`turn`]: the calls of one model turn, until each has its result.
//! - [`worker`]: the way out for calls that external workers run.

pub(crate) mod builtin;
pub(crate) mod offered;
pub(crate) mod schema;
pub(crate) mod turn;
pub(crate) mod types;
pub(crate) mod worker;

pub use builtin::{ServerTool, ServerTools, schema_of};
pub(crate) use offered::OfferedTools;
pub(crate) use turn::ToolTurn;
pub use types::{
    ToolCall, ToolCallRecord, ToolChoice, ToolDescription, ToolLocation, ToolOutcome, ToolSpec,
};
pub use worker::{WorkerToolCall, WorkerTools};
