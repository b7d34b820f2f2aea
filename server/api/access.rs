//! What each RPC of the contract needs: the scope of key, whether it is a
//! stream (streams count against a key's `max_streams`), and whether a key
//! limited to some namespaces may call it.
//!
//! One row per method, so a new RPC cannot be served unclassified: the
//! unit test below walks every method of every served .proto file and
//! fails on one missing here (or classified with the wrong streaming).
//! A path not in the table (a service an embedding application added)
//! needs `admin`.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::security::Scope;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, without a key: health checks (load balancers hold no key).
    Nobody,
    /// A key of at least this scope.
    Key(Scope),
}

/// What a key limited to some namespaces may do with a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// It names one namespace or collection, which its handler checks
    /// against the key (listings show only what the key may touch).
    Checked,
    /// It touches no namespace (embeddings, model lists, reflection).
    Untouched,
    /// It can reach namespaces the call does not name (a query's tools, an
    /// agent's memory, engine-wide stats): refused to limited keys.
    Refused,
}

/// How one method is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The method's path, or "unknown" for a path not in the contract (so
    /// that metrics labelled with it cannot grow without bound).
    pub path: &'static str,
    /// The key it needs.
    pub need: Need,
    /// Whether it streams (either way).
    pub streaming: bool,
    /// What a namespace-limited key may do with it.
    pub names: Names,
}

use Names::{Checked, Refused, Untouched};
use Scope::{Admin, Read, Write};

const UNARY: bool = false;
const STREAM: bool = true;

/// Every method served, by its path.
const RULES: &[(&str, Scope, bool, Names)] = &[
    // Memory: each call names its namespace or collection.
    ("/agentd.v1.MemoryService/Put", Write, UNARY, Checked),
    ("/agentd.v1.MemoryService/Get", Read, UNARY, Checked),
    ("/agentd.v1.MemoryService/Delete", Write, UNARY, Checked),
    ("/agentd.v1.MemoryService/List", Read, UNARY, Checked),
    (
        "/agentd.v1.MemoryService/CreateCollection",
        Admin,
        UNARY,
        Checked,
    ),
    (
        "/agentd.v1.MemoryService/GetCollection",
        Read,
        UNARY,
        Checked,
    ),
    (
        "/agentd.v1.MemoryService/ListCollections",
        Read,
        UNARY,
        Checked,
    ),
    (
        "/agentd.v1.MemoryService/DeleteCollection",
        Admin,
        UNARY,
        Checked,
    ),
    (
        "/agentd.v1.MemoryService/CollectionStats",
        Admin,
        UNARY,
        Checked,
    ),
    ("/agentd.v1.MemoryService/Upsert", Write, UNARY, Checked),
    (
        "/agentd.v1.MemoryService/UpsertStream",
        Write,
        STREAM,
        Checked,
    ),
    ("/agentd.v1.MemoryService/GetPoints", Read, UNARY, Checked),
    (
        "/agentd.v1.MemoryService/DeletePoints",
        Write,
        UNARY,
        Checked,
    ),
    ("/agentd.v1.MemoryService/Count", Read, UNARY, Checked),
    ("/agentd.v1.MemoryService/Search", Read, UNARY, Checked),
    ("/agentd.v1.MemoryService/SearchBatch", Read, UNARY, Checked),
    // Embedding: computes, stores nothing.
    ("/agentd.v1.EmbeddingService/Embed", Read, UNARY, Untouched),
    (
        "/agentd.v1.EmbeddingService/EmbedStream",
        Read,
        STREAM,
        Untouched,
    ),
    (
        "/agentd.v1.EmbeddingService/Tokenize",
        Read,
        UNARY,
        Untouched,
    ),
    (
        "/agentd.v1.EmbeddingService/ListModels",
        Read,
        UNARY,
        Untouched,
    ),
    (
        "/agentd.v1.EmbeddingService/GetModel",
        Read,
        UNARY,
        Untouched,
    ),
    // Queries: a session's tools search and write any namespace.
    (
        "/agentd.v1.QueryControlService/Session",
        Write,
        STREAM,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/Attach",
        Read,
        STREAM,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/Pause",
        Write,
        UNARY,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/Resume",
        Write,
        UNARY,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/SwitchModel",
        Write,
        UNARY,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/Terminate",
        Write,
        UNARY,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/SubmitToolResult",
        Write,
        UNARY,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/GetQuery",
        Read,
        UNARY,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/ListQueries",
        Read,
        UNARY,
        Refused,
    ),
    (
        "/agentd.v1.QueryControlService/ListQueryModels",
        Read,
        UNARY,
        Untouched,
    ),
    (
        "/agentd.v1.QueryControlService/GetQueryStats",
        Admin,
        UNARY,
        Refused,
    ),
    // Agents: an agent's memory is a collection its spec names.
    (
        "/agentd.v1.AgentService/RegisterSpec",
        Admin,
        UNARY,
        Refused,
    ),
    ("/agentd.v1.AgentService/GetSpec", Read, UNARY, Refused),
    ("/agentd.v1.AgentService/ListSpecs", Read, UNARY, Refused),
    ("/agentd.v1.AgentService/DeleteSpec", Admin, UNARY, Refused),
    ("/agentd.v1.AgentService/Spawn", Write, UNARY, Refused),
    ("/agentd.v1.AgentService/SpawnBatch", Write, UNARY, Refused),
    ("/agentd.v1.AgentService/GetAgent", Read, UNARY, Refused),
    ("/agentd.v1.AgentService/ListAgents", Read, UNARY, Refused),
    ("/agentd.v1.AgentService/StopAgent", Write, UNARY, Refused),
    ("/agentd.v1.AgentService/CreateSwarm", Write, UNARY, Refused),
    ("/agentd.v1.AgentService/GetSwarm", Read, UNARY, Refused),
    ("/agentd.v1.AgentService/ListSwarms", Read, UNARY, Refused),
    (
        "/agentd.v1.AgentService/DissolveSwarm",
        Write,
        UNARY,
        Refused,
    ),
    ("/agentd.v1.AgentService/SubmitTask", Write, UNARY, Refused),
    (
        "/agentd.v1.AgentService/SubmitTaskGraph",
        Write,
        UNARY,
        Refused,
    ),
    ("/agentd.v1.AgentService/GetTask", Read, UNARY, Refused),
    ("/agentd.v1.AgentService/ListTasks", Read, UNARY, Refused),
    ("/agentd.v1.AgentService/CancelTask", Write, UNARY, Refused),
    ("/agentd.v1.AgentService/WatchTask", Read, STREAM, Refused),
    ("/agentd.v1.AgentService/Work", Write, STREAM, Refused),
    ("/agentd.v1.AgentService/WatchEvents", Read, STREAM, Refused),
    ("/agentd.v1.AgentService/ListEvents", Read, UNARY, Refused),
    (
        "/agentd.v1.AgentService/GetAgentStats",
        Admin,
        UNARY,
        Refused,
    ),
    // Reflection: the contract itself, public knowledge to any key.
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Read,
        STREAM,
        Untouched,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Read,
        STREAM,
        Untouched,
    ),
];

/// Health checks: open to all, so load balancers need no key.
const PUBLIC: &[(&str, bool)] = &[
    ("/grpc.health.v1.Health/Check", UNARY),
    ("/grpc.health.v1.Health/Watch", STREAM),
];

/// Every rule by path, built once.
fn rules() -> &'static HashMap<&'static str, Rule> {
    static RULE_MAP: OnceLock<HashMap<&'static str, Rule>> = OnceLock::new();
    RULE_MAP.get_or_init(|| {
        let public = PUBLIC.iter().map(|(path, streaming)| Rule {
            path,
            need: Need::Nobody,
            streaming: *streaming,
            names: Untouched,
        });
        let keyed = RULES.iter().map(|(path, scope, streaming, names)| Rule {
            path,
            need: Need::Key(*scope),
            streaming: *streaming,
            names: *names,
        });
        public.chain(keyed).map(|rule| (rule.path, rule)).collect()
    })
}

/// How the method at `path` is guarded.
pub fn rule(path: &str) -> Rule {
    rules().get(path).copied().unwrap_or(Rule {
        // Unknown to the contract: an added service, or a typo that gets
        // UNIMPLEMENTED, but only once the caller proved it is an admin.
        path: "unknown",
        need: Need::Key(Admin),
        streaming: true,
        names: Refused,
    })
}

/// Every path of the contract (and health's), for per-method metrics.
pub fn paths() -> impl Iterator<Item = &'static str> {
    rules().keys().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of every service in `set`, as (path, streams).
    fn methods(set: &[u8]) -> Vec<(String, bool)> {
        let set = prost_types::FileDescriptorSet::decode(set).unwrap();
        let mut out = Vec::new();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    out.push((
                        format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                        method.client_streaming() || method.server_streaming(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn every_method_served_is_classified_with_its_streaming() {
        let mut served = methods(crate::pb::FILE_DESCRIPTOR_SET);
        served.extend(methods(tonic_health::pb::FILE_DESCRIPTOR_SET));
        served.extend(methods(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET));
        served.extend(methods(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET));
        assert!(served.len() > 50, "{served:?}");
        for (path, streams) in &served {
            let known =
                RULES.iter().any(|(p, ..)| p == path) || PUBLIC.iter().any(|(p, _)| p == path);
            assert!(known, "{path} is not classified in api/access.rs");
            assert_eq!(rule(path).streaming, *streams, "{path}");
        }
        // And nothing classified that is not served (a renamed method).
        for (path, ..) in RULES {
            assert!(
                served.iter().any(|(p, _)| p == path),
                "{path} is not served"
            );
        }
    }

    #[test]
    fn health_is_public_and_unknown_paths_need_admin() {
        assert_eq!(rule("/grpc.health.v1.Health/Check").need, Need::Nobody);
        assert_eq!(rule("/x.Y/Z").need, Need::Key(Admin));
        assert_eq!(rule("/x.Y/Z").path, "unknown");
        assert_eq!(
            rule("/agentd.v1.MemoryService/Search").path,
            "/agentd.v1.MemoryService/Search"
        );
        assert_eq!(
            rule("/agentd.v1.MemoryService/Search").need,
            Need::Key(Read)
        );
    }
}
