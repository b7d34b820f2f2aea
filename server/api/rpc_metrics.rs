//! Per-method call metrics (`agentd_rpc_requests_total`,
//! `agentd_rpc_duration_seconds`) with their handles kept: looking a
//! labelled metric up in the recorder on every call (building its key,
//! hashing it) costs more than recording, so each (method, code) series is
//! looked up once, when first used, and kept for the life of the process.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use tonic::Code;

use super::access;
use crate::metrics::catalog;

/// gRPC defines codes 0 to 16.
const CODES: usize = 17;

#[derive(Default)]
struct MethodMetrics {
    duration: OnceLock<Histogram>,
    requests: [OnceLock<Counter>; CODES],
}

fn by_method() -> &'static HashMap<&'static str, MethodMetrics> {
    static MAP: OnceLock<HashMap<&'static str, MethodMetrics>> = OnceLock::new();
    MAP.get_or_init(|| {
        access::paths()
            .chain(["unknown"])
            .map(|path| (path, MethodMetrics::default()))
            .collect()
    })
}

/// Records one call of `method` (a path from [`access::Rule::path`]).
pub fn record(method: &'static str, code: Code, elapsed: Duration, code_name: &'static str) {
    let Some(m) = by_method().get(method) else {
        return;
    };
    m.duration
        .get_or_init(|| metrics::histogram!(catalog::RPC_DURATION, "method" => method))
        .record(elapsed.as_secs_f64());
    let index = (code as usize).min(CODES - 1);
    m.requests[index]
        .get_or_init(
            || metrics::counter!(catalog::RPC_REQUESTS, "method" => method, "code" => code_name),
        )
        .increment(1);
}
