//! Every metric agentd exports: its name (Prometheus conventions: the
//! `agentd_` prefix, `_total` on counters, base units in the name) and
//! help text. Call sites use these constants, so a name lives in one place.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Calls served, by method and final gRPC code (refusals by the guard
/// included).
pub const RPC_REQUESTS: &str = "agentd_rpc_requests_total";
/// Time from a call's arrival to its final status, by method.
pub const RPC_DURATION: &str = "agentd_rpc_duration_seconds";

/// Texts per forward pass, by model.
pub const EMBEDDING_BATCH_INPUTS: &str = "agentd_embedding_batch_inputs";
/// Time a request waited for its forward pass, by model.
pub const EMBEDDING_QUEUE: &str = "agentd_embedding_queue_seconds";
/// Time of one forward pass, by model.
pub const EMBEDDING_COMPUTE: &str = "agentd_embedding_compute_seconds";
/// Embedding cache lookups, by model and result (hit, miss).
pub const EMBEDDING_CACHE: &str = "agentd_embedding_cache_lookups_total";

/// Points in a collection's index, by collection and segment (graph:
/// in the HNSW/IVF/flat index; fresh: searched exactly until merged).
pub const MEMORY_POINTS: &str = "agentd_memory_points";
/// Estimated bytes of a collection's index in memory.
pub const MEMORY_INDEX_BYTES: &str = "agentd_memory_index_bytes";
/// How long a collection's graph has had changes its newest snapshot
/// lacks; 0 when the snapshot is current.
pub const MEMORY_SNAPSHOT_AGE: &str = "agentd_memory_snapshot_age_seconds";
/// Time of one vector search (queue and compute, cache hits included), by
/// collection.
pub const MEMORY_SEARCH: &str = "agentd_memory_search_seconds";

/// Queries now, by state (running, paused, awaiting_tools).
pub const QUERY_SESSIONS: &str = "agentd_query_sessions";
/// Queries started, cache hits included.
pub const QUERY_STARTED: &str = "agentd_query_started_total";
/// Model tokens, by model alias and kind (input, output).
pub const QUERY_TOKENS: &str = "agentd_query_tokens_total";
/// Time from a request to a model to its first token, by model alias.
pub const QUERY_FIRST_TOKEN: &str = "agentd_query_first_token_seconds";
/// Failed model requests, by model alias and whether they were retryable.
pub const QUERY_PROVIDER_ERRORS: &str = "agentd_query_provider_errors_total";
/// Result cache lookups, by cache (exact, semantic) and result (hit, miss).
pub const QUERY_CACHE: &str = "agentd_query_cache_lookups_total";

/// Agents now, by state.
pub const AGENTS: &str = "agentd_agents";
/// Tasks now, by state.
pub const TASKS: &str = "agentd_tasks";
/// Ready tasks waiting for an agent.
pub const TASK_QUEUE_DEPTH: &str = "agentd_task_queue_depth";
/// Time from a task's submission to its end.
pub const TASK_DURATION: &str = "agentd_task_duration_seconds";

/// Resident memory of the process (the name every Prometheus client
/// library uses).
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";

/// Registers the help text and unit of every metric.
pub fn describe() {
    describe_counter!(
        RPC_REQUESTS,
        "gRPC calls served, by method and final status code"
    );
    describe_histogram!(RPC_DURATION, Unit::Seconds, "gRPC call duration, by method");
    describe_histogram!(
        EMBEDDING_BATCH_INPUTS,
        Unit::Count,
        "texts per embedding forward pass"
    );
    describe_histogram!(
        EMBEDDING_QUEUE,
        Unit::Seconds,
        "time an embedding request waited for its forward pass"
    );
    describe_histogram!(
        EMBEDDING_COMPUTE,
        Unit::Seconds,
        "duration of one embedding forward pass"
    );
    describe_counter!(
        EMBEDDING_CACHE,
        "embedding cache lookups, by model and result"
    );
    describe_gauge!(
        MEMORY_POINTS,
        Unit::Count,
        "points in a collection's index, by segment"
    );
    describe_gauge!(
        MEMORY_INDEX_BYTES,
        Unit::Bytes,
        "estimated bytes of a collection's index in memory"
    );
    describe_gauge!(
        MEMORY_SNAPSHOT_AGE,
        Unit::Seconds,
        "how long a collection's graph has had changes its newest snapshot lacks"
    );
    describe_histogram!(
        MEMORY_SEARCH,
        Unit::Seconds,
        "vector search duration, by collection"
    );
    describe_gauge!(QUERY_SESSIONS, Unit::Count, "queries now, by state");
    describe_counter!(QUERY_STARTED, "queries started, cache hits included");
    describe_counter!(QUERY_TOKENS, "model tokens, by model alias and kind");
    describe_histogram!(
        QUERY_FIRST_TOKEN,
        Unit::Seconds,
        "time from a model request to its first token"
    );
    describe_counter!(
        QUERY_PROVIDER_ERRORS,
        "failed model requests, by model alias"
    );
    describe_counter!(
        QUERY_CACHE,
        "query result cache lookups, by cache and result"
    );
    describe_gauge!(AGENTS, Unit::Count, "agents now, by state");
    describe_gauge!(TASKS, Unit::Count, "tasks now, by state");
    describe_gauge!(
        TASK_QUEUE_DEPTH,
        Unit::Count,
        "ready tasks waiting for an agent"
    );
    describe_histogram!(
        TASK_DURATION,
        Unit::Seconds,
        "time from a task's submission to its end"
    );
    describe_gauge!(PROCESS_RSS, Unit::Bytes, "resident memory of the process");
}
