//! `agentd.v1.QueryControlService`: convert, call the query engine,
//! convert back (conversions in [`super::convert::query`]).
//!
//! A Session stream is two halves: a task reads the client's commands and
//! hands them to the engine (a refused command becomes a
//! `command_rejected` event in the log, so the client sees it in order),
//! and the response is the query's log followed from its start. The query
//! belongs to the engine, not to the stream: when the client goes away the
//! query runs on (Attach finds it) unless `terminate_on_disconnect` was set.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::ResponseStream;
use super::convert::query::{SessionStart, event, info, state_filter, tool_outcome};
use super::rpc::Rpc;
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::pb::v1::query_control_service_server::QueryControlService;
use crate::pb::v1::session_request::Command;
use crate::query::{ChatMessage, EventKind, Query, QueryEngine, QueryError};
use crate::security::Caller;

/// How long a Session stream stays open after its final event for the
/// client to half-close its side.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The QueryControlService handlers.
#[derive(Debug, Clone)]
pub struct QueryApi {
    engine: QueryEngine,
}

impl QueryApi {
    /// Serves `engine`.
    pub fn new(engine: QueryEngine) -> Self {
        Self { engine }
    }
}

/// Applies one command of a Session stream to query `id`. Field paths
/// name the command (`terminate.reason`), as the stream's messages do.
async fn apply(engine: &QueryEngine, id: &str, command: Option<Command>) -> Result<(), Error> {
    match command {
        None => Err(Error::invalid("command", "must be set")),
        Some(Command::Start(_)) => Err(Error::WrongState(format!(
            "this stream already started query {id}; open another stream for another query"
        ))),
        Some(Command::Pause(pb::PauseCommand {})) => engine.pause(id).await.map(drop),
        Some(Command::Resume(pb::ResumeCommand { model })) => {
            let model = (!model.is_empty()).then_some(model);
            engine.resume(id, model).await.map(drop)
        }
        Some(Command::SwitchModel(pb::SwitchModelCommand { model })) => engine
            .switch_model(id, model)
            .await
            .map(drop)
            .map_err(|e| e.within("switch_model")),
        Some(Command::Inject(pb::InjectCommand { message })) => {
            let inject = async {
                let message = ChatMessage::try_from(message.unwrap_or_default())
                    .map_err(|e| e.within("message"))?;
                engine.inject(id, message).await.map(drop)
            };
            inject.await.map_err(|e| e.within("inject"))
        }
        Some(Command::Terminate(pb::TerminateCommand { reason })) => engine
            .terminate(id, reason)
            .await
            .map(drop)
            .map_err(|e| e.within("terminate")),
        Some(Command::ToolResult(pb::ToolResultCommand { call_id, outcome })) => {
            let submit = async {
                let outcome = tool_result_outcome(outcome)?;
                engine
                    .submit_tool_result(id, call_id, outcome)
                    .await
                    .map(drop)
            };
            submit.await.map_err(|e| e.within("tool_result"))
        }
    }
}

/// The outcome oneof of a ToolResultCommand.
fn tool_result_outcome(
    outcome: Option<pb::tool_result_command::Outcome>,
) -> Result<crate::query::ToolOutcome, Error> {
    use pb::tool_result_command::Outcome;
    match outcome {
        Some(Outcome::Result(r)) => tool_outcome(Some(r), None),
        Some(Outcome::Error(e)) => tool_outcome(None, Some(e)),
        None => tool_outcome(None, None),
    }
}

/// Charges the query's model tokens to the caller's key as its Usage
/// events report them, until it ends (a query may outlive its stream).
async fn charge_tokens(caller: Caller, query: Arc<Query>) {
    let mut charged = 0;
    let mut events = std::pin::pin!(query.follow(0));
    while let Some(e) = events.next().await {
        let total = match &e.kind {
            EventKind::Usage { usage, .. } | EventKind::Completed { usage, .. } => {
                usage.input + usage.output
            }
            _ => continue,
        };
        if total > charged {
            caller.charge_tokens(total - charged);
            charged = total;
        }
    }
}

#[tonic::async_trait]
impl QueryControlService for QueryApi {
    type SessionStream = ResponseStream<pb::SessionResponse>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut incoming = request.into_inner();
        let rpc = Rpc::begin();
        let caller = rpc.caller();
        let started = async {
            let first = incoming.message().await?.ok_or_else(|| {
                Error::invalid(
                    "command",
                    "a Session stream must start with a start command",
                )
            })?;
            let Some(Command::Start(start)) = first.command else {
                return Err(Error::invalid(
                    "command",
                    "the first message of a Session stream must be start",
                )
                .into());
            };
            let SessionStart {
                query,
                terminate_on_disconnect,
            } = SessionStart::try_from(start).map_err(|e| e.within("start"))?;
            // A key whose tokens per minute are used up starts nothing.
            caller.admit_tokens()?;
            let query = self
                .engine
                .start(query)
                .await
                .map_err(|e| e.within("start"))?;
            Ok::<_, Status>((query, terminate_on_disconnect))
        }
        .await;
        let (query, terminate_on_disconnect) = match started {
            Ok(started) => started,
            Err(status) => return rpc.unary(Err(status)),
        };
        let id = query.id();
        rpc.record_resource("query", &id);
        if caller.counts_tokens() {
            tokio::spawn(charge_tokens(caller, Arc::clone(&query)));
        }

        let engine = self.engine.clone();
        let (commands_id, commands_query) = (id.clone(), query.clone());
        let (half_closed_tx, half_closed) = tokio::sync::oneshot::channel::<()>();
        let commands = tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                let pb::SessionRequest { command } = message;
                if let Err(e) = apply(&engine, &commands_id, command).await {
                    let error = QueryError::from(&e);
                    commands_query.push_unless_finished(EventKind::CommandRejected { error });
                }
            }
            let _ = half_closed_tx.send(());
        });
        let engine = self.engine.clone();
        let guard_id = id.clone();
        let on_drop = Box::new(move || {
            commands.abort();
            if terminate_on_disconnect {
                tokio::spawn(async move {
                    let _ = engine
                        .terminate(&guard_id, "client disconnected".to_owned())
                        .await;
                });
            }
        });
        // After the final event, hold the stream open until the client
        // half-closes its side (bounded): ending a stream whose request side
        // is still open makes the server reset it (RST_STREAM NO_ERROR), and
        // Node's HTTP/2 client then sometimes fails the whole call with
        // "Premature close" although every event arrived.
        let half_closed = futures::stream::once(async move {
            let _ = tokio::time::timeout(HALF_CLOSE_GRACE, half_closed).await;
        })
        .filter_map(|()| std::future::ready(None));
        let events = query
            .follow(0)
            .map(move |e| {
                Ok(pb::SessionResponse {
                    event: Some(event(&id, e)),
                })
            })
            .chain(half_closed);
        rpc.stream(events, Some(on_drop))
    }

    type AttachStream = ResponseStream<pb::AttachResponse>;

    async fn attach(
        &self,
        request: Request<pb::AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let pb::AttachRequest { query_id, from_seq } = request.into_inner();
        let rpc = Rpc::about("query", &query_id);
        let events = match self.engine.attach(&query_id, from_seq).await {
            Ok(events) => events,
            Err(e) => return rpc.unary(Err(e.into())),
        };
        let events = events.map(move |e| {
            Ok(pb::AttachResponse {
                event: Some(event(&query_id, e)),
            })
        });
        rpc.stream(events, None)
    }

    async fn pause(
        &self,
        request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        let pb::PauseRequest { query_id } = request.into_inner();
        let rpc = Rpc::about("query", &query_id);
        rpc.unary(
            async {
                let seq = self.engine.pause(&query_id).await?;
                Ok(pb::PauseResponse { seq })
            }
            .await,
        )
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let pb::ResumeRequest { query_id, model } = request.into_inner();
        let rpc = Rpc::about("query", &query_id);
        rpc.unary(
            async {
                let model = (!model.is_empty()).then_some(model);
                let model = self.engine.resume(&query_id, model).await?;
                Ok(pb::ResumeResponse { model })
            }
            .await,
        )
    }

    async fn switch_model(
        &self,
        request: Request<pb::SwitchModelRequest>,
    ) -> Result<Response<pb::SwitchModelResponse>, Status> {
        let pb::SwitchModelRequest { query_id, model } = request.into_inner();
        let rpc = Rpc::about("query", &query_id);
        rpc.unary(
            async {
                let switched = self.engine.switch_model(&query_id, model).await?;
                let crate::query::Switched { from_model, seq } = switched;
                Ok(pb::SwitchModelResponse { from_model, seq })
            }
            .await,
        )
    }

    async fn terminate(
        &self,
        request: Request<pb::TerminateRequest>,
    ) -> Result<Response<pb::TerminateResponse>, Status> {
        let pb::TerminateRequest { query_id, reason } = request.into_inner();
        let rpc = Rpc::about("query", &query_id);
        rpc.unary(
            async {
                let seq = self.engine.terminate(&query_id, reason).await?;
                Ok(pb::TerminateResponse { seq })
            }
            .await,
        )
    }

    async fn submit_tool_result(
        &self,
        request: Request<pb::SubmitToolResultRequest>,
    ) -> Result<Response<pb::SubmitToolResultResponse>, Status> {
        use pb::submit_tool_result_request::Outcome;
        let pb::SubmitToolResultRequest {
            query_id,
            call_id,
            outcome,
        } = request.into_inner();
        let rpc = Rpc::about("query", &query_id);
        rpc.unary(
            async {
                let outcome = match outcome {
                    Some(Outcome::Result(r)) => tool_outcome(Some(r), None),
                    Some(Outcome::Error(e)) => tool_outcome(None, Some(e)),
                    None => tool_outcome(None, None),
                }?;
                let pending = self
                    .engine
                    .submit_tool_result(&query_id, call_id, outcome)
                    .await?;
                Ok(pb::SubmitToolResultResponse { pending })
            }
            .await,
        )
    }

    async fn get_query(
        &self,
        request: Request<pb::GetQueryRequest>,
    ) -> Result<Response<pb::GetQueryResponse>, Status> {
        let pb::GetQueryRequest {
            query_id,
            include_text,
        } = request.into_inner();
        let rpc = Rpc::about("query", &query_id);
        rpc.unary(
            async {
                let found = self.engine.get(&query_id).await?;
                let text = include_text.then_some(found.text);
                Ok(pb::GetQueryResponse {
                    query: Some(info(found.info, text)),
                })
            }
            .await,
        )
    }

    async fn list_queries(
        &self,
        request: Request<pb::ListQueriesRequest>,
    ) -> Result<Response<pb::ListQueriesResponse>, Status> {
        let pb::ListQueriesRequest {
            state,
            page_size,
            page_token,
        } = request.into_inner();
        let rpc = Rpc::begin();
        rpc.unary(
            async {
                let state = state_filter(state)?;
                let page = self
                    .engine
                    .list(state, page_size as usize, &page_token)
                    .await?;
                Ok(pb::ListQueriesResponse {
                    queries: page.items.into_iter().map(|i| info(i, None)).collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn get_query_stats(
        &self,
        request: Request<pb::GetQueryStatsRequest>,
    ) -> Result<Response<pb::GetQueryStatsResponse>, Status> {
        let pb::GetQueryStatsRequest {} = request.into_inner();
        Rpc::begin().unary(Ok(self.engine.stats().into()))
    }

    async fn list_query_models(
        &self,
        request: Request<pb::ListQueryModelsRequest>,
    ) -> Result<Response<pb::ListQueryModelsResponse>, Status> {
        let pb::ListQueryModelsRequest {} = request.into_inner();
        Rpc::begin().unary(Ok(pb::ListQueryModelsResponse {
            models: self.engine.models().into_iter().map(Into::into).collect(),
        }))
    }
}
