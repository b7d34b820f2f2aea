//! Tool argument schemas: checked once when a query starts, then used to
//! check every call the model makes before anything runs it.
//!
//! A model's arguments that are not JSON, or do not match the tool's
//! schema, are never passed on: the call is answered with an error that
//! says what is wrong, and the model gets a turn to correct it.
//! References are resolved within the schema only (the `jsonschema` crate
//! is built without its file and HTTP resolvers).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::types::ToolSpec;

/// Most error lines reported for one call's arguments.
const MAX_REPORTED_ERRORS: usize = 8;

/// The schema of a tool that takes no arguments.
pub fn no_arguments() -> Value {
    json!({"type": "object", "properties": {}})
}

/// Why a schema cannot be used, or None.
pub fn schema_problem(schema: &Value) -> Option<String> {
    if !schema.is_object() {
        return Some("must be a JSON Schema object".into());
    }
    if let Some(t) = schema.get("type")
        && t != "object"
    {
        return Some(format!(
            "must describe an object (\"type\": \"object\"), got \"type\": {t}"
        ));
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Some(format!("is not a valid JSON Schema: {e}"));
    }
    jsonschema::validator_for(schema)
        .err()
        .map(|e| format!("cannot be compiled: {e}"))
}

/// The compiled argument schemas of a query's tools, by name.
#[derive(Clone, Default)]
pub struct ArgumentCheck {
    validators: HashMap<String, Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for ArgumentCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgumentCheck")
            .field("tools", &self.validators.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ArgumentCheck {
    /// Compiles the schemas of `tools` (already checked at Start; a schema
    /// that fails to compile now checks nothing rather than everything).
    pub fn new(tools: &[ToolSpec]) -> Self {
        let validators = tools
            .iter()
            .filter_map(|t| {
                let v = jsonschema::validator_for(&t.parameters).ok()?;
                Some((t.name.clone(), Arc::new(v)))
            })
            .collect();
        Self { validators }
    }

    /// Why `arguments` cannot be passed to tool `name`, or None when they
    /// can: not a JSON object (the raw text is a `Value::String`), or not
    /// matching the schema (each mismatch with its JSON pointer).
    pub fn problem(&self, name: &str, arguments: &Value) -> Option<String> {
        let arguments = match arguments {
            Value::Object(_) => arguments,
            Value::String(raw) => {
                let why = match serde_json::from_str::<Value>(raw) {
                    Err(e) => format!("not valid JSON ({e})"),
                    Ok(_) => "JSON, but not an object".to_owned(),
                };
                return Some(format!(
                    "the arguments of {name} are {why}; call it again with a JSON object"
                ));
            }
            other => {
                return Some(format!(
                    "the arguments of {name} must be a JSON object, got {other}"
                ));
            }
        };
        let validator = self.validators.get(name)?;
        let errors: Vec<String> = validator
            .iter_errors(arguments)
            .take(MAX_REPORTED_ERRORS)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                format!("at {at}: {e}")
            })
            .collect();
        if errors.is_empty() {
            return None;
        }
        Some(format!(
            "the arguments of {name} do not match its schema: {}",
            errors.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tools::types::ToolLocation;

    fn tool(schema: Value) -> ToolSpec {
        ToolSpec {
            name: "weather".into(),
            description: String::new(),
            parameters: schema,
            location: ToolLocation::Client,
            worker_capability: String::new(),
            timeout: None,
        }
    }

    #[test]
    fn schemas_must_describe_objects_and_be_valid() {
        assert!(schema_problem(&no_arguments()).is_none());
        assert!(schema_problem(&json!("x")).is_some());
        assert!(
            schema_problem(&json!({"type": "string"}))
                .unwrap()
                .contains("object")
        );
        assert!(
            schema_problem(&json!({"type": "object", "properties": {"a": {"type": 5}}})).is_some()
        );
        // No remote references.
        assert!(schema_problem(&json!({"$ref": "https://example.com/s.json"})).is_some());
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let check = ArgumentCheck::new(&[tool(json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": false
        }))]);
        assert_eq!(check.problem("weather", &json!({"city": "Paris"})), None);
        let bad = check
            .problem("weather", &json!({"city": 3, "days": 0}))
            .unwrap();
        assert!(bad.contains("/city"), "{bad}");
        assert!(bad.contains("/days"), "{bad}");
        let missing = check.problem("weather", &json!({})).unwrap();
        assert!(missing.contains("city"), "{missing}");
        let raw = check
            .problem("weather", &Value::String("{\"city\": ".into()))
            .unwrap();
        assert!(raw.contains("not valid JSON"), "{raw}");
        let array = check
            .problem("weather", &Value::String("[1]".into()))
            .unwrap();
        assert!(array.contains("not an object"), "{array}");
    }
}
