//! What a task sent to a swarm becomes. The task itself stays the one the
//! client watches: it is rewired to run last (the merge on a hub or
//! coordinator, the last link of a chain) or to join its steps' answers,
//! and its steps are ordinary tasks (`parent_task_id` set) linked to it by
//! dependencies, written in the same transaction.

use serde_json::{Value, json};

use crate::agents::engine::{AgentEngine, new_event};
use crate::agents::tasks::submit::submission;
use crate::agents::types::{
    ActivityKind, Execution, Route, Routing, Step, Swarm, SwarmState, Task, TaskBody, TaskState,
    TaskTarget, Topology,
};
use crate::common::blocking::with_store;
use crate::common::sync::lock;
use crate::error::{Error, Result};
use crate::store::TaskWrite;

/// Most subtasks a plan may hold.
const MAX_PLAN_STEPS: usize = 100;

/// The capability a MESH member hands a task off to: the first line of
/// its answer is `HANDOFF <capability>`.
pub(crate) fn handoff_capability(text: &str) -> Option<String> {
    let first = text.trim_start().lines().next()?;
    let cap = first.strip_prefix("HANDOFF ")?.trim();
    (!cap.is_empty() && !cap.contains(char::is_whitespace)).then(|| cap.to_owned())
}

/// The subtasks of a coordinator's plan: a JSON list (optionally in a code
/// fence) of strings or `{"prompt", "capability"}` objects.
pub(crate) fn parse_plan(text: &str) -> Option<Vec<(String, Option<String>)>> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(trimmed);
    let items: Vec<Value> = serde_json::from_str(body.trim()).ok()?;
    if items.is_empty() || items.len() > MAX_PLAN_STEPS {
        return None;
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(p) if !p.trim().is_empty() => Some((p, None)),
            Value::Object(o) => {
                let prompt = o.get("prompt")?.as_str()?.to_owned();
                let cap = o
                    .get("capability")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (!prompt.trim().is_empty()).then_some((prompt, cap.filter(|c| !c.is_empty())))
            }
            _ => None,
        })
        .collect()
}

/// A step of `parent`, run on `route`.
fn step_of(
    parent: &Task,
    route: Route,
    prompt: String,
    depends_on: Vec<String>,
    step: Step,
) -> Task {
    Task {
        id: ulid::Ulid::new().to_string(),
        state: TaskState::Pending,
        agent_id: String::new(),
        created_at_ms: parent.created_at_ms,
        body: TaskBody {
            target: parent.body.target.clone(),
            prompt,
            input: parent.body.input.clone(),
            priority: parent.body.priority,
            timeout_ms: parent.body.timeout_ms,
            max_attempts: parent.body.max_attempts,
            labels: parent.body.labels.clone(),
            max_cost_usd: parent.body.max_cost_usd,
            required_capability: parent.body.required_capability.clone(),
            depends_on,
            route: Some(route),
            parent_task_id: parent.id.clone(),
            step,
            ..Default::default()
        },
    }
}

/// Steps in a line over `members`: each after the one before (the first
/// after the task's own dependencies); the task itself runs last, on the
/// last member, after them.
fn chain(task: &mut Task, members: &[String]) -> Vec<Task> {
    let mut steps: Vec<Task> = Vec::new();
    let (last, before) = members.split_last().expect("at least one member");
    for member in before {
        let deps = match steps.last() {
            Some(prev) => vec![prev.id.clone()],
            None => task.body.depends_on.clone(),
        };
        let prompt = task.body.prompt.clone();
        steps.push(step_of(
            task,
            Route::Agent(member.clone()),
            prompt,
            deps,
            Step::Task,
        ));
    }
    if let Some(prev) = steps.last() {
        task.body.depends_on = vec![prev.id.clone()];
    }
    task.body.route = Some(Route::Agent(last.clone()));
    steps
}

/// One step per member at once, each after the task's own dependencies;
/// the task itself after them all.
fn fan_out(task: &mut Task, members: &[String]) -> Vec<Task> {
    let steps: Vec<Task> = members
        .iter()
        .map(|m| {
            let (prompt, deps) = (task.body.prompt.clone(), task.body.depends_on.clone());
            step_of(task, Route::Agent(m.clone()), prompt, deps, Step::Task)
        })
        .collect();
    task.body.depends_on = steps.iter().map(|s| s.id.clone()).collect();
    steps
}

impl AgentEngine {
    /// For a task sent to a swarm: checks the swarm, rewires the task and
    /// returns its steps (to be recorded with it, before it).
    pub(crate) async fn expand(&self, task: &mut Task) -> Result<Vec<Task>> {
        let TaskTarget::Swarm(id) = task.body.target.clone() else {
            if matches!(
                task.body.execution,
                Execution::Parallel | Execution::Sequential
            ) {
                return Err(Error::invalid(
                    "strategy",
                    "PARALLEL and SEQUENTIAL need a swarm target",
                ));
            }
            if !task.body.required_capability.is_empty() {
                return Err(Error::invalid(
                    "required_capability",
                    "applies to tasks sent to a swarm; use target.capability",
                ));
            }
            return Ok(Vec::new());
        };
        let swarm = self.get_swarm(id.clone()).await.map_err(|e| match e {
            Error::InvalidArgument(_) => Error::invalid("target.swarm_id", "must not be empty"),
            other => other,
        })?;
        if swarm.state != SwarmState::Active {
            return Err(Error::WrongState(format!(
                "swarm {id} is dissolved and takes no tasks"
            )));
        }
        let cap = (!task.body.required_capability.is_empty())
            .then(|| task.body.required_capability.clone());
        if swarm.body.routing == Routing::CapabilityMatch && cap.is_none() {
            return Err(Error::invalid(
                "required_capability",
                format!("must be set: swarm {id} routes by capability"),
            ));
        }
        let (live, eligible) = self.members(&swarm, cap.as_deref());
        let none = || {
            Error::WrongState(format!(
                "swarm {id} has no member that can run it (not stopped{})",
                cap.as_ref()
                    .map(|c| format!(", with capability {c}"))
                    .unwrap_or_default()
            ))
        };
        let steps = match (task.body.execution, swarm.body.topology) {
            (Execution::Parallel, _) => {
                if eligible.is_empty() {
                    return Err(none());
                }
                let steps = fan_out(task, &eligible);
                task.body.route = Some(Route::Join);
                steps
            }
            (Execution::Sequential, _) => {
                if eligible.is_empty() {
                    return Err(none());
                }
                chain(task, &eligible)
            }
            (_, Topology::Mesh) => Vec::new(),
            (_, Topology::Ring) => {
                if eligible.is_empty() {
                    return Err(none());
                }
                let rounds = swarm.body.max_rounds.max(1) as usize;
                let line: Vec<String> = eligible
                    .iter()
                    .cloned()
                    .cycle()
                    .take(eligible.len() * rounds)
                    .collect();
                chain(task, &line)
            }
            (_, Topology::Star) => {
                let hub = live.first().ok_or_else(none)?.clone();
                let spokes: Vec<String> = eligible.into_iter().filter(|m| *m != hub).collect();
                let steps = if spokes.is_empty() {
                    Vec::new()
                } else {
                    fan_out(task, &spokes)
                };
                task.body.route = Some(Route::Agent(hub));
                if !steps.is_empty() {
                    task.body.step = Step::Merge;
                }
                steps
            }
            (_, Topology::Hierarchical) => {
                let coordinator = live.first().ok_or_else(none)?.clone();
                let team = live.len().saturating_sub(1).max(1);
                let prompt = format!(
                    "You coordinate a team of {team} agent(s). Split the task below into at \
                     most {team} subtasks they can do independently. Answer with only a JSON \
                     list: each item the subtask's instruction as a string, or an object \
                     {{\"prompt\": ..., \"capability\": ...}}.\n\nTask:\n{}",
                    task.body.prompt
                );
                let deps = task.body.depends_on.clone();
                let plan = step_of(
                    task,
                    Route::Agent(coordinator.clone()),
                    prompt,
                    deps,
                    Step::Plan,
                );
                task.body.depends_on = vec![plan.id.clone()];
                task.body.route = Some(Route::Agent(coordinator));
                task.body.step = Step::Merge;
                vec![plan]
            }
        };
        task.body.child_task_ids = steps.iter().map(|s| s.id.clone()).collect();
        Ok(steps)
    }

    /// A swarm's members that are not stopped, and those of them with
    /// `capability`, in join order.
    fn members(&self, swarm: &Swarm, capability: Option<&str>) -> (Vec<String>, Vec<String>) {
        let scheduler = lock(&self.scheduler);
        let live: Vec<String> = swarm
            .body
            .members
            .iter()
            .filter(|m| scheduler.agents.get(*m).is_some_and(|s| !s.stopped))
            .cloned()
            .collect();
        let eligible = live
            .iter()
            .filter(|m| {
                capability.is_none_or(|c| scheduler.agents[*m].capabilities.iter().any(|x| x == c))
            })
            .cloned()
            .collect();
        (live, eligible)
    }

    /// A HIERARCHICAL plan step succeeded with `text`: its subtasks become
    /// steps routed to the other members, and the task merges them; a plan
    /// that does not parse lets the task run on the coordinator alone.
    pub(crate) async fn plan_done(&self, plan: &Task, text: &str) -> Result<()> {
        let mut parent = self.load_task(&plan.body.parent_task_id).await?;
        if parent.state.is_finished() {
            return Ok(());
        }
        let TaskTarget::Swarm(swarm_id) = parent.body.target.clone() else {
            return Ok(());
        };
        let coordinator = plan.agent_id.clone();
        let others = lock(&self.scheduler)
            .swarms
            .get(&swarm_id)
            .is_some_and(|s| s.members.iter().any(|m| *m != coordinator));
        let Some(items) = parse_plan(text) else {
            parent.body.depends_on.clear();
            parent.body.step = Step::Task;
            let mut event = new_event(
                ActivityKind::TaskProgress,
                format!(
                    "the plan of task {} did not parse as a JSON list of subtasks; the task runs \
                     on the coordinator {coordinator}",
                    parent.id
                ),
            );
            event.task_id = parent.id.clone();
            event.swarm_id = swarm_id;
            event.details = json!({ "plan_fallback": true, "plan_task_id": plan.id }).to_string();
            let write = TaskWrite {
                task: crate::agents::engine::task_row(&parent),
                agent: None,
                events: vec![event],
            };
            let events = with_store(&self.store, move |s| s.save_task(&write)).await?;
            self.appended(&events);
            return Ok(());
        };
        let steps: Vec<Task> = items
            .into_iter()
            .map(|(prompt, capability)| {
                let route = Route::Swarm {
                    id: swarm_id.clone(),
                    capability: capability.or_else(|| {
                        (!parent.body.required_capability.is_empty())
                            .then(|| parent.body.required_capability.clone())
                    }),
                    exclude: others.then(|| coordinator.clone()),
                };
                step_of(&parent, route, prompt, Vec::new(), Step::Task)
            })
            .collect();
        let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
        parent.body.depends_on = ids.clone();
        parent.body.child_task_ids.extend(ids.iter().cloned());
        let mut writes: Vec<TaskWrite> = steps.iter().map(submission).collect();
        let mut event = new_event(
            ActivityKind::TaskProgress,
            format!("task {} planned as {} subtasks", parent.id, steps.len()),
        );
        event.task_id = parent.id.clone();
        event.swarm_id = swarm_id;
        event.details = json!({ "subtasks": ids }).to_string();
        writes.push(TaskWrite {
            task: crate::agents::engine::task_row(&parent),
            agent: None,
            events: vec![event],
        });
        let submitted = with_store(&self.store, move |s| {
            s.submit_tasks(&writes, None, i64::MIN)
        })
        .await?;
        if let crate::store::Submitted::Created(events) = submitted {
            self.appended(&events);
        }
        {
            let _deps = lock(&self.dependencies);
            lock(&self.scheduler).also_wait_for(&parent.id, &ids);
        }
        let refs: Vec<&Task> = steps.iter().collect();
        self.schedule_new(&refs, Default::default()).await;
        Ok(())
    }

    /// A join's steps have all succeeded: it ends with their answers,
    /// one section per step.
    pub(crate) async fn complete_join(self, task_id: String) {
        let result: Result<()> = async {
            let task = self.load_task(&task_id).await?;
            let mut text = String::new();
            for id in &task.body.child_task_ids {
                let step = self.load_task(id).await?;
                text.push_str(&format!(
                    "### {}\n{}\n\n",
                    step.agent_id, step.body.output_text
                ));
            }
            let end = crate::agents::tasks::outcome::End::Succeeded {
                text: text.trim_end().to_owned(),
                output: None,
            };
            self.record_end(&task_id, "", end, Default::default(), 0.0)
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(task = %task_id, error = %e, "cannot complete a join");
        }
        lock(&self.scheduler).release("", &task_id);
        self.dispatch();
    }

    /// Whether swarm `id` is a MESH (whose members may hand off).
    pub(crate) async fn is_mesh(&self, id: &str) -> bool {
        self.get_swarm(id.to_owned())
            .await
            .is_ok_and(|s| s.body.topology == Topology::Mesh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_and_handoffs_are_read_strictly() {
        assert_eq!(
            parse_plan("```json\n[\"a\", {\"prompt\": \"b\", \"capability\": \"art\"}]\n```"),
            Some(vec![("a".into(), None), ("b".into(), Some("art".into()))])
        );
        assert_eq!(parse_plan("Sure! Here is the plan: a, b"), None);
        assert_eq!(parse_plan("[]"), None);
        assert_eq!(parse_plan("[1, 2]"), None);
        assert_eq!(
            handoff_capability("HANDOFF art\nplease draw it"),
            Some("art".into())
        );
        assert_eq!(handoff_capability("I will HANDOFF art"), None);
        assert_eq!(handoff_capability("HANDOFF "), None);
    }
}
