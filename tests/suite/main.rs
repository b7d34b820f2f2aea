//! agentd's Rust test suite, in one binary: each module is one area, tested
//! through the public gRPC API against a real server on `127.0.0.1:0` (see
//! [`common`]), plus the native engines held against reference outputs.
//!
//! One binary rather than one per file: the tests share their helpers and
//! the heavy dependencies (FAISS, candle, tonic) are linked once, which
//! roughly halves the suite's build time on a 2-core machine.

mod agents;
mod agents_crash;
mod agents_graphs;
mod agents_swarms;
mod agents_tasks;
mod agents_tools;
mod agents_workers;
mod common;
mod embedding;
mod health;
mod layering;
mod limits;
mod malformed;
mod memory_collections;
mod memory_crash;
mod memory_fresh;
mod memory_indexes;
mod memory_kv;
mod memory_points;
mod memory_search;
mod metrics;
mod native_deps;
mod query_local;
mod query_sessions;
mod query_tools;
mod reflection;
mod reliability;
mod response_fields;
mod response_fields_agents;
mod rpc_logs;
mod security;
mod shutdown;
mod traces;
