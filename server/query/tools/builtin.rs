//! Tools agentd runs itself ("server" tools), as the query engine sees
//! them: a name, a description and an argument schema for the model, and a
//! call. The tools themselves live outside the query engine (they use other
//! engines; see `crate::tools`), which hands them over at start-up.
//!
//! Each tool's schema is generated from the struct its arguments are parsed
//! into ([`schema_of`]), so what the model is told and what the tool
//! accepts cannot drift apart.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::types::{ToolDescription, ToolOutcome};

/// A tool agentd runs itself.
pub trait ServerTool: Send + Sync + fmt::Debug + 'static {
    /// Name, description and argument schema.
    fn describe(&self) -> ToolDescription;

    /// Runs the tool on arguments already checked against its schema. The
    /// error is for the model to read.
    fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'static, Result<Value, String>>;
}

/// The JSON Schema of `T`'s serde form, for a tool's parameters (without
/// the `$schema` and `title` keys, which providers do not want).
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    let mut schema = schemars::schema_for!(T).to_value();
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    schema
}

/// The built-in tools, by name, and the most bytes a result may have.
#[derive(Clone, Default)]
pub struct ServerTools {
    tools: BTreeMap<String, Arc<dyn ServerTool>>,
    max_result_bytes: usize,
}

impl fmt::Debug for ServerTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTools")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .field("max_result_bytes", &self.max_result_bytes)
            .finish()
    }
}

impl ServerTools {
    /// `tools`, whose results may be at most `max_result_bytes` as JSON.
    pub fn new(tools: Vec<Arc<dyn ServerTool>>, max_result_bytes: usize) -> Self {
        let tools = tools.into_iter().map(|t| (t.describe().name, t)).collect();
        Self {
            tools,
            max_result_bytes,
        }
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// The description of tool `name`, if agentd has it.
    pub fn describe(&self, name: &str) -> Option<ToolDescription> {
        self.tools.get(name).map(|t| t.describe())
    }

    /// Runs tool `name`; its result as JSON text, or an error outcome (an
    /// unknown tool, the tool's own error, a result over the size limit).
    pub fn run(
        &self,
        name: &str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'static, ToolOutcome> {
        let Some(tool) = self.tools.get(name).cloned() else {
            let message = format!("agentd has no built-in tool named {name:?}");
            return Box::pin(async move { ToolOutcome::error(message) });
        };
        let limit = self.max_result_bytes;
        let name = name.to_owned();
        Box::pin(async move {
            match tool.call(arguments).await {
                Ok(value) => {
                    let text = value.to_string();
                    if text.len() > limit {
                        ToolOutcome::error(format!(
                            "the result of {name} is {} bytes, over the limit of {limit} \
                             ([query] tool_result_max_bytes); ask for less",
                            text.len()
                        ))
                    } else {
                        ToolOutcome::ok(text)
                    }
                }
                Err(e) => ToolOutcome::error(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Args {
        /// How many.
        n: u32,
    }

    #[derive(Debug)]
    struct Repeat;

    impl ServerTool for Repeat {
        fn describe(&self) -> ToolDescription {
            ToolDescription {
                name: "repeat".into(),
                description: "Repeats x n times.".into(),
                parameters: schema_of::<Args>(),
            }
        }

        fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'static, Result<Value, String>> {
            Box::pin(async move {
                let n = arguments["n"].as_u64().unwrap_or(0) as usize;
                if n == 0 {
                    return Err("n must be positive".into());
                }
                Ok(json!("x".repeat(n)))
            })
        }
    }

    #[tokio::test]
    async fn results_errors_and_the_size_limit() {
        let tools = ServerTools::new(vec![Arc::new(Repeat)], 10);
        let schema = tools.describe("repeat").unwrap().parameters;
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["n"]["type"], "integer");
        assert!(schema.get("$schema").is_none());
        let args = |n: u32| json!({ "n": n }).as_object().unwrap().clone();
        assert_eq!(
            tools.run("repeat", args(3)).await,
            ToolOutcome::ok("\"xxx\"")
        );
        let big = tools.run("repeat", args(20)).await;
        assert!(
            big.is_error && big.content.contains("over the limit"),
            "{big:?}"
        );
        assert!(tools.run("repeat", args(0)).await.is_error);
        assert!(tools.run("nope", args(1)).await.is_error);
    }
}
