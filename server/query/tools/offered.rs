//! The tools one query offers its model: their descriptions as providers
//! send them, where each runs, how long a call may wait, and the check of
//! a call's arguments against its schema.

use std::sync::Arc;
use std::time::Duration;

use super::schema::ArgumentCheck;
use super::types::{ToolCall, ToolDescription, ToolLocation, ToolSpec};

/// A query's tools (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct OfferedTools {
    specs: Arc<Vec<ToolSpec>>,
    /// What providers are told.
    pub descriptions: Arc<Vec<ToolDescription>>,
    check: ArgumentCheck,
}

impl OfferedTools {
    /// The tools of a query (their schemas already checked at Start).
    pub fn new(specs: &[ToolSpec]) -> Self {
        let descriptions = specs
            .iter()
            .map(|t| ToolDescription {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            })
            .collect();
        Self {
            check: ArgumentCheck::new(specs),
            specs: Arc::new(specs.to_vec()),
            descriptions: Arc::new(descriptions),
        }
    }

    fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.specs.iter().find(|t| t.name == name)
    }

    /// Where tool `name` runs (a tool the query does not offer counts as
    /// the client's: its call is answered with an error anyway).
    pub fn location(&self, name: &str) -> ToolLocation {
        self.spec(name).map_or(ToolLocation::Client, |t| t.location)
    }

    /// The timeout tool `name`'s definition gives, if any.
    pub fn timeout(&self, name: &str) -> Option<Duration> {
        self.spec(name).and_then(|t| t.timeout)
    }

    /// The capability worker tool `name` needs, if the query offers it.
    pub fn capability(&self, name: &str) -> Option<String> {
        self.spec(name).map(|t| t.worker_capability.clone())
    }

    /// Why `call` cannot run, or None when it can: a tool the query does
    /// not offer, or arguments that are not an object matching its schema.
    pub fn problem(&self, call: &ToolCall) -> Option<String> {
        if self.spec(&call.name).is_none() {
            let names: Vec<&str> = self.specs.iter().map(|t| t.name.as_str()).collect();
            return Some(format!(
                "there is no tool named {:?}; the tools are: {}",
                call.name,
                names.join(", ")
            ));
        }
        self.check.problem(&call.name, &call.arguments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_tools_and_bad_arguments_are_problems() {
        let tools = OfferedTools::new(&[ToolSpec {
            name: "weather".into(),
            description: "Weather in a city.".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            location: ToolLocation::Server,
            worker_capability: String::new(),
            timeout: Some(Duration::from_secs(5)),
        }]);
        let call = |name: &str, arguments| ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments,
        };
        assert_eq!(
            tools.problem(&call("weather", json!({"city": "Oslo"}))),
            None
        );
        assert!(
            tools
                .problem(&call("weather", json!({})))
                .unwrap()
                .contains("city")
        );
        assert!(
            tools
                .problem(&call("time", json!({})))
                .unwrap()
                .contains("the tools are: weather")
        );
        assert_eq!(tools.location("weather"), ToolLocation::Server);
        assert_eq!(tools.location("time"), ToolLocation::Client);
        assert_eq!(tools.timeout("weather"), Some(Duration::from_secs(5)));
        assert_eq!(tools.descriptions[0].name, "weather");
    }
}
