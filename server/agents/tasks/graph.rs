//! Task dependencies: a task with `depends_on` waits until every one of
//! them has succeeded, then runs with their outputs; when one ends any
//! other way, it fails without running, and so do its own dependents.
//! SubmitTaskGraph creates many such tasks at once, named locally.
//!
//! Readiness is derived state (the scheduler's blocked tasks): a task's
//! dependencies are read from the store, it is registered under
//! `AgentEngine::dependencies` (the lock the end of every task takes too),
//! and the dependencies it waits for are read again after: one that ended
//! between the first read and the registration, whose end found no
//! dependent to release, is caught by the second read and released then
//! (releasing is idempotent).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;

use super::submit::{KEY_RETENTION_MS, check, fingerprint, new_task, submission};
use crate::agents::engine::{AgentEngine, new_event, task_row};
use crate::agents::types::{ActivityKind, SubmitParams, Task, TaskError, TaskErrorKind, TaskState};
use crate::agents::validate::check_name;
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::sync::lock;
use crate::error::{Error, Result, Violations};
use crate::store::{Submitted, TaskWrite};

/// Most tasks one graph may hold.
pub const MAX_GRAPH_NODES: usize = 1000;
/// Most dependencies of one task.
pub const MAX_DEPENDENCIES: usize = 64;

/// One task of a graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphNode {
    /// Its name within the request.
    pub name: String,
    /// The task.
    pub task: SubmitParams,
    /// Names of the nodes it waits for.
    pub after: Vec<String>,
}

/// Ends `task`, which never ran, as FAILED because its dependency `dep`
/// ended in `state`: the write that records it.
pub(crate) fn unrun(task: &mut Task, dep: &str, state: TaskState) -> TaskWrite {
    let message = format!(
        "task {} did not run: its dependency {dep} ended {}",
        task.id,
        state.as_str()
    );
    task.state = TaskState::Failed;
    task.body.finished_at_ms = Some(now_ms());
    task.body.error = Some(TaskError {
        kind: TaskErrorKind::Dependency,
        message: message.clone(),
    });
    let mut event = new_event(ActivityKind::TaskFailed, message);
    event.task_id = task.id.clone();
    event.details = json!({ "dependency": dep, "dependency_state": state.as_str() }).to_string();
    TaskWrite {
        task: task_row(task),
        agent: None,
        events: vec![event],
    }
}

/// The order to create `nodes` in (each after the nodes it names), or
/// the violations: unknown names, and a cycle.
fn topological_order(nodes: &[GraphNode]) -> Result<Vec<usize>> {
    let mut v = Violations::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        check_name(&format!("nodes[{i}].name"), &n.name, &mut v);
        if let Some(j) = index.insert(n.name.as_str(), i) {
            v.add(
                format!("nodes[{i}].name"),
                format!("repeats the name of nodes[{j}]"),
            );
        }
    }
    let mut waits_for = vec![0usize; nodes.len()];
    let mut unblocks: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for (j, name) in n.after.iter().enumerate() {
            match index.get(name.as_str()) {
                Some(&d) if d == i => {
                    v.add(format!("nodes[{i}].after[{j}]"), "names the node itself")
                }
                Some(&d) => {
                    waits_for[i] += 1;
                    unblocks[d].push(i);
                }
                None => v.add(
                    format!("nodes[{i}].after[{j}]"),
                    format!("no node of this request is named {name:?}"),
                ),
            }
        }
    }
    v.finish()?;
    // Kahn: what is left once nothing more can start lies on a cycle.
    let mut order = Vec::with_capacity(nodes.len());
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| waits_for[i] == 0).collect();
    while let Some(i) = ready.pop() {
        order.push(i);
        for &next in &unblocks[i] {
            waits_for[next] -= 1;
            if waits_for[next] == 0 {
                ready.push(next);
            }
        }
    }
    if order.len() < nodes.len() {
        let cycle: Vec<&str> = (0..nodes.len())
            .filter(|&i| waits_for[i] > 0)
            .map(|i| nodes[i].name.as_str())
            .collect();
        return Err(Error::invalid(
            "nodes",
            format!("the graph has a cycle among {}", cycle.join(", ")),
        ));
    }
    Ok(order)
}

impl AgentEngine {
    /// The states of the existing tasks `ids` (field `field[i]` when one
    /// is unknown).
    pub(super) async fn dependency_states(
        &self,
        ids: &[String],
        field: &str,
    ) -> Result<HashMap<String, TaskState>> {
        let mut states = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            match self.stored_state(id).await? {
                Some(state) => {
                    states.insert(id.clone(), state);
                }
                None => {
                    return Err(Error::invalid(
                        format!("{field}[{i}]"),
                        format!("no task has the id {id:?}"),
                    ));
                }
            }
        }
        Ok(states)
    }

    /// Task `id`'s state in the store (None: no such task).
    async fn stored_state(&self, id: &str) -> Result<Option<TaskState>> {
        let key = id.to_owned();
        let row = with_store(&self.store, move |s| s.get_task(&key)).await?;
        Ok(row.map(|r| TaskState::parse(&r.state).unwrap_or(TaskState::Failed)))
    }

    /// Queues `task`, holds it for its dependencies, or says it is doomed.
    /// Called under `self.dependencies`.
    fn admit(
        &self,
        task: &Task,
        states: &HashMap<String, TaskState>,
    ) -> Option<(String, TaskState)> {
        let mut waits = HashSet::new();
        for dep in &task.body.depends_on {
            match states.get(dep) {
                Some(TaskState::Succeeded) => {}
                Some(s) if s.is_finished() => return Some((dep.clone(), *s)),
                _ => {
                    waits.insert(dep.clone());
                }
            }
        }
        lock(&self.scheduler).block(
            task.id.clone(),
            task.body.priority,
            task.body.route(),
            waits,
        );
        None
    }

    /// Registers new tasks (already recorded) with the scheduler, in an
    /// order where each comes after its dependencies; those that can never
    /// run end now.
    pub(crate) async fn schedule_new(
        &self,
        tasks: &[&Task],
        mut states: HashMap<String, TaskState>,
    ) {
        let mut doomed = Vec::new();
        let mut awaited = HashSet::new();
        {
            let _deps = lock(&self.dependencies);
            for task in tasks {
                match self.admit(task, &states) {
                    Some((dep, state)) => {
                        doomed.push((task.id.clone(), dep, state));
                        states.insert(task.id.clone(), TaskState::Failed);
                    }
                    None => {
                        states.insert(task.id.clone(), TaskState::Pending);
                        awaited.extend(
                            task.body
                                .depends_on
                                .iter()
                                .filter(|d| !states.get(*d).is_some_and(|s| s.is_finished()))
                                .cloned(),
                        );
                    }
                }
            }
        }
        for (id, dep, state) in doomed {
            if let Err(e) = self.fail_unrun(&id, &dep, state).await {
                tracing::error!(task = %id, error = %e, "cannot fail a task whose dependency failed");
            }
        }
        self.dispatch();
        // Dependencies that ended since they were read released nobody.
        for dep in awaited {
            match self.stored_state(&dep).await {
                Ok(Some(state)) if state.is_finished() => {
                    Box::pin(self.task_ended(&dep, state)).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(task = %dep, error = %e, "cannot read a dependency again");
                }
            }
        }
    }

    /// Task `id` ended: its dependents run (it succeeded) or fail, and so
    /// on down the graph.
    pub(crate) async fn task_ended(&self, id: &str, state: TaskState) {
        let mut ended = vec![(id.to_owned(), state)];
        while let Some((dep, state)) = ended.pop() {
            let doomed = {
                let _deps = lock(&self.dependencies);
                lock(&self.scheduler).dependency_ended(&dep, state == TaskState::Succeeded)
            };
            for task in doomed {
                match self.fail_unrun(&task, &dep, state).await {
                    Ok(()) => ended.push((task, TaskState::Failed)),
                    Err(e) => {
                        tracing::error!(task = %task, error = %e, "cannot fail a task whose dependency failed");
                    }
                }
            }
        }
        self.dispatch();
    }

    /// Ends task `id`, which never ran, as FAILED because `dep` ended in
    /// `state`.
    async fn fail_unrun(&self, id: &str, dep: &str, state: TaskState) -> Result<()> {
        let mut task = self.load_task(id).await?;
        if task.state.is_finished() {
            return Ok(());
        }
        let write = unrun(&mut task, dep, state);
        let events = with_store(&self.store, move |s| s.save_task(&write)).await?;
        self.appended(&events);
        self.note_end(task.created_at_ms);
        Ok(())
    }

    /// Records a graph of tasks, all or none, and schedules them.
    pub async fn submit_task_graph(
        &self,
        nodes: Vec<GraphNode>,
        idempotency_key: String,
    ) -> Result<Vec<Task>> {
        if nodes.is_empty() || nodes.len() > MAX_GRAPH_NODES {
            return Err(Error::invalid(
                "nodes",
                format!(
                    "must hold 1 to {MAX_GRAPH_NODES} tasks, got {}",
                    nodes.len()
                ),
            ));
        }
        if idempotency_key.len() > 128 {
            return Err(Error::invalid(
                "idempotency_key",
                "must be at most 128 bytes",
            ));
        }
        let mut v = Violations::new();
        for (i, n) in nodes.iter().enumerate() {
            if !n.task.idempotency_key.is_empty() {
                v.add(
                    format!("nodes[{i}].task.idempotency_key"),
                    "must be empty: set the graph's idempotency_key",
                );
            }
            if n.task.depends_on.len() + n.after.len() > MAX_DEPENDENCIES {
                v.add(
                    format!("nodes[{i}].after"),
                    format!("with task.depends_on, at most {MAX_DEPENDENCIES} dependencies"),
                );
            }
        }
        v.finish()?;
        for (i, n) in nodes.iter().enumerate() {
            check(&n.task).map_err(|e| e.within(&format!("nodes[{i}].task")))?;
            self.check_target(&n.task)
                .await
                .map_err(|e| e.within(&format!("nodes[{i}].task")))?;
        }
        let order = topological_order(&nodes)?;

        let now = now_ms();
        let mut generator = ulid::Generator::new();
        let mut ids = Vec::with_capacity(nodes.len());
        for _ in &nodes {
            let id = generator
                .generate()
                .map_err(|e| Error::Internal(format!("task id: {e}")))?;
            ids.push(id.to_string());
        }
        let by_name: BTreeMap<&str, &str> = nodes
            .iter()
            .zip(&ids)
            .map(|(n, id)| (n.name.as_str(), id.as_str()))
            .collect();
        let mut tasks = Vec::with_capacity(nodes.len());
        let mut steps: Vec<Vec<Task>> = Vec::with_capacity(nodes.len());
        for (i, (n, id)) in nodes.iter().zip(&ids).enumerate() {
            let mut depends_on = n.task.depends_on.clone();
            depends_on.extend(n.after.iter().map(|a| by_name[a.as_str()].to_owned()));
            let mut task = new_task(&n.task, id.clone(), now, depends_on);
            steps.push(
                self.expand(&mut task)
                    .await
                    .map_err(|e| e.within(&format!("nodes[{i}].task")))?,
            );
            tasks.push(task);
        }
        // The graph's tasks first (a retried key answers with them), then
        // the steps of those sent to swarms.
        let writes: Vec<TaskWrite> = tasks
            .iter()
            .chain(steps.iter().flatten())
            .map(submission)
            .collect();
        let print = json!({
            "nodes": nodes.iter().map(|n| json!({
                "name": n.name,
                "after": n.after,
                "task": fingerprint(&n.task),
            })).collect::<Vec<_>>(),
        })
        .to_string();
        let key = (!idempotency_key.is_empty()).then(|| (idempotency_key.clone(), print.clone()));

        let mut states = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let field = format!("nodes[{i}].task.depends_on");
            states.extend(self.dependency_states(&n.task.depends_on, &field).await?);
        }
        let since = now - KEY_RETENTION_MS;
        let submitted = with_store(&self.store, move |s| {
            s.submit_tasks(
                &writes,
                key.as_ref().map(|(k, f)| (k.as_str(), f.as_str())),
                since,
            )
        })
        .await?;
        match submitted {
            Submitted::Created(events) => {
                self.appended(&events);
                let ordered: Vec<&Task> = order
                    .iter()
                    .flat_map(|&i| steps[i].iter().chain(std::iter::once(&tasks[i])))
                    .collect();
                self.schedule_new(&ordered, states).await;
                Ok(tasks)
            }
            Submitted::Existing(ids, first) => {
                if first != print {
                    return Err(Error::invalid(
                        "idempotency_key",
                        "was used for a different graph within 24 hours",
                    ));
                }
                let mut tasks = Vec::with_capacity(nodes.len());
                for id in ids.iter().take(nodes.len()) {
                    tasks.push(self.load_task(id).await?);
                }
                Ok(tasks)
            }
        }
    }

    /// The outputs of `task`'s dependencies, as context before its prompt.
    pub(crate) async fn dependency_context(&self, task: &Task) -> Result<String> {
        if task.body.depends_on.is_empty() {
            return Ok(String::new());
        }
        let mut context = String::from("Outputs of the tasks this one depends on:\n");
        for (id, output) in self.dependency_outputs(task).await? {
            context.push_str(&format!("\n### Task {id}\n{output}\n"));
        }
        context.push('\n');
        Ok(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, after: &[&str]) -> GraphNode {
        GraphNode {
            name: name.into(),
            after: after.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn graphs_are_ordered_and_cycles_and_unknown_names_refused() {
        let order = topological_order(&[
            node("merge", &["a", "b"]),
            node("a", &[]),
            node("b", &["a"]),
        ])
        .unwrap();
        let pos = |i: usize| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(1) < pos(2) && pos(2) < pos(0), "{order:?}");
        let e = topological_order(&[
            node("a", &["c"]),
            node("b", &["a"]),
            node("c", &["b"]),
            node("d", &[]),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("cycle among a, b, c"), "{e}");
        let e = topological_order(&[node("a", &["zz"]), node("a", &[]), node("s", &["s"])])
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("nodes[0].after[0]") && text.contains("nodes[1].name"),
            "{text}"
        );
        assert!(text.contains("nodes[2].after[0]"), "{text}");
    }
}
