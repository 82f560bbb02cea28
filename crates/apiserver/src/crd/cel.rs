//! `x-kubernetes-validations`: CEL rules on a schema node, evaluated with `self` bound to
//! the value at that node, as upstream's apiextensions-apiserver does (the `cel` crate
//! compiles and runs them). A rule that fails gives upstream's cause: the node's path,
//! `Invalid value: "<type>": <message>` (or the rule's `reason`), the message being the
//! rule's `message`, its `messageExpression`, or `failed rule: <rule>`.
//!
//! Transition rules (those naming `oldSelf`) run only on updates, where the node was
//! there before: `oldSelf` is its old value. Nodes are matched through objects' fields
//! and the keys of `x-kubernetes-list-type: map` lists, as upstream correlates them.

use serde_json::Value;

use crate::expressions::{compile, Expression};
use crate::status::{quote, Cause};

fn rules(schema: &Value) -> impl Iterator<Item = &Value> {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn text<'a>(rule: &'a Value, field: &str) -> &'a str {
    rule.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Compiles every rule of a CRD version's schema; a rule that does not compile is a
/// cause at its own path.
pub fn check_rules(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, rule) in rules(schema).enumerate() {
        let source = text(rule, "rule");
        let field = format!("{path}.x-kubernetes-validations[{i}].rule");
        if source.is_empty() {
            causes.push(Cause::required(field));
            continue;
        }
        if let Err(e) = compile(source) {
            causes.push(Cause::invalid(
                field,
                source,
                &format!("compilation failed: {e}"),
            ));
        }
        let expression = text(rule, "messageExpression");
        if !expression.is_empty() {
            if let Err(e) = compile(expression) {
                causes.push(Cause::invalid(
                    format!("{path}.x-kubernetes-validations[{i}].messageExpression"),
                    expression,
                    &format!("messageExpression compilation failed: {e}"),
                ));
            }
        }
    }
    for (child_path, child) in super::schema::children(schema, path) {
        check_rules(child, &child_path, causes);
    }
}

/// Evaluates the rules of `schema` against `object` (a custom object, its root schema),
/// but for the transition rules.
pub fn validate(object: &Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    walk(object, None, schema, "", &mut causes);
    causes
}

/// Evaluates the transition rules of an update from `old` to `new`.
pub fn validate_transition(new: &Value, old: &Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    walk(new, Some(old), schema, "", &mut causes);
    causes
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Walks the object with its schema: without `old`, the rules that do not name
/// `oldSelf`; with it, only those that do, where the node has an old value.
fn walk(value: &Value, old: Option<&Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() {
        return;
    }
    for rule in rules(schema) {
        evaluate(rule, value, old, path, causes);
    }
    let transition = old.is_some();
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let values = schema.get("additionalProperties").filter(|a| a.is_object());
            for (name, v) in fields {
                if path.is_empty() && name == "metadata" {
                    continue;
                }
                let old_child = old.and_then(|o| o.get(name));
                if transition && old_child.is_none() {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(name)).or(values) {
                    walk(v, old_child, s, &child(path, name), causes);
                }
            }
        }
        Value::Array(items) => {
            let Some(s) = schema.get("items") else {
                return;
            };
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let is_map =
                schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
            for (i, item) in items.iter().enumerate() {
                let old_item = match old {
                    None => None,
                    // Only items of a list-map are the same item before and after.
                    Some(_) if !is_map => continue,
                    Some(o) => {
                        let same = |candidate: &&Value| {
                            keys.iter().all(|k| candidate.get(*k) == item.get(*k))
                        };
                        match o.as_array().and_then(|a| a.iter().find(same)) {
                            Some(found) => Some(found),
                            None => continue,
                        }
                    }
                };
                walk(item, old_item, s, &format!("{path}[{i}]"), causes);
            }
        }
        _ => {}
    }
}

/// The JSON type name upstream's cause shows as the invalid value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Runs a compiled rule with `self` (and `oldSelf`, for a transition) bound.
fn run(expression: &Expression, value: &Value, old: Option<&Value>) -> Result<cel::Value, String> {
    let mut vars = vec![("self", value)];
    vars.extend(old.map(|old| ("oldSelf", old)));
    expression.run(&vars)
}

fn evaluate(rule: &Value, value: &Value, old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let source = text(rule, "rule");
    let program = match compile(source) {
        Ok(program) => program,
        // Refused when the CRD was written; nothing to run.
        Err(_) => return,
    };
    // Transition rules run in the pass that has the old value, the others in the other.
    if program.names_variable("oldSelf") != old.is_some() {
        return;
    }
    let field = match text(rule, "fieldPath") {
        "" => path.to_string(),
        extra => format!("{path}{extra}"),
    };
    let message = match run(&program, value, old) {
        Ok(cel::Value::Bool(true)) => return,
        Ok(cel::Value::Bool(false)) => {
            let from_expression = match text(rule, "messageExpression") {
                "" => None,
                expression => match compile(expression).and_then(|p| run(&p, value, old)) {
                    Ok(cel::Value::String(s)) if !s.is_empty() => Some(s.to_string()),
                    _ => None,
                },
            };
            from_expression.unwrap_or_else(|| match text(rule, "message") {
                "" => format!("failed rule: {source}"),
                message => message.to_string(),
            })
        }
        Ok(_) => "rule did not evaluate to a bool".to_string(),
        Err(e) => format!("rule evaluation failed: {e}"),
    };
    let cause = match text(rule, "reason") {
        "FieldValueForbidden" => Cause::forbidden(field, &message),
        "FieldValueRequired" => Cause {
            reason: "FieldValueRequired",
            message: format!("Required value: {message}"),
            field,
        },
        "FieldValueDuplicate" => Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {}", quote(type_name(value))),
            field,
        },
        _ => Cause::invalid(field, type_name(value), &message),
    };
    causes.push(cause);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
                {"rule": "self.replicas >= 0"},
                {"rule": "self.replicas == oldSelf.replicas"},
            ],
            "properties": {
                "replicas": {"type": "integer"},
                "maxReplicas": {"type": "integer"},
                "name": {"type": "string", "x-kubernetes-validations": [
                    {"rule": "self.startsWith('w')", "reason": "FieldValueForbidden",
                     "messageExpression": "'name ' + self + ' must start with w'"}
                ]},
            },
        }}})
    }

    #[test]
    fn failing_rules_give_upstreams_causes() {
        let object = json!({"metadata": {"name": "x"}, "spec": {"replicas": 7, "maxReplicas": 5, "name": "abc"}});
        let messages: Vec<String> = validate(&object, &schema())
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            messages,
            [
                "spec: Invalid value: \"object\": replicas must not exceed maxReplicas",
                "spec.name: Forbidden: name abc must start with w",
            ]
        );
        let fine = json!({"spec": {"replicas": 1, "maxReplicas": 5, "name": "w"}});
        assert!(validate(&fine, &schema()).is_empty());
        let doubled = json!({"spec": {"replicas": 3, "maxReplicas": 1}, "x": 1});
        let arithmetic = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.spec.replicas <= self.spec.maxReplicas * 2"}]});
        assert_eq!(validate(&doubled, &arithmetic).len(), 1);
        let old = json!({"spec": {"replicas": 2, "maxReplicas": 5}});
        let changed = json!({"spec": {"replicas": 3, "maxReplicas": 5}});
        assert!(validate(&changed, &schema()).is_empty());
        assert_eq!(
            validate_transition(&changed, &old, &schema())[0].message,
            "Invalid value: \"object\": failed rule: self.replicas == oldSelf.replicas"
        );
        assert!(validate_transition(&old, &old, &schema()).is_empty());
        let negative = json!({"spec": {"replicas": -1, "maxReplicas": 5}});
        assert_eq!(
            validate(&negative, &schema())[0].message,
            "Invalid value: \"object\": failed rule: self.replicas >= 0"
        );
    }

    #[test]
    fn rules_must_compile() {
        let mut causes = Vec::new();
        let broken = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a +"}]}}});
        check_rules(&broken, "s", &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].field,
            "s.properties[spec].x-kubernetes-validations[0].rule"
        );
        assert!(
            causes[0].message.contains("compilation failed"),
            "{:?}",
            causes[0]
        );
        let mut none = Vec::new();
        check_rules(&schema(), "s", &mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
