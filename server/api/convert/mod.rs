//! Conversions between the generated `agentd.v1` types and the engines'
//! domain types, one file per service, as `From` / `TryFrom` impls that
//! destructure every field of the generated message: a field added to a
//! .proto file fails to compile here until it is handled.
//!
//! - [`memory`], [`query`], [`embedding`], [`agents`] (with [`swarms`] and
//!   the Work stream's [`workers`]): each service's messages.
//! - this file: protobuf's well-known types (`Struct` / `Value` as
//!   `serde_json`, `Timestamp`, `Duration`) and the shared `Timing` and
//!   `TokenUsage`.
//!
//! Paths in conversion errors are relative to the message converted; the
//! caller puts them under the field the message sits in
//! ([`crate::error::Error::within`]).

pub(crate) mod agents;
pub(crate) mod embedding;
pub(crate) mod memory;
pub(crate) mod query;
pub(crate) mod swarms;
pub(crate) mod workers;

use std::time::{Duration, Instant};

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::common::timing::Timing;
use crate::error::{Error, Result};
use crate::pb::v1 as pb;

/// A protobuf Value as JSON. Non-finite numbers have no JSON form and are
/// refused, naming `field`.
pub fn json_value(value: prost_types::Value, field: &str) -> Result<Value> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => Value::Number(
            Number::from_f64(n)
                .ok_or_else(|| Error::invalid(field, format!("{n} is not a finite number")))?,
        ),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| json_value(v, field))
                .collect::<Result<_>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(json_object(s, field)?),
    })
}

/// A protobuf Struct as a JSON object.
pub fn json_object(s: prost_types::Struct, field: &str) -> Result<Map<String, Value>> {
    s.fields
        .into_iter()
        .map(|(k, v)| {
            let inner = format!("{field}.{k}");
            Ok((k, json_value(v, &inner)?))
        })
        .collect()
}

/// A JSON value as a protobuf Value (numbers become doubles, as in
/// protobuf's JSON mapping).
pub fn proto_value(value: Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(proto_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(proto_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf Struct.
pub fn proto_struct(map: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, proto_value(v))).collect(),
    }
}

/// Unix milliseconds as a protobuf Timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf Duration as a std one; negative or malformed durations are
/// refused, naming `field`.
pub fn duration_from(d: prost_types::Duration, field: &str) -> Result<Duration> {
    Duration::try_from(d).map_err(|_| Error::invalid(field, "must be a non-negative duration"))
}

/// A std Duration as a protobuf one (saturating at its maximum).
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 999_999_999,
    })
}

/// An engine's timing, with the `total` the handler measured since
/// `received`.
pub fn timing(t: Timing, received: Instant) -> pb::Timing {
    let Timing { queue, compute } = t;
    pb::Timing {
        queue: Some(duration(queue)),
        compute: Some(duration(compute)),
        total: Some(duration(received.elapsed())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let original = json!({"a": 1.5, "b": [true, null, "x"], "c": {"d": -2.0}});
        let Value::Object(map) = original.clone() else {
            unreachable!()
        };
        let back = json_object(proto_struct(map), "payload").unwrap();
        assert_eq!(Value::Object(back), original);
    }

    #[test]
    fn non_finite_numbers_are_refused_with_their_path() {
        let s = prost_types::Struct {
            fields: [(
                "x".to_string(),
                prost_types::Value {
                    kind: Some(Kind::NumberValue(f64::INFINITY)),
                },
            )]
            .into(),
        };
        let err = json_object(s, "points[0].payload").unwrap_err();
        assert!(err.to_string().contains("points[0].payload.x"), "{err}");
    }
}
