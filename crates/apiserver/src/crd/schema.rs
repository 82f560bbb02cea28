//! A custom resource version's structural schema (`openAPIV3Schema`) applied to its
//! objects, as upstream's apiextensions-apiserver does on every write: unknown fields
//! pruned (and reported, for `fieldValidation`), `default`s filled in, then validation
//! with kube-openapi's messages (`spec.replicas in body must be of type integer:
//! "string"`). Also the structural checks a CRD's schema must pass.
//!
//! The schema is walked as the JSON it is stored as; only the keywords structural
//! schemas allow are read.

use serde_json::{Map, Value};

use crate::status::{quote, Cause};

fn flag(schema: &Value, keyword: &str) -> bool {
    schema.get(keyword).and_then(Value::as_bool) == Some(true)
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// The schema for values of a map (`additionalProperties: {schema}`), if any.
fn additional(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// Removes the fields the schema does not know, returning their paths (`spec.foo`) as
/// the strict field validation names them. The root keeps `apiVersion`, `kind` and
/// `metadata` (whose contents are the API server's business, not the schema's).
pub fn prune(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_node(object, schema, "", true, &mut unknown);
    unknown
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn prune_node(
    value: &mut Value,
    schema: &Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
) {
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    match value {
        Value::Object(fields) => {
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let props = properties(schema);
            let map_values = additional(schema);
            let names: Vec<String> = fields.keys().cloned().collect();
            for name in names {
                let field_path = child(path, &name);
                if root || embedded {
                    match name.as_str() {
                        "apiVersion" | "kind" => continue,
                        "metadata" => {
                            prune_metadata(fields.get_mut(&name), &field_path, unknown);
                            continue;
                        }
                        _ => {}
                    }
                }
                match props.and_then(|p| p.get(&name)).or(map_values) {
                    Some(s) => {
                        if let Some(v) = fields.get_mut(&name) {
                            prune_node(v, s, &field_path, false, unknown);
                        }
                    }
                    None if preserve => {}
                    None => {
                        fields.shift_remove(&name);
                        unknown.push(field_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item, item_schema, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// An object's (or an embedded resource's) `metadata` is an ObjectMeta: its fields stay,
/// others go, whatever the schema says.
fn prune_metadata(metadata: Option<&mut Value>, path: &str, unknown: &mut Vec<String>) {
    const META: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "finalizers",
        "ownerReferences",
        "managedFields",
        "selfLink",
    ];
    if let Some(Value::Object(fields)) = metadata {
        let names: Vec<String> = fields.keys().cloned().collect();
        for name in names {
            if !META.contains(&name.as_str()) {
                fields.shift_remove(&name);
                unknown.push(child(path, &name));
            }
        }
    }
}

/// Fills in `default`s: a missing property with a default gets it (then its own
/// defaults), and a `null` where the schema is not `nullable` is replaced by the default.
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(fields) => {
            if let Some(props) = properties(schema) {
                for (name, prop) in props {
                    let Some(default) = prop.get("default") else {
                        continue;
                    };
                    let missing = match fields.get(name) {
                        None => true,
                        Some(Value::Null) => !flag(prop, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        fields.insert(name.clone(), default.clone());
                    }
                }
                for (name, prop) in props {
                    if let Some(v) = fields.get_mut(name) {
                        apply_defaults(v, prop);
                    }
                }
            } else if let Some(values) = additional(schema) {
                for v in fields.values_mut() {
                    apply_defaults(v, values);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// Validates an object against the schema, upstream's causes in order.
pub fn validate(object: &Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    // The root's metadata is validated as ObjectMeta elsewhere; the rest by the schema.
    let mut body = object.clone();
    if let Some(fields) = body.as_object_mut() {
        fields.shift_remove("metadata");
        fields.shift_remove("apiVersion");
        fields.shift_remove("kind");
    }
    let mut root_schema = schema.clone();
    if let Some(Value::Object(props)) = root_schema.get_mut("properties") {
        props.shift_remove("metadata");
        props.shift_remove("apiVersion");
        props.shift_remove("kind");
    }
    if let Some(Value::Array(required)) = root_schema.get_mut("required") {
        required.retain(|r| !matches!(r.as_str(), Some("metadata" | "apiVersion" | "kind")));
    }
    check(&body, &root_schema, "", &mut causes);
    causes
}

/// The JSON type name upstream reports for a value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(value: &Value, wanted: &str) -> bool {
    match (wanted, value) {
        ("", _) => true,
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        (other, v) => other == type_name(v),
    }
}

/// `Invalid value` with the value printed as upstream prints it (numbers bare).
fn invalid_value(field: &str, value: &Value, detail: String) -> Cause {
    let shown = match value {
        Value::String(s) => quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "\"null\"".into(),
        Value::Array(_) => "\"array\"".into(),
        Value::Object(_) => "\"object\"".into(),
    };
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {shown}: {detail}"),
        field: field.to_string(),
    }
}

fn check(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let shown_path = if path.is_empty() { "body" } else { path };
    let in_body = if path.is_empty() {
        "body".to_string()
    } else {
        format!("{path} in body")
    };
    if value.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if flag(schema, "x-kubernetes-preserve-unknown-fields") && schema_type(schema).is_empty() {
            return;
        }
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !matches!(value, Value::String(_)) && !type_matches(value, "integer") {
            causes.push(invalid_value(
                shown_path,
                &Value::String(type_name(value).into()),
                format!(
                    "{in_body} must be of type integer,string: {}",
                    quote(type_name(value))
                ),
            ));
            return;
        }
    } else {
        let wanted = schema_type(schema);
        if !type_matches(value, wanted) {
            causes.push(invalid_value(
                shown_path,
                &Value::String(type_name(value).into()),
                format!(
                    "{in_body} must be of type {wanted}: {}",
                    quote(type_name(value))
                ),
            ));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            let supported: Vec<String> = options
                .iter()
                .map(|o| match o {
                    Value::String(s) => quote(s),
                    other => other.to_string(),
                })
                .collect();
            let shown = match value {
                Value::String(s) => quote(s),
                other => other.to_string(),
            };
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: {shown}: supported values: {}",
                    supported.join(", ")
                ),
                field: shown_path.to_string(),
            });
        }
    }
    match value {
        Value::Number(n) => check_number(value, n, schema, shown_path, &in_body, causes),
        Value::String(s) => check_string(value, s, schema, shown_path, &in_body, causes),
        Value::Array(items) => {
            check_count(
                items.len(),
                schema,
                Counted::Items,
                shown_path,
                &in_body,
                causes,
            );
            check_list_type(items, schema, shown_path, causes);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, &format!("{shown_path}[{i}]"), causes);
                }
            }
        }
        Value::Object(fields) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        causes.push(Cause {
                            reason: "FieldValueRequired",
                            message: "Required value".into(),
                            field: child(path, name),
                        });
                    }
                }
            }
            check_count(
                fields.len(),
                schema,
                Counted::Properties,
                shown_path,
                &in_body,
                causes,
            );
            if flag(schema, "x-kubernetes-embedded-resource") {
                for required in ["apiVersion", "kind"] {
                    if fields
                        .get(required)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        causes.push(Cause {
                            reason: "FieldValueRequired",
                            message: "Required value: must not be empty".into(),
                            field: child(path, required),
                        });
                    }
                }
            }
            let props = properties(schema);
            let map_values = additional(schema);
            // By field name, so the causes come in a stable order.
            let mut sorted: Vec<(&String, &Value)> = fields.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            for (name, v) in sorted {
                let field_schema = props.and_then(|p| p.get(name)).or(map_values);
                if let Some(s) = field_schema {
                    check(v, s, &child(path, name), causes);
                }
            }
        }
        _ => {}
    }
}

/// `x-kubernetes-list-type`: a `set` holds each value once, a `map` each key once.
fn check_list_type(items: &[Value], schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let identity = |item: &Value| -> Value {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => Value::Object(
                keys.iter()
                    .filter_map(|k| Some((k.to_string(), item.get(*k)?.clone())))
                    .collect(),
            ),
            _ => item.clone(),
        }
    };
    if !matches!(
        schema.get("x-kubernetes-list-type").and_then(Value::as_str),
        Some("set" | "map")
    ) {
        return;
    }
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = identity(item);
        if seen.contains(&id) {
            let shown = match &id {
                Value::String(s) => quote(s),
                // Upstream prints a map key as Go prints the map.
                Value::Object(fields) => format!(
                    "map[string]interface {{}}{{{}}}",
                    fields
                        .iter()
                        .map(|(k, v)| format!("{}:{v}", quote(k)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => other.to_string(),
            };
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {shown}"),
                field: format!("{path}[{i}]"),
            });
        } else {
            seen.push(id);
        }
    }
}

/// What `maxItems`/`minItems` or `maxProperties`/`minProperties` count.
#[derive(Clone, Copy)]
enum Counted {
    Items,
    Properties,
}

/// A list's or object's size against the schema's bounds, with upstream's messages
/// (the upper bound says "items" for both, as upstream's does).
fn check_count(
    count: usize,
    schema: &Value,
    counted: Counted,
    shown_path: &str,
    in_body: &str,
    causes: &mut Vec<Cause>,
) {
    let (max_key, min_key, noun) = match counted {
        Counted::Items => ("maxItems", "minItems", "items"),
        Counted::Properties => ("maxProperties", "minProperties", "properties"),
    };
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64) {
        if count as u64 > max {
            causes.push(Cause {
                reason: "FieldValueTooMany",
                message: format!("Too many: {count}: must have at most {max} items"),
                field: shown_path.to_string(),
            });
        }
    }
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64) {
        if (count as u64) < min {
            causes.push(invalid_value(
                shown_path,
                &Value::from(count),
                format!("{in_body} should have at least {min} {noun}"),
            ));
        }
    }
}

fn check_number(
    value: &Value,
    n: &serde_json::Number,
    schema: &Value,
    path: &str,
    in_body: &str,
    causes: &mut Vec<Cause>,
) {
    let Some(x) = n.as_f64() else {
        return;
    };
    let bound = |keyword: &str| schema.get(keyword).and_then(Value::as_f64);
    let show = |b: f64| {
        if b.fract() == 0.0 {
            format!("{}", b as i64)
        } else {
            b.to_string()
        }
    };
    if let Some(max) = bound("maximum") {
        if flag(schema, "exclusiveMaximum") && x >= max {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} should be less than {}", show(max)),
            ));
        } else if x > max {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} should be less than or equal to {}", show(max)),
            ));
        }
    }
    if let Some(min) = bound("minimum") {
        if flag(schema, "exclusiveMinimum") && x <= min {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} should be greater than {}", show(min)),
            ));
        } else if x < min {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} should be greater than or equal to {}", show(min)),
            ));
        }
    }
    if let Some(m) = bound("multipleOf") {
        if m > 0.0 && (x / m).fract() != 0.0 {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} should be a multiple of {}", show(m)),
            ));
        }
    }
    if schema_type(schema) == "integer" {
        let fits = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => x >= i32::MIN as f64 && x <= i32::MAX as f64,
            _ => true,
        };
        if !fits {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} must be of type int32: {}", quote(&show(x))),
            ));
        }
    }
}

fn check_string(
    value: &Value,
    s: &str,
    schema: &Value,
    path: &str,
    in_body: &str,
    causes: &mut Vec<Cause>,
) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be more than {max} bytes"),
                field: path.to_string(),
            });
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} should be at least {min} chars long"),
            ));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match PATTERNS.get(pattern, regex::Regex::new) {
            Ok(re) if !re.is_match(s) => causes.push(invalid_value(
                path,
                value,
                format!("{in_body} should match '{pattern}'"),
            )),
            _ => {}
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        if !format_matches(format, s) {
            causes.push(invalid_value(
                path,
                value,
                format!("{in_body} must be of type {format}: {}", quote(s)),
            ));
        }
    }
}

/// Patterns compiled once for all the writes that check them.
static PATTERNS: std::sync::LazyLock<super::Memo<regex::Regex>> =
    std::sync::LazyLock::new(super::Memo::new);

/// The string formats upstream checks (kube-openapi's registry), the common ones.
fn format_matches(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()
        }),
        "uuid" => uuid::Uuid::parse_str(s).is_ok() && s.len() == 36,
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.')),
        "hostname" => crate::strategy::is_dns1123_subdomain(s),
        _ => true,
    }
}

/// The children of a schema node, with the paths upstream names them by in a CRD's
/// errors (`….properties[spec].items`).
pub fn children<'a>(schema: &'a Value, path: &str) -> Vec<(String, &'a Value)> {
    let mut out = Vec::new();
    if let Some(props) = properties(schema) {
        out.extend(
            props
                .iter()
                .map(|(name, s)| (format!("{path}.properties[{name}]"), s)),
        );
    }
    if let Some(items) = schema.get("items") {
        out.push((format!("{path}.items"), items));
    }
    if let Some(values) = additional(schema) {
        out.push((format!("{path}.additionalProperties"), values));
    }
    out
}

/// A schema's `default`s must hold by the schema they stand in, and keep no field it
/// would prune: upstream refuses the CRD otherwise.
pub fn validate_defaults(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(default) = schema.get("default") {
        let at = format!("{path}.default");
        check(default, schema, &at, causes);
        let mut pruned = default.clone();
        for unknown in prune(&mut pruned, schema) {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {}: must not have unknown fields",
                    quote(&unknown)
                ),
                field: at.clone(),
            });
        }
    }
    for (child_path, child) in children(schema, path) {
        validate_defaults(child, &child_path, causes);
    }
}

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// The structural checks of a CRD version's schema: every specified field has a type
/// (unless it is int-or-string or keeps unknown fields), types are known, the root is
/// an object.
pub fn validate_structural(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    match schema_type(schema) {
        "object" => {}
        "" => causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: must not be empty at the root".into(),
            field: format!("{path}.type"),
        }),
        other => causes.push(Cause::invalid(
            format!("{path}.type"),
            other,
            "must be object at the root",
        )),
    }
    // The root's metadata is ObjectMeta: a schema may narrow its name, nothing more.
    if let Some(metadata) = properties(schema).and_then(|p| p.get("metadata")) {
        let others = properties(metadata)
            .is_some_and(|p| p.keys().any(|k| k != "name" && k != "generateName"))
            || metadata
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "object")
            || additional(metadata).is_some()
            || metadata
                .get("x-kubernetes-preserve-unknown-fields")
                .is_some();
        if others {
            causes.push(Cause::forbidden(
                format!("{path}.properties[metadata]"),
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    structural_node(schema, path, causes);
}

fn structural_node(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: false: must be true or undefined".into(),
            field: format!("{path}.x-kubernetes-preserve-unknown-fields"),
        });
    }
    let ty = schema_type(schema);
    if !ty.is_empty() && !TYPES.contains(&ty) {
        causes.push(Cause::unsupported(format!("{path}.type"), ty, TYPES));
    }
    if let Some(props) = properties(schema) {
        for (name, prop) in props {
            let prop_path = format!("{path}.properties[{name}]");
            if schema_type(prop).is_empty()
                && !flag(prop, "x-kubernetes-int-or-string")
                && !flag(prop, "x-kubernetes-preserve-unknown-fields")
            {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: must not be empty for specified object fields".into(),
                    field: format!("{prop_path}.type"),
                });
            }
            structural_node(prop, &prop_path, causes);
        }
    }
    if let Some(items) = schema.get("items") {
        let items_path = format!("{path}.items");
        if schema_type(items).is_empty()
            && !flag(items, "x-kubernetes-int-or-string")
            && !flag(items, "x-kubernetes-preserve-unknown-fields")
        {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: must not be empty for specified array items".into(),
                field: format!("{items_path}.type"),
            });
        }
        structural_node(items, &items_path, causes);
    } else if ty == "array" {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: must be specified".into(),
            field: format!("{path}.items"),
        });
    }
    if let Some(values) = additional(schema) {
        if properties(schema).is_some() {
            causes.push(Cause::forbidden(
                format!("{path}.additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        structural_node(values, &format!("{path}.additionalProperties"), causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "green"], "default": "red"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5, "minLength": 2},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "when": {"type": "string", "format": "date-time", "nullable": true},
                        "nested": {"type": "object", "default": {}, "properties": {
                            "depth": {"type": "integer", "default": 3}
                        }},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                            "x-kubernetes-preserve-unknown-fields": true},
                    },
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            },
        })
    }

    fn messages(object: Value) -> Vec<String> {
        validate(&object, &schema())
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn unknown_fields_are_pruned_and_named() {
        let mut object = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "labels": {"a": "b"}, "labelz": {}},
            "spec": {"size": 2, "extra": 1, "free": {"anything": [1]}, "labels": {"x": "y"},
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1}, "spec": {}}},
            "other": true,
        });
        let unknown = prune(&mut object, &schema());
        assert_eq!(
            unknown,
            [
                "metadata.labelz",
                "spec.extra",
                "spec.template.metadata.bogus",
                "other"
            ]
        );
        assert_eq!(object["metadata"]["labels"]["a"], "b");
        assert_eq!(object["spec"]["free"]["anything"], json!([1]));
        assert_eq!(object["spec"]["template"]["spec"], json!({}));
        assert!(object.get("other").is_none());
    }

    #[test]
    fn defaults_fill_missing_fields_and_nested_defaults() {
        let mut object = json!({"spec": {"size": 1}});
        apply_defaults(&mut object, &schema());
        assert_eq!(object["spec"]["color"], "red");
        assert_eq!(object["spec"]["nested"], json!({"depth": 3}));
        let mut nulled = json!({"spec": {"size": 1, "color": null, "when": null}});
        apply_defaults(&mut nulled, &schema());
        assert_eq!(nulled["spec"]["color"], "red");
        assert_eq!(nulled["spec"]["when"], Value::Null);
    }

    #[test]
    fn validation_speaks_upstreams_words() {
        assert_eq!(
            messages(json!({"spec": {"size": "big"}})),
            ["spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""]
        );
        assert_eq!(messages(json!({"spec": {}})), ["spec.size: Required value"]);
        assert_eq!(
            messages(json!({"spec": {"size": 11, "color": "blue"}})),
            [
                "spec.color: Unsupported value: \"blue\": supported values: \"red\", \"green\"",
                "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10",
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 0, "name": "ABCDEF"}})),
            [
                "spec.name: Too long: may not be more than 5 bytes",
                "spec.name: Invalid value: \"ABCDEF\": spec.name in body should match '^[a-z]+$'",
                "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1",
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "tags": ["a", "b", "c"], "name": "a"}})),
            [
                "spec.name: Invalid value: \"a\": spec.name in body should be at least 2 chars long",
                "spec.tags: Too many: 3: must have at most 2 items",
            ]
        );
        assert!(messages(
            json!({"spec": {"size": 1, "port": "http", "when": null, "free": {"x": 1}}})
        )
        .is_empty());
        assert!(messages(json!({"spec": {"size": 1, "port": 80}})).is_empty());
        assert_eq!(
            messages(json!({"spec": {"size": 1, "port": true}})),
            ["spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\""]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "when": "yesterday"}})),
            ["spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\""]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "template": {"kind": "Pod"}}})),
            ["spec.template.apiVersion: Required value: must not be empty"]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "labels": {"a": 1}}})),
            ["spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\""]
        );
    }

    #[test]
    fn list_types_refuse_duplicates() {
        let schema = json!({"type": "object", "properties": {
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        }});
        let object = json!({"tags": ["a", "b", "a"], "ports": [{"name": "x", "port": 1}, {"name": "x", "port": 2}]});
        let messages: Vec<String> = validate(&object, &schema)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            messages,
            [
                "ports[1]: Duplicate value: map[string]interface {}{\"name\":\"x\"}",
                "tags[2]: Duplicate value: \"a\"",
            ]
        );
    }

    #[test]
    fn defaults_must_hold_by_their_schema() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "color": {"type": "string", "enum": ["red"], "default": "blue"},
            "size": {"type": "integer", "default": 3},
            "nested": {"type": "object", "default": {"a": 1, "b": "x"}, "properties": {"a": {"type": "integer"}}},
        }}}});
        let mut causes = Vec::new();
        validate_defaults(&schema, "s", &mut causes);
        let messages: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            messages,
            [
                "s.properties[spec].properties[color].default: Unsupported value: \"blue\": supported values: \"red\"",
                "s.properties[spec].properties[nested].default: Invalid value: \"b\": must not have unknown fields",
            ]
        );
    }

    #[test]
    fn structural_schemas_need_types() {
        let mut causes = Vec::new();
        validate_structural(
            &json!({"type": "object", "properties": {
                "spec": {"properties": {"a": {"type": "strin"}}},
                "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": false},
            }}),
            "s",
            &mut causes,
        );
        let messages: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            messages,
            [
                "s.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
                "s.properties[spec].type: Required value: must not be empty for specified object fields",
                "s.properties[spec].properties[a].type: Unsupported value: \"strin\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
                "s.properties[status].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
            ]
        );
    }
}
