//! Payload filters: the conditions Search, Count and DeletePoints apply to
//! the points' JSON payloads (memory.proto `Filter`).
//!
//! A filter is checked once when it arrives ([`Filter::validate`]: sizes,
//! nesting, well-formed ranges), then evaluated per point
//! ([`Filter::matches`]). Semantics, as documented in the proto:
//! - `eq`: the field equals the value; on a list field, any element does;
//!   numbers compare by value (1 equals 1.0);
//! - `in`: `eq` against any of the values;
//! - `range`: the field is a number within the bounds (a list field matches
//!   when any element does);
//! - `exists`: the field is present and not null (or, with false, absent or
//!   null);
//! - `all_of` / `any_of` / `none_of`: and / or / nor of sub-filters.
//!
//! Keys are dotted paths into nested objects (`author.name`).

use serde_json::Value;

use crate::error::Violations;

/// Deepest nesting of compound filters.
pub const MAX_DEPTH: usize = 8;
/// Most sub-filters of one compound filter.
pub const MAX_CHILDREN: usize = 64;
/// Most values of one `in` condition.
pub const MAX_IN_VALUES: usize = 1024;

/// Numeric bounds; `None` is open.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range {
    /// Greater than.
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// A test on one payload field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Equal to the value.
    Eq(Value),
    /// Equal to one of the values.
    In(Vec<Value>),
    /// A number within the bounds.
    Range(Range),
    /// Present and not null (true), or absent or null (false).
    Exists(bool),
}

/// A payload filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A condition on the field at a dotted path.
    Field {
        /// Dotted path.
        key: String,
        /// The test.
        condition: Condition,
    },
    /// Every sub-filter matches.
    AllOf(Vec<Filter>),
    /// At least one sub-filter matches.
    AnyOf(Vec<Filter>),
    /// No sub-filter matches.
    NoneOf(Vec<Filter>),
}

/// The value at a dotted path, if present.
fn lookup<'a>(payload: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(payload, |v, part| v.as_object()?.get(part))
}

/// JSON equality with numbers compared by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The field's value, or each element of it when it is a list.
fn candidates(v: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match v {
        Value::Array(items) => Box::new(items.iter()),
        other => Box::new(std::iter::once(other)),
    }
}

impl Filter {
    /// Whether `payload` (a JSON object) passes.
    pub fn matches(&self, payload: &Value) -> bool {
        match self {
            Filter::Field { key, condition } => {
                let field = lookup(payload, key);
                match condition {
                    Condition::Exists(want) => field.is_some_and(|v| !v.is_null()) == *want,
                    Condition::Eq(value) => {
                        field.is_some_and(|v| candidates(v).any(|c| same(c, value)))
                    }
                    Condition::In(values) => field.is_some_and(|v| {
                        candidates(v).any(|c| values.iter().any(|value| same(c, value)))
                    }),
                    Condition::Range(range) => field.is_some_and(|v| {
                        candidates(v).any(|c| c.as_f64().is_some_and(|x| range.contains(x)))
                    }),
                }
            }
            Filter::AllOf(filters) => filters.iter().all(|f| f.matches(payload)),
            Filter::AnyOf(filters) => filters.iter().any(|f| f.matches(payload)),
            Filter::NoneOf(filters) => !filters.iter().any(|f| f.matches(payload)),
        }
    }

    /// Checks sizes, nesting and bounds; `field` is where the filter sits in
    /// the request (e.g. "filter"), so violations name the exact path.
    pub fn validate(&self, field: &str, v: &mut Violations) {
        self.check(field, 1, v);
    }

    fn check(&self, path: &str, depth: usize, out: &mut Violations) {
        if depth > MAX_DEPTH {
            out.add(path, format!("filters nest at most {MAX_DEPTH} deep"));
            return;
        }
        let (name, children) = match self {
            Filter::Field { key, condition } => {
                if key.is_empty() || key.split('.').any(str::is_empty) {
                    out.add(
                        format!("{path}.field.key"),
                        format!("must be a dotted path of non-empty names, got {key:?}"),
                    );
                }
                match condition {
                    Condition::In(values) if values.is_empty() || values.len() > MAX_IN_VALUES => {
                        out.add(
                            format!("{path}.field.in_values"),
                            format!(
                                "must hold 1 to {MAX_IN_VALUES} values, got {}",
                                values.len()
                            ),
                        );
                    }
                    Condition::Range(r) => {
                        let bounds = [r.gt, r.gte, r.lt, r.lte];
                        if bounds.iter().all(Option::is_none) {
                            out.add(format!("{path}.field.range"), "needs at least one bound");
                        } else if bounds.iter().flatten().any(|b| !b.is_finite()) {
                            out.add(
                                format!("{path}.field.range"),
                                "bounds must be finite numbers",
                            );
                        }
                    }
                    _ => {}
                }
                return;
            }
            Filter::AllOf(c) => ("all_of", c),
            Filter::AnyOf(c) => ("any_of", c),
            Filter::NoneOf(c) => ("none_of", c),
        };
        if children.is_empty() || children.len() > MAX_CHILDREN {
            out.add(
                format!("{path}.{name}"),
                format!(
                    "must hold 1 to {MAX_CHILDREN} filters, got {}",
                    children.len()
                ),
            );
        }
        for (i, child) in children.iter().enumerate() {
            child.check(&format!("{path}.{name}.filters[{i}]"), depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::Error;

    fn check(f: &Filter) -> crate::error::Result<()> {
        let mut violations = Violations::new();
        f.validate("filter", &mut violations);
        violations.finish()
    }

    fn field(key: &str, condition: Condition) -> Filter {
        Filter::Field {
            key: key.into(),
            condition,
        }
    }

    fn doc() -> Value {
        json!({
            "lang": "en",
            "stars": 4.5,
            "year": 2021,
            "tags": ["rust", "grpc"],
            "author": {"name": "Ada", "born": 1815},
            "draft": null
        })
    }

    #[test]
    fn conditions_follow_the_documented_semantics() {
        let d = doc();
        assert!(field("lang", Condition::Eq(json!("en"))).matches(&d));
        assert!(!field("lang", Condition::Eq(json!("fr"))).matches(&d));
        assert!(
            field("year", Condition::Eq(json!(2021.0))).matches(&d),
            "numbers by value"
        );
        assert!(
            field("tags", Condition::Eq(json!("grpc"))).matches(&d),
            "any list element"
        );
        assert!(
            field("author.name", Condition::Eq(json!("Ada"))).matches(&d),
            "dotted path"
        );
        assert!(field("lang", Condition::In(vec![json!("de"), json!("en")])).matches(&d));
        let r = |gte, lt| {
            Condition::Range(Range {
                gte,
                lt,
                ..Range::default()
            })
        };
        assert!(field("stars", r(Some(4.0), Some(5.0))).matches(&d));
        assert!(!field("stars", r(Some(4.6), None)).matches(&d));
        assert!(
            !field("lang", r(Some(0.0), None)).matches(&d),
            "strings are not numbers"
        );
        assert!(field("author.born", r(None, Some(1900.0))).matches(&d));
        assert!(field("lang", Condition::Exists(true)).matches(&d));
        assert!(
            !field("draft", Condition::Exists(true)).matches(&d),
            "null counts as absent"
        );
        assert!(field("missing", Condition::Exists(false)).matches(&d));
        assert!(!field("missing", Condition::Eq(json!(null))).matches(&d));
    }

    #[test]
    fn compound_filters_combine() {
        let d = doc();
        let en = field("lang", Condition::Eq(json!("en")));
        let fr = field("lang", Condition::Eq(json!("fr")));
        assert!(
            Filter::AllOf(vec![
                en.clone(),
                field("tags", Condition::Eq(json!("rust")))
            ])
            .matches(&d)
        );
        assert!(!Filter::AllOf(vec![en.clone(), fr.clone()]).matches(&d));
        assert!(Filter::AnyOf(vec![fr.clone(), en.clone()]).matches(&d));
        assert!(Filter::NoneOf(vec![fr.clone()]).matches(&d));
        assert!(!Filter::NoneOf(vec![fr, en]).matches(&d));
    }

    #[test]
    fn validation_names_the_exact_path() {
        let bad = Filter::AllOf(vec![
            field("ok", Condition::Eq(json!(1))),
            Filter::AnyOf(vec![]),
            field("a..b", Condition::Range(Range::default())),
            field("x", Condition::In(vec![])),
        ]);
        let Err(Error::InvalidArgument(v)) = check(&bad) else {
            panic!("expected InvalidArgument")
        };
        let paths: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            paths,
            [
                "filter.all_of.filters[1].any_of",
                "filter.all_of.filters[2].field.key",
                "filter.all_of.filters[2].field.range",
                "filter.all_of.filters[3].field.in_values",
            ]
        );
        let mut deep = field("k", Condition::Exists(true));
        for _ in 0..MAX_DEPTH {
            deep = Filter::AllOf(vec![deep]);
        }
        assert!(
            check(&deep)
                .unwrap_err()
                .to_string()
                .contains("nest at most")
        );
        let nan = field(
            "k",
            Condition::Range(Range {
                gt: Some(f64::NAN),
                ..Range::default()
            }),
        );
        assert!(check(&nan).is_err());
    }
}
