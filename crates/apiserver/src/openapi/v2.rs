//! `/openapi/v2`: one Swagger 2.0 document with every definition, in JSON or in the
//! protobuf form kubectl asks for (gnostic's `openapi.v2.Document`).
//!
//! kubectl falls back to it when a group-version's OpenAPI v3 document does not serve
//! (`kubectl explain --output plaintext-openapiv2`, client-side validation). The document
//! has no paths: kubectl's apply finds patch types through them and, without them, uses
//! its built-in types, which is what it does when the v3 documents do not help.

use serde_json::{json, Map, Value};

use super::definitions::{Definitions, REF_PREFIX};

const V2_PREFIX: &str = "#/definitions/";

pub fn document(definitions: &Definitions) -> Value {
    let all: Map<String, Value> = definitions
        .schemas
        .iter()
        .map(|(name, schema)| (name.clone(), to_v2(schema)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": {},
        "definitions": all,
    })
}

/// A definition in Swagger 2.0's form: references point into `#/definitions/` (siblings
/// of a `$ref`, such as a field's description, stay, as upstream's v2 document has them).
fn to_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(reference)) => (
                        k.clone(),
                        Value::String(match reference.strip_prefix(REF_PREFIX) {
                            Some(name) => format!("{V2_PREFIX}{name}"),
                            None => reference.clone(),
                        }),
                    ),
                    _ => (k.clone(), to_v2(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

/// The document in gnostic's protobuf encoding (`openapiv2/OpenAPIv2.proto`): the fields of
/// `Document`, `Schema` and their parts that a Kubernetes schema uses. Values with no field
/// of their own (defaults, enums, extensions) travel as YAML text, as gnostic carries them;
/// JSON is YAML.
pub fn protobuf(document: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, document["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Vec::new();
    string_field(
        &mut info,
        1,
        document["info"]["title"].as_str().unwrap_or(""),
    );
    string_field(
        &mut info,
        2,
        document["info"]["version"].as_str().unwrap_or(""),
    );
    message_field(&mut out, 2, &info);
    message_field(&mut out, 8, &[]);
    if let Some(definitions) = document["definitions"].as_object() {
        message_field(&mut out, 9, &named_schemas(definitions));
    }
    out
}

/// `Definitions` and `Properties` alike: `repeated NamedSchema additional_properties = 1`.
fn named_schemas(schemas: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, schema) in schemas {
        let mut named = Vec::new();
        string_field(&mut named, 1, name);
        message_field(&mut named, 2, &encode_schema(schema));
        message_field(&mut out, 1, &named);
    }
    out
}

fn encode_schema(schema: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(map) = schema.as_object() else {
        return out;
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str);
    if let Some(reference) = text("$ref") {
        string_field(&mut out, 1, reference);
    }
    if let Some(format) = text("format") {
        string_field(&mut out, 2, format);
    }
    if let Some(description) = text("description") {
        string_field(&mut out, 4, description);
    }
    if let Some(default) = map.get("default") {
        message_field(&mut out, 5, &any(default));
    }
    for required in map
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        string_field(&mut out, 19, required);
    }
    for value in map
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message_field(&mut out, 20, &any(value));
    }
    match map.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            let mut item = Vec::new();
            varint_field(&mut item, 2, u64::from(*allowed));
            message_field(&mut out, 21, &item);
        }
        Some(value @ Value::Object(_)) => {
            let mut item = Vec::new();
            message_field(&mut item, 1, &encode_schema(value));
            message_field(&mut out, 21, &item);
        }
        _ => {}
    }
    if let Some(kind) = text("type") {
        let mut item = Vec::new();
        string_field(&mut item, 1, kind);
        message_field(&mut out, 22, &item);
    }
    if let Some(items) = map.get("items") {
        let mut item = Vec::new();
        message_field(&mut item, 1, &encode_schema(items));
        message_field(&mut out, 23, &item);
    }
    for part in map
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message_field(&mut out, 24, &encode_schema(part));
    }
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        message_field(&mut out, 25, &named_schemas(properties));
    }
    for (name, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Vec::new();
        string_field(&mut named, 1, name);
        message_field(&mut named, 2, &any(value));
        message_field(&mut out, 31, &named);
    }
    out
}

/// gnostic's `Any`, by its `yaml` field.
fn any(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 2, &value.to_string());
    out
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    varint(out, u64::from(number) << 3);
    varint(out, value);
}

fn message_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    varint(out, (u64::from(number) << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn string_field(out: &mut Vec<u8>, number: u32, text: &str) {
    message_field(out, number, text.as_bytes());
}
