//! The JSONPath subset CRDs use for printer columns and the scale subresource's
//! paths: `.a.b`, `[n]`, `['key']`, `[*]` and `[?(@.field=="value")]` filters.

use serde_json::{Map, Value};

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.path=="value")]`: the elements whose `path` equals `value`.
    Filter(Vec<String>, Value),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            // A filter may contain `]` only inside its quoted value; none of ours do.
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse() {
                steps.push(Step::Index(i));
            } else if let Some(filter) =
                inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let (field, value) = filter.split_once("==")?;
                let value = value.trim().replace('\'', "\"");
                let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
                let field = field.trim().split('.').map(str::to_string).collect();
                steps.push(Step::Filter(field, value));
            } else {
                let key = inner.trim_matches(|c| c == '\'' || c == '"');
                steps.push(Step::Field(key.to_string()));
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Some(steps)
}

/// Every value `path` selects in `object`, in order.
pub fn select<'a>(object: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut current = vec![object];
    for step in &steps {
        let mut next = Vec::new();
        for value in current {
            match step {
                Step::Field(name) => next.extend(value.get(name)),
                Step::Index(i) => next.extend(value.get(*i)),
                Step::All => match value {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(fields) => next.extend(fields.values()),
                    _ => {}
                },
                Step::Filter(field, wanted) => {
                    if let Value::Array(items) = value {
                        next.extend(items.iter().filter(|item| {
                            field
                                .iter()
                                .try_fold(*item, |v, f| v.get(f))
                                .is_some_and(|v| v == wanted)
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current
}

/// The first value `path` selects.
pub fn get<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    select(object, path).into_iter().next()
}

/// Sets the value at a path of plain fields (`.spec.replicas`), creating the objects
/// on the way. Paths with indexes or filters are not settable.
pub fn set(object: &mut Value, path: &str, value: Value) -> bool {
    let Some(steps) = parse(path) else {
        return false;
    };
    let mut current = object;
    for (i, step) in steps.iter().enumerate() {
        let Step::Field(name) = step else {
            return false;
        };
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Some(fields) = current.as_object_mut() else {
            return false;
        };
        if i == steps.len() - 1 {
            fields.insert(name.clone(), value);
            return true;
        }
        current = fields
            .entry(name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_fields_indexes_and_filters() {
        let o = json!({"spec": {"replicas": 3, "list": [{"n": "a"}, {"n": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}});
        assert_eq!(get(&o, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(get(&o, "{.spec.list[1].n}"), Some(&json!("b")));
        assert_eq!(select(&o, ".spec.list[*].n"), [&json!("a"), &json!("b")]);
        assert_eq!(
            get(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(get(&o, ".spec['replicas']"), Some(&json!(3)));
        assert_eq!(get(&o, ".spec.missing"), None);
    }

    #[test]
    fn sets_plain_paths() {
        let mut o = json!({});
        assert!(set(&mut o, ".spec.replicas", json!(2)));
        assert_eq!(o, json!({"spec": {"replicas": 2}}));
        assert!(!set(&mut o, ".spec.list[0]", json!(1)));
    }
}
