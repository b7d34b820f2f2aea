//! `agentd.v1` Work stream messages ⇄ the agents engine's worker types.

use super::{duration, json_object};
use crate::agents::{Ack, Checkpoint, Directive, WorkerHello, WorkerMessage};
use crate::error::{Error, Result};
use crate::pb::v1 as pb;

impl From<pb::WorkerHello> for WorkerHello {
    fn from(h: pb::WorkerHello) -> Self {
        let pb::WorkerHello {
            spec_name,
            agent_id,
            max_concurrent_tasks,
            labels,
        } = h;
        WorkerHello {
            spec_name,
            agent_id,
            max_concurrent_tasks,
            labels: labels.into_iter().collect(),
        }
    }
}

/// A message after hello. Another hello, or none at all, is a protocol
/// error that ends the stream.
pub fn worker_message(r: pb::WorkRequest) -> Result<WorkerMessage> {
    use pb::work_request::Message;
    Ok(match r.message {
        None => return Err(Error::invalid("message", "must be set")),
        Some(Message::Hello(_)) => {
            return Err(Error::invalid(
                "hello",
                "is sent once, as the first message of the stream",
            ));
        }
        Some(Message::Heartbeat(pb::WorkerHeartbeat { checkpoints })) => {
            let mut saved = Vec::with_capacity(checkpoints.len());
            for (i, c) in checkpoints.into_iter().enumerate() {
                let pb::TaskCheckpoint {
                    task_id,
                    attempt,
                    data,
                } = c;
                let field = format!("heartbeat.checkpoints[{i}].data");
                let data = data.ok_or_else(|| Error::invalid(&field, "must be set"))?;
                saved.push(Checkpoint {
                    task_id,
                    attempt,
                    data: json_object(data, &field)?,
                });
            }
            WorkerMessage::Heartbeat(saved)
        }
        Some(Message::Progress(pb::TaskProgress {
            task_id,
            fraction,
            message,
            attempt,
        })) => WorkerMessage::Progress {
            task_id,
            attempt,
            fraction,
            message,
        },
        Some(Message::Result(pb::TaskResult {
            task_id,
            output_text,
            output,
            attempt,
        })) => WorkerMessage::Result {
            task_id,
            attempt,
            output_text,
            output: output
                .map(|o| json_object(o, "result.output"))
                .transpose()?,
        },
        Some(Message::Failure(pb::TaskFailure {
            task_id,
            message,
            retryable,
            attempt,
        })) => WorkerMessage::Failure {
            task_id,
            attempt,
            message,
            retryable,
        },
    })
}

impl From<Directive> for pb::WorkResponse {
    fn from(d: Directive) -> Self {
        use pb::work_response::Directive as D;
        let directive = match d {
            Directive::Registered {
                agent_id,
                heartbeat_interval,
                lease_timeout,
            } => D::Registered(pb::WorkerRegistered {
                agent_id,
                heartbeat_interval: Some(duration(heartbeat_interval)),
                lease_timeout: Some(duration(lease_timeout)),
            }),
            Directive::Assign {
                task,
                dependency_outputs,
            } => D::Assign(pb::TaskAssignment {
                task: Some((*task).into()),
                dependency_outputs: dependency_outputs.into_iter().collect(),
            }),
            Directive::Cancel { task_id, reason } => {
                D::Cancel(pb::TaskCancellation { task_id, reason })
            }
            Directive::Ack(Ack {
                task_id,
                attempt,
                accepted,
                reason,
                of,
            }) => D::Ack(pb::WorkAck {
                task_id,
                attempt,
                accepted,
                reason,
                of: of.to_owned(),
            }),
        };
        pb::WorkResponse {
            directive: Some(directive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::convert::proto_struct;

    #[test]
    fn a_second_hello_or_an_empty_message_is_refused_by_field() {
        let hello = pb::WorkRequest {
            message: Some(pb::work_request::Message::Hello(Default::default())),
        };
        let e = worker_message(hello).unwrap_err();
        assert!(e.to_string().contains("hello"), "{e}");
        let e = worker_message(pb::WorkRequest { message: None }).unwrap_err();
        assert!(e.to_string().contains("message"), "{e}");
        let map = serde_json::Map::from_iter([("step".to_owned(), serde_json::json!(3.5))]);
        let beat = pb::WorkRequest {
            message: Some(pb::work_request::Message::Heartbeat(pb::WorkerHeartbeat {
                checkpoints: vec![pb::TaskCheckpoint {
                    task_id: "t".into(),
                    attempt: 2,
                    data: Some(proto_struct(map.clone())),
                }],
            })),
        };
        assert_eq!(
            worker_message(beat).unwrap(),
            WorkerMessage::Heartbeat(vec![Checkpoint {
                task_id: "t".into(),
                attempt: 2,
                data: map,
            }])
        );
    }
}
