//! The query engine: starts queries, routes commands to them, answers
//! questions about them, and keeps finished ones (in memory for
//! `retention`, in the store for good).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use futures::Stream;

use super::cache::{AnswerCache, CachedAnswer};
use super::driver::Driver;
use super::events::{Event, EventKind, ModelSpan, QueryInfo};
use super::models::{ModelListing, ModelRegistry};
use super::semantic::{SemanticCache, SemanticKey};
use super::session::{Control, Query};
use super::settings::QueryConfig;
use super::tools::{ServerTools, ToolLocation, ToolOutcome, WorkerToolCall, WorkerTools};
use super::types::{
    CacheKind, CacheMode, ChatMessage, FinishReason, QueryState, Rule, StartQuery, SwitchReason,
    TokenUsage,
};
use super::validate::{
    StartContext, check_injected, check_model, check_reason, check_start, check_tool_result,
    parameters_or_none,
};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::page::{self, Page};
use crate::common::stats::hit_rate;
use crate::common::sync::lock;
use crate::embed::TextEmbedder;
use crate::error::{Error, Result};
use crate::store::{QueryStore, StoredQuery};

/// What the engine and every driver share.
#[derive(Debug)]
pub struct Shared {
    /// Aliases and their providers.
    pub registry: ModelRegistry,
    /// Settings.
    pub settings: QueryConfig,
    /// Rules applied to every query.
    pub rules: Vec<Rule>,
    /// The tools agentd runs itself.
    pub server_tools: ServerTools,
    /// Where calls of worker tools go (the Agent engine takes them).
    pub worker_tools: WorkerTools,
    store: Arc<dyn QueryStore>,
    cache: AnswerCache,
    semantic: SemanticCache,
    /// Running, paused and recently finished queries.
    live: Mutex<HashMap<String, Arc<Query>>>,
    /// Finished queries still in `live`, oldest first, with when they
    /// finished: dropped from memory after `retention`, or sooner beyond
    /// `retention_max_queries`.
    retired: Mutex<VecDeque<(std::time::Instant, String)>>,
    /// Running and paused queries.
    unfinished: AtomicUsize,
    /// Signalled when the last unfinished query has been persisted.
    all_finished: tokio::sync::Notify,
    /// Set when the server shuts down: no query starts any more.
    shutting_down: tokio::sync::watch::Sender<bool>,
    counts: Counts,
}

/// Counters behind [`QueryStats`].
#[derive(Debug, Default)]
struct Counts {
    started: AtomicU64,
    exact_hits: AtomicU64,
    exact_misses: AtomicU64,
    semantic_hits: AtomicU64,
    semantic_misses: AtomicU64,
}

/// The engine's counts since start-up.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueryStats {
    /// Generating now.
    pub running: u64,
    /// Paused now.
    pub paused: u64,
    /// Waiting for tool results now.
    pub awaiting_tools: u64,
    /// Started, cache hits included.
    pub started: u64,
    /// Exact-cache hits.
    pub exact_hits: u64,
    /// Exact-cache misses.
    pub exact_misses: u64,
    /// Semantic-cache hits.
    pub semantic_hits: u64,
    /// Semantic-cache misses.
    pub semantic_misses: u64,
}

impl QueryStats {
    /// Hits over lookups, both caches; 0 before any lookup.
    pub fn hit_rate(&self) -> f64 {
        hit_rate(
            self.exact_hits + self.semantic_hits,
            self.exact_misses + self.semantic_misses,
        )
    }
}

/// What a SwitchModel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// The alias the query ran on before.
    pub from_model: String,
    /// The last delta of that model.
    pub seq: u64,
}

/// A query as GetQuery shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryView {
    /// The summary.
    pub info: QueryInfo,
    /// The answer so far.
    pub text: String,
}

/// The query engine (cheap to clone).
#[derive(Debug, Clone)]
pub struct QueryEngine {
    shared: Arc<Shared>,
}

/// The reason recorded on queries the server's shutdown terminated.
pub const SHUTDOWN_REASON: &str = "shutdown";

/// Longest delta of a cached answer's replay, in bytes.
pub const REPLAY_CHUNK_BYTES: usize = 4096;

impl QueryEngine {
    /// An engine over `registry`, persisting finished queries to `store`;
    /// `embedder` (the Embedding engine) serves the semantic cache, and
    /// queries may call `server_tools`.
    pub fn new(
        settings: QueryConfig,
        registry: ModelRegistry,
        store: Arc<dyn QueryStore>,
        embedder: Option<Arc<dyn TextEmbedder>>,
        server_tools: ServerTools,
    ) -> Self {
        let rules = settings.rules();
        let cache = AnswerCache::new(settings.cache_bytes);
        let semantic = SemanticCache::new(embedder, settings.semantic_cache_entries);
        Self {
            shared: Arc::new(Shared {
                registry,
                settings,
                rules,
                server_tools,
                worker_tools: WorkerTools::default(),
                store,
                cache,
                semantic,
                live: Mutex::new(HashMap::new()),
                retired: Mutex::new(VecDeque::new()),
                unfinished: AtomicUsize::new(0),
                all_finished: tokio::sync::Notify::new(),
                shutting_down: tokio::sync::watch::channel(false).0,
                counts: Counts::default(),
            }),
        }
    }

    /// Ends every running and paused query (waiting in a model's queue
    /// included) as terminated with reason "shutdown", and waits at most
    /// `wait` until each is persisted as such. Starts are refused from now
    /// on. Called once the server's grace period is over.
    pub async fn shutdown(&self, wait: Duration) {
        let shared = &self.shared;
        shared.shutting_down.send_replace(true);
        let unfinished: Vec<Arc<Query>> = lock(&shared.live)
            .values()
            .filter(|q| !q.state().is_finished())
            .cloned()
            .collect();
        if unfinished.is_empty() {
            return;
        }
        tracing::info!(
            queries = unfinished.len(),
            "terminating unfinished queries for shutdown"
        );
        let deadline = tokio::time::Instant::now() + wait;
        let all_finished = shared.all_finished.notified();
        tokio::pin!(all_finished);
        all_finished.as_mut().enable();
        let terminations = unfinished.iter().map(|q| async move {
            // A query that ends meanwhile refuses the command: fine.
            let _ = q
                .command(|reply| Control::Terminate {
                    reason: SHUTDOWN_REASON.to_owned(),
                    reply,
                })
                .await;
        });
        let _ = tokio::time::timeout_at(deadline, futures::future::join_all(terminations)).await;
        if shared.unfinished.load(Ordering::SeqCst) > 0 {
            let _ = tokio::time::timeout_at(deadline, all_finished).await;
        }
        let left = shared.unfinished.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(queries = left, "queries not persisted before shutdown");
        }
    }

    /// The aliases, with availability.
    pub fn models(&self) -> Vec<ModelListing> {
        self.shared.registry.list()
    }

    /// Counts since start-up.
    pub fn stats(&self) -> QueryStats {
        let shared = &self.shared;
        let (mut running, mut paused, mut awaiting_tools) = (0, 0, 0);
        for query in lock(&shared.live).values() {
            match query.state() {
                QueryState::Running => running += 1,
                QueryState::Paused => paused += 1,
                QueryState::AwaitingTools => awaiting_tools += 1,
                _ => {}
            }
        }
        let c = &shared.counts;
        QueryStats {
            running,
            paused,
            awaiting_tools,
            started: c.started.load(Ordering::Relaxed),
            exact_hits: c.exact_hits.load(Ordering::Relaxed),
            exact_misses: c.exact_misses.load(Ordering::Relaxed),
            semantic_hits: c.semantic_hits.load(Ordering::Relaxed),
            semantic_misses: c.semantic_misses.load(Ordering::Relaxed),
        }
    }

    /// Starts a query: replays a cached answer, or spawns its driver.
    pub async fn start(&self, mut start: StartQuery) -> Result<Arc<Query>> {
        let shared = &self.shared;
        check_start(
            &start,
            StartContext {
                registry: &shared.registry,
                settings: &shared.settings,
                semantic_unavailable: shared.semantic.unavailable_reason(),
                server_tools: &shared.server_tools,
                worker_tools: shared.worker_tools.available(),
            },
        )?;
        // Built-in tools are described by agentd; a tool without a schema
        // takes no arguments.
        for tool in &mut start.tools {
            match shared.server_tools.describe(&tool.name) {
                Some(builtin) if tool.location == ToolLocation::Server => {
                    tool.description = builtin.description;
                    tool.parameters = builtin.parameters;
                }
                _ => tool.parameters = parameters_or_none(&tool.parameters),
            }
        }
        let counts = &shared.counts;
        counts.started.fetch_add(1, Ordering::Relaxed);
        let reading = !start.cache.refresh;
        if start.cache.mode != CacheMode::Off && reading {
            if let Some(answer) = shared.cache.get(&AnswerCache::key(&start)) {
                counts.exact_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(self.replay(start, &answer, CacheKind::Exact, 1.0));
            }
            counts.exact_misses.fetch_add(1, Ordering::Relaxed);
        }
        let mut semantic_key = None;
        // A similar prompt is no answer to a conversation with tools: only
        // the exact cache (the whole history and the tools) may serve it.
        if start.cache.mode == CacheMode::Semantic && !start.needs_tools() {
            // A prompt that cannot be embedded just goes uncached.
            match shared.semantic.key(&start).await {
                Ok(key) => semantic_key = key,
                Err(e) => tracing::warn!(error = %e, "semantic cache: cannot embed the prompt"),
            }
            if let Some(key) = &semantic_key
                && reading
            {
                let threshold = start.cache.similarity_threshold;
                if let Some((answer, similarity)) = shared.semantic.lookup(key, threshold) {
                    counts.semantic_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(self.replay(start, &answer, CacheKind::Semantic, similarity));
                }
                counts.semantic_misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        if *shared.shutting_down.borrow() {
            return Err(Error::NotReady("the server is shutting down".into()));
        }
        let reserved = shared.unfinished.fetch_add(1, Ordering::SeqCst);
        if reserved >= shared.settings.max_live_queries {
            shared.unfinished.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded(format!(
                "{reserved} queries are running or paused, the configured max_live_queries"
            )));
        }
        // A model with a bounded queue (the local one) takes the query's
        // place now: a full queue refuses the query here, not later.
        let admission = match shared.registry.get(&start.model)?.provider.admit() {
            Ok(admission) => admission,
            Err(e) => {
                shared.unfinished.fetch_sub(1, Ordering::SeqCst);
                return Err(Error::Overloaded(e.message));
            }
        };
        let (query, control) = Query::new(new_info(&start, QueryState::Running));
        let model = start.model.clone();
        query.push(EventKind::Started { model }, |_| {});
        lock(&shared.live).insert(query.id(), query.clone());
        let admitted = (start.model.clone(), admission);
        let driver = Driver::new(
            query.clone(),
            shared.clone(),
            control,
            start,
            semantic_key,
            admitted,
        );
        // The query outlives the call that started it, but in traces it
        // belongs to it: the driver's spans are the call's children.
        let span = tracing::info_span!("query", id = %query.id());
        tokio::spawn(driver.run().instrument(span));
        Ok(query)
    }

    /// A query answered from a cache: the whole log at once.
    fn replay(
        &self,
        start: StartQuery,
        answer: &CachedAnswer,
        kind: CacheKind,
        similarity: f32,
    ) -> Arc<Query> {
        let (query, _control) = Query::new(new_info(&start, QueryState::Running));
        let model = start.model.clone();
        query.push(
            EventKind::Started {
                model: model.clone(),
            },
            |_| {},
        );
        query.push(
            EventKind::CacheHit {
                kind,
                similarity,
                source_query_id: answer.source_query_id.clone(),
            },
            |_| {},
        );
        for (i, text) in answer.deltas.iter().enumerate() {
            let kind = EventKind::Delta {
                seq: i as u64 + 1,
                text: text.clone(),
                model: model.clone(),
                cached: true,
            };
            query.push(kind, |_| {});
        }
        let text = answer.deltas.concat();
        let finish_reason = answer.finish_reason;
        query.push(
            EventKind::Completed {
                finish_reason,
                text,
                usage: TokenUsage::default(),
                cost_usd: 0.0,
            },
            |r| {
                r.info.state = QueryState::Completed;
                r.info.finish_reason = Some(finish_reason);
                r.info.finished_at_ms = Some(now_ms());
            },
        );
        lock(&self.shared.live).insert(query.id(), query.clone());
        let shared = self.shared.clone();
        let replayed = query.clone();
        tokio::spawn(async move { shared.keep_finished(&replayed).await });
        query
    }

    /// The query `id`, live or from the store.
    pub async fn find(&self, id: &str) -> Result<Arc<Query>> {
        if id.is_empty() {
            return Err(Error::invalid("query_id", "must not be empty"));
        }
        if let Some(q) = lock(&self.shared.live).get(id) {
            return Ok(q.clone());
        }
        let key = id.to_owned();
        let stored = with_store(&self.shared.store, move |s| s.get_query(&key)).await?;
        let not_found = || Error::NotFound {
            kind: "query",
            name: id.to_owned(),
        };
        let stored = stored.ok_or_else(not_found)?;
        let info: QueryInfo = serde_json::from_str(&stored.info)
            .map_err(|e| Error::Internal(format!("stored query {id} is unreadable: {e}")))?;
        let events: Vec<Event> = serde_json::from_str(&stored.events)
            .map_err(|e| Error::Internal(format!("stored query {id} is unreadable: {e}")))?;
        Ok(Query::restored(info, events))
    }

    /// Pauses; answers the last seq.
    pub async fn pause(&self, id: &str) -> Result<u64> {
        self.find(id).await?.command(Control::Pause).await
    }

    /// Resumes, optionally on `model`; answers the model.
    pub async fn resume(&self, id: &str, model: Option<String>) -> Result<String> {
        let query = self.find(id).await?;
        query
            .command(|reply| Control::Resume { model, reply })
            .await
    }

    /// Switches model (field `model`).
    pub async fn switch_model(&self, id: &str, model: String) -> Result<Switched> {
        check_model("model", &model)?;
        let query = self.find(id).await?;
        query
            .command(|reply| Control::SwitchModel { model, reply })
            .await
    }

    /// Adds a message (field `message`) and continues; answers the seq
    /// before it.
    pub async fn inject(&self, id: &str, message: ChatMessage) -> Result<u64> {
        check_injected(&message)?;
        let query = self.find(id).await?;
        query
            .command(|reply| Control::Inject { message, reply })
            .await
    }

    /// The tools agentd runs itself.
    pub fn server_tools(&self) -> &ServerTools {
        &self.shared.server_tools
    }

    /// The context window of model `alias`, in tokens (None: no such
    /// alias, or its configuration does not say).
    pub fn context_window(&self, alias: &str) -> Option<u32> {
        self.shared
            .registry
            .get(alias)
            .ok()
            .map(|entry| entry.spec.context_window)
            .filter(|&w| w > 0)
    }

    /// Whether `alias` names a model that can call tools (None: no such
    /// alias).
    pub fn supports_tools(&self, alias: &str) -> Option<bool> {
        self.shared
            .registry
            .get(alias)
            .ok()
            .map(|entry| entry.spec.supports_tools())
    }

    /// Calls of worker tools go from now on to the receiver returned (the
    /// Agent engine's, which leases them to workers); before, a Start
    /// offering a worker tool is refused. None when taken already.
    pub fn take_worker_tool_calls(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<WorkerToolCall>> {
        self.shared.worker_tools.take()
    }

    /// Gives the result of client tool call `call_id` (fields `call_id`,
    /// `result` / `error`); answers the calls of its turn still waiting.
    pub async fn submit_tool_result(
        &self,
        id: &str,
        call_id: String,
        outcome: ToolOutcome,
    ) -> Result<u32> {
        check_tool_result(&call_id, &outcome)?;
        let query = self.find(id).await?;
        query
            .command(|reply| Control::ToolResult {
                call_id,
                outcome,
                reply,
            })
            .await
    }

    /// Ends the query (field `reason`); answers the last seq.
    pub async fn terminate(&self, id: &str, reason: String) -> Result<u64> {
        check_reason("reason", &reason)?;
        let query = self.find(id).await?;
        query
            .command(|reply| Control::Terminate { reason, reply })
            .await
    }

    /// The summary and the answer so far.
    pub async fn get(&self, id: &str) -> Result<QueryView> {
        let (info, text) = self.find(id).await?.info_and_text();
        Ok(QueryView { info, text })
    }

    /// The log of `id` from delta `from_seq` on, then live until the end.
    pub async fn attach(
        &self,
        id: &str,
        from_seq: u64,
    ) -> Result<impl Stream<Item = Event> + Send + 'static> {
        let query = self.find(id).await?;
        let position = query.position_of_seq(from_seq)?;
        Ok(query.follow(position))
    }

    /// Query `id`'s events but its deltas, from the first, as they come:
    /// what a follower that needs only the turns' outcomes reads (an
    /// agent's task: tool calls, results, the end), without a copy of
    /// every delta.
    pub async fn attach_outline(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = Event> + Send + 'static> {
        let query = self.find(id).await?;
        Ok(query.follow_outline())
    }

    /// Queries newest first, optionally in one state; `page_token` is the
    /// previous page's `next_page_token`.
    pub async fn list(
        &self,
        state: Option<QueryState>,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<QueryInfo>> {
        let limit = page::page_size(page_size);
        let cursor = parse_token(page_token)?;
        let before = |info: &QueryInfo| match &cursor {
            None => true,
            Some((t, id)) => (info.created_at_ms, info.id.as_str()) < (*t, id.as_str()),
        };
        let mut rows: Vec<QueryInfo> = lock(&self.shared.live)
            .values()
            .map(|q| q.info())
            .filter(|i| state.is_none_or(|s| i.state == s) && before(i))
            .collect();
        let stored = with_store(&self.shared.store, move |s| {
            let cursor = cursor.as_ref().map(|(t, id)| (*t, id.as_str()));
            // One more than asked tells whether a next page exists.
            s.list_queries(state.map(QueryState::as_str), cursor, limit + 1)
        })
        .await?;
        for s in stored {
            if rows.iter().any(|i| i.id == s.id) {
                continue;
            }
            let info: QueryInfo = serde_json::from_str(&s.info).map_err(|e| {
                Error::Internal(format!("stored query {} is unreadable: {e}", s.id))
            })?;
            rows.push(info);
        }
        rows.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        rows.truncate(limit + 1);
        Ok(Page::from_rows(rows, limit, |i| {
            format!("{}.{}", i.created_at_ms, i.id)
        }))
    }
}

impl Shared {
    /// Caches the complete answer of `query` to `start`. Called before the
    /// Completed event is recorded, so a client that saw it and asks again
    /// gets the cached answer.
    pub fn cache_answer(
        &self,
        query: &Query,
        start: &StartQuery,
        finish_reason: FinishReason,
        semantic_key: Option<SemanticKey>,
    ) {
        if start.cache.mode == CacheMode::Off {
            return;
        }
        // Replayed in chunks of up to REPLAY_CHUNK_BYTES: the same text in
        // far fewer messages than the model's token-sized deltas.
        let deltas = query.with_events(|events| {
            let mut deltas: Vec<String> = Vec::new();
            for event in events {
                if let EventKind::Delta { text, .. } = &event.kind {
                    match deltas.last_mut() {
                        Some(last) if last.len() + text.len() <= REPLAY_CHUNK_BYTES => {
                            last.push_str(text);
                        }
                        _ => deltas.push(text.clone()),
                    }
                }
            }
            deltas
        });
        let answer = Arc::new(CachedAnswer {
            source_query_id: query.id(),
            deltas,
            finish_reason,
        });
        self.cache.insert(AnswerCache::key(start), answer.clone());
        if let Some(key) = semantic_key {
            self.semantic.insert(key, answer);
        }
    }

    /// Called by a driver when its query has ended: persists it, counts it
    /// as finished, and retires it from memory.
    pub async fn finished(&self, query: &Arc<Query>) {
        self.persist(query).await;
        if self.unfinished.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.all_finished.notify_waiters();
        }
        self.retire(query);
    }

    /// Persists a finished query and retires it from memory.
    async fn keep_finished(&self, query: &Arc<Query>) {
        self.persist(query).await;
        self.retire(query);
    }

    /// Keeps a finished query in memory for `retention`, and at most
    /// `retention_max_queries` of them: whichever limit comes first drops
    /// the oldest (readers then get them from the store), so memory stays
    /// bounded however fast queries finish.
    fn retire(&self, query: &Arc<Query>) {
        let now = std::time::Instant::now();
        let (retention, max) = (self.settings.retention, self.settings.retention_max_queries);
        let expired = {
            let mut retired = lock(&self.retired);
            retired.push_back((now, query.id()));
            evict(&mut retired, now, retention, max)
        };
        if !expired.is_empty() {
            let mut live = lock(&self.live);
            for id in expired {
                live.remove(&id);
            }
        }
    }

    /// Writes a finished query with its whole log to the store.
    async fn persist(&self, query: &Arc<Query>) {
        let info = query.info();
        let stored = StoredQuery {
            id: info.id.clone(),
            created_at: info.created_at_ms,
            state: info.state.as_str().to_owned(),
            info: serde_json::to_string(&info).unwrap_or_default(),
            events: query.with_events(serde_json::to_string).unwrap_or_default(),
        };
        if let Err(e) = with_store(&self.store, move |s| s.save_query(&stored)).await {
            tracing::error!(query = %info.id, error = %e, "cannot persist a finished query");
        }
    }
}

/// Takes from the front of `retired` (oldest first) the ids finished more
/// than `retention` before `now`, and beyond that as many as keep at most
/// `max`.
fn evict(
    retired: &mut VecDeque<(std::time::Instant, String)>,
    now: std::time::Instant,
    retention: Duration,
    max: usize,
) -> Vec<String> {
    let mut expired = Vec::new();
    while let Some((at, _)) = retired.front() {
        if retired.len() <= max && now.duration_since(*at) < retention {
            break;
        }
        expired.extend(retired.pop_front().map(|(_, id)| id));
    }
    expired
}

/// The record of a query being started.
fn new_info(start: &StartQuery, state: QueryState) -> QueryInfo {
    let now = now_ms();
    QueryInfo {
        id: start
            .id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string()),
        state,
        model: start.model.clone(),
        model_history: vec![ModelSpan {
            model: start.model.clone(),
            from_seq: 1,
            to_seq: 0,
            reason: SwitchReason::Requested,
            started_at_ms: now,
        }],
        usage: TokenUsage::default(),
        cost_usd: 0.0,
        delta_count: 0,
        finish_reason: None,
        error: None,
        created_at_ms: now,
        first_token_at_ms: None,
        finished_at_ms: None,
        labels: start.labels.clone(),
        turns: 0,
        tool_calls: Vec::new(),
    }
}

/// The cursor of a ListQueries page token: `"<created_at_ms>.<id>"` of the
/// previous page's last query.
fn parse_token(token: &str) -> Result<Option<(i64, String)>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::invalid(
            "page_token",
            "is not a next_page_token this server returned",
        )
    };
    let cursor = page::decode_token(token).ok_or_else(bad)?;
    let (time, id) = cursor.split_once('.').ok_or_else(bad)?;
    let time = time.parse().map_err(|_| bad())?;
    Ok(Some((time, id.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_queries_leave_memory_by_age_or_count() {
        let start = std::time::Instant::now();
        let mut retired: VecDeque<_> = (0..5)
            .map(|i| (start + Duration::from_secs(i), format!("q{i}")))
            .collect();
        let hour = Duration::from_secs(3600);
        // Over the count: the oldest go first.
        assert_eq!(evict(&mut retired, start, hour, 3), ["q0", "q1"]);
        // Over the age: q2 finished at +2 s, 10 s ago from +12 s.
        let later = start + Duration::from_secs(12);
        assert_eq!(
            evict(&mut retired, later, Duration::from_secs(9), 10),
            ["q2", "q3"]
        );
        assert_eq!(retired.len(), 1);
        assert!(evict(&mut retired, later, hour, 10).is_empty());
    }
}
