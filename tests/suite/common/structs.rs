//! protobuf Struct ⇄ JSON, for requests and answers that carry
//! structured data (tool arguments and schemas, task inputs and outputs).

#![allow(dead_code)]

use serde_json::{Value, json};

/// A protobuf Struct from a JSON object.
pub fn to_struct(v: Value) -> prost_types::Struct {
    fn value(v: Value) -> prost_types::Value {
        use prost_types::value::Kind as K;
        let kind = match v {
            Value::Null => K::NullValue(0),
            Value::Bool(b) => K::BoolValue(b),
            Value::Number(n) => K::NumberValue(n.as_f64().unwrap()),
            Value::String(s) => K::StringValue(s),
            Value::Array(a) => K::ListValue(prost_types::ListValue {
                values: a.into_iter().map(value).collect(),
            }),
            Value::Object(_) => K::StructValue(to_struct(v)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    let Value::Object(map) = v else {
        panic!("not an object")
    };
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, value(v))).collect(),
    }
}

/// JSON from a protobuf Struct (numbers as f64).
pub fn from_struct(s: &prost_types::Struct) -> Value {
    fn value(v: &prost_types::Value) -> Value {
        use prost_types::value::Kind as K;
        match v.kind.as_ref() {
            None | Some(K::NullValue(_)) => Value::Null,
            Some(K::BoolValue(b)) => json!(b),
            Some(K::NumberValue(n)) => json!(n),
            Some(K::StringValue(s)) => json!(s),
            Some(K::ListValue(l)) => Value::Array(l.values.iter().map(value).collect()),
            Some(K::StructValue(s)) => from_struct(s),
        }
    }
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    )
}
