//! Tasks: submitted, queued by priority then arrival,
//! given a free agent (within its spec's concurrency limit), run as query
//! sessions on the agent's spec, retried when a failure may pass, and
//! cancelled on request.
//!
//! - [`submit`]: SubmitTask, GetTask, ListTasks, CancelTask, WatchTask.
//! - [`scheduler`]: the roster and the queue (derived from the store).
//! - [`graph`]: dependencies between tasks, and SubmitTaskGraph.
//! - [`runner`]: one attempt on an internal agent, as a query session.
//! - [`context`]: its prompt, made to fit the agent's context window.
//! - [`outcome`]: how an attempt ended (internal agents and workers alike),
//!   recorded, and retries.
//! - [`tools`]: worker tool calls leased as tasks; tool calls in the
//!   activity log.

pub(crate) mod context;
pub(crate) mod graph;
pub(crate) mod outcome;
pub(crate) mod runner;
pub(crate) mod scheduler;
pub(crate) mod submit;
pub(crate) mod tools;
