//! A task's prompt: what it is made of, within its agent's context window.
//!
//! The window is the spec's `context_window`, or the model's when that is 0
//! or larger. The prompt (the spec's system prompt and the task's message:
//! memories, dependency outputs, the instruction, the input) may take three
//! quarters of it, the rest being left for the answer and the tool loop.
//! Memories are what gives way: the least similar are dropped first. A
//! task whose prompt does not fit even without them fails before any model
//! call, saying how many tokens it needs. Tokens are estimated at four
//! bytes each, as the query engine estimates usage it is not told.

use crate::agents::engine::AgentEngine;
use crate::agents::types::{Spec, Step, Task, TaskError, TaskErrorKind};
use crate::error::Result;
use crate::query::{QueryEngine, estimate_tokens};

/// The share of the window a prompt may take, in quarters.
const PROMPT_QUARTERS: u64 = 3;

/// The window of a task: the spec's `context_window` within the model's
/// (`model_window`, None when the model does not say); None when neither
/// sets one.
pub(crate) fn window(spec_window: u32, model_window: Option<u32>) -> Option<u64> {
    match (spec_window, model_window) {
        (0, m) => m.map(u64::from),
        (s, Some(m)) => Some(u64::from(s.min(m))),
        (s, None) => Some(u64::from(s)),
    }
}

/// The most tokens a prompt may take in `window`.
pub(crate) fn prompt_budget(window: u64) -> u64 {
    window * PROMPT_QUARTERS / 4
}

/// Why a prompt does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooLong {
    /// Tokens the prompt needs without any memory.
    pub needed: u64,
    /// Tokens it may take.
    pub budget: u64,
}

/// The user message of a task: as many of `memories` (most similar first)
/// as fit before `message`, with `system` counted, within `budget` tokens
/// (no limit when None).
pub(crate) fn fit(
    system: &str,
    memories: &[String],
    message: &str,
    budget: Option<u64>,
) -> Result<String, TooLong> {
    const HEADER: &str = "Relevant memories, most similar first:\n";
    let base = system.len() + message.len();
    if let Some(budget) = budget {
        let needed = estimate_tokens(base);
        if needed > budget {
            return Err(TooLong { needed, budget });
        }
    }
    let mut kept = 0;
    let mut bytes = base + HEADER.len() + 1;
    for memory in memories {
        let line = memory.len() + 3;
        if budget.is_some_and(|b| estimate_tokens(bytes + line) > b) {
            break;
        }
        bytes += line;
        kept += 1;
    }
    if kept == 0 {
        return Ok(message.to_owned());
    }
    let mut text = String::with_capacity(bytes);
    text.push_str(HEADER);
    for memory in &memories[..kept] {
        text.push_str("- ");
        text.push_str(memory);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(message);
    Ok(text)
}

impl AgentEngine {
    /// The user message of `task` on `spec`: its dependencies' outputs,
    /// its instruction and input, and the closest memories before them, as
    /// many as the context window holds. Err (the task's failure, not to be
    /// retried) when the memory cannot be read or the prompt does not fit.
    pub(crate) async fn task_prompt(
        &self,
        task: &Task,
        spec: &Spec,
        query_engine: &QueryEngine,
    ) -> Result<std::result::Result<String, TaskError>> {
        // Outputs of its dependencies first, then the instruction, then
        // its input; the closest memories go before all of it, as many as
        // the context window holds.
        let mut message = self.dependency_context(task).await?;
        if task.body.step == Step::Merge {
            message.push_str("Merge the outputs above into one answer to this task:\n\n");
        }
        message.push_str(&task.body.prompt);
        let memories = match (&self.memory, spec.body.memory_top_k) {
            (_, 0) => Vec::new(),
            // Memory that cannot be read is the task's failure, not a
            // silently missing context.
            (Some(memory), _) => match memory.recall(spec, &message).await {
                Ok(found) => found,
                Err(e) => {
                    let error = TaskError {
                        kind: TaskErrorKind::Invalid,
                        message: format!("the agent's memory could not be read: {e}"),
                    };
                    return Ok(Err(error));
                }
            },
            (None, _) => {
                let error = TaskError {
                    kind: TaskErrorKind::Invalid,
                    message: "the spec asks for memory_top_k, and the memory service is \
                              disabled"
                        .into(),
                };
                return Ok(Err(error));
            }
        };
        if let Some(input) = &task.body.input {
            if !message.is_empty() {
                message.push_str("\n\n");
            }
            message.push_str(&format!(
                "Input:\n{}",
                serde_json::Value::Object(input.clone())
            ));
        }
        let tokens = window(
            spec.body.context_window,
            query_engine.context_window(&spec.body.model),
        );
        let budget = tokens.map(prompt_budget);
        Ok(
            fit(&spec.body.system_prompt, &memories, &message, budget).map_err(|too_long| {
                TaskError {
                    kind: TaskErrorKind::Invalid,
                    message: format!(
                        "the task's prompt needs about {} tokens with the spec's system \
                         prompt, over the {} its context window of {} tokens leaves for a \
                         prompt (AgentSpec.context_window, or the model's)",
                        too_long.needed,
                        too_long.budget,
                        tokens.unwrap_or_default()
                    ),
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_smaller_of_the_specs_and_the_models() {
        assert_eq!(window(0, Some(8192)), Some(8192));
        assert_eq!(window(1000, Some(8192)), Some(1000));
        assert_eq!(window(100_000, Some(8192)), Some(8192));
        assert_eq!(window(500, None), Some(500));
        assert_eq!(window(0, None), None);
        assert_eq!(prompt_budget(1000), 750);
    }

    #[test]
    fn memories_give_way_least_similar_first_and_the_rest_must_fit() {
        let memories = vec!["a".repeat(40), "b".repeat(40), "c".repeat(40)];
        // Unlimited: all of them, most similar first, before the message.
        let all = fit("sys", &memories, "do it", None).unwrap();
        assert!(all.starts_with("Relevant memories"));
        assert!(all.find('a') < all.find('b') && all.find('b') < all.find('c'));
        assert!(all.ends_with("\n\ndo it"));
        // Room for about one memory: the most similar stays.
        let one = fit("sys", &memories, "do it", Some(30)).unwrap();
        assert!(one.contains(&"a".repeat(40)) && !one.contains('b'), "{one}");
        assert!(estimate_tokens(one.len() + 3) <= 30);
        // No room for any: the message alone.
        assert_eq!(fit("sys", &memories, "do it", Some(4)).unwrap(), "do it");
        // The message itself does not fit: how much it needs.
        assert_eq!(
            fit("sys", &memories, &"x".repeat(400), Some(50)),
            Err(TooLong {
                needed: 101,
                budget: 50
            })
        );
    }
}
