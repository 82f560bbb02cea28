//! Server-side field validation of built-in objects (`fieldValidation`), as upstream's
//! strict JSON decoding does it: fields the kind's schema does not know and fields a JSON
//! body repeats are refused (`Strict`), warned about (`Warn`, the default) or passed
//! over (`Ignore`). Custom objects are judged by their CRD's schema (`crd::check_unknown_fields`).
//!
//! The kinds' schemas are the OpenAPI definitions (`openapi::builtin_definitions`):
//! a field is unknown where an object's schema lists properties and names no such one;
//! objects without properties (maps, raw extensions) take anything. Unknown fields are
//! dropped in every mode, as upstream's decoding into its types drops them.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::openapi::definitions::{ref_target, Definitions};
use crate::resources::ResourceInfo;
use crate::status::{quote, ApiError, ApiResult};

/// Checks a create or update of a built-in object and drops its unknown fields:
/// `object` as decoded, `body` as sent (`json`: whether it was JSON, the only form whose
/// repeated fields are looked for).
pub fn check(
    resource: &ResourceInfo,
    object: &mut Value,
    body: &[u8],
    json: bool,
    mode: &str,
) -> ApiResult<()> {
    if resource.custom.is_some() {
        return Ok(());
    }
    let unknown = unknown(resource, object);
    let duplicates = if json && mode != "Ignore" {
        duplicate_fields(body)
    } else {
        Vec::new()
    };
    report_decoded(resource, &unknown, &duplicates, mode)
}

/// [`check`] for a server-side apply of a built-in object.
pub fn check_applied(resource: &ResourceInfo, object: &mut Value, mode: &str) -> ApiResult<()> {
    let unknown = unknown(resource, object);
    report_applied(resource, &unknown, mode)
}

/// What strict decoding found (unknown and repeated fields, by path), refused (`Strict`)
/// with upstream's `strict decoding error`, warned about (`Warn`, the default) or passed
/// over (`Ignore`).
pub fn report_decoded(
    resource: &ResourceInfo,
    unknown: &[String],
    duplicates: &[String],
    mode: &str,
) -> ApiResult<()> {
    let texts: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field {}", quote(p)))
        .chain(
            duplicates
                .iter()
                .map(|p| format!("duplicate field {}", quote(p))),
        )
        .collect();
    report(texts, mode, || {
        format!(
            "{} in version {} cannot be handled as a {}: strict decoding error: ",
            resource.kind,
            quote(&resource.version),
            resource.kind
        )
    })
}

/// An apply's unknown fields (by path), in the words upstream's apply uses
/// (structured-merge-diff's, as it builds the typed patch), refused, warned about or
/// passed over per `mode`.
pub fn report_applied(resource: &ResourceInfo, unknown: &[String], mode: &str) -> ApiResult<()> {
    let texts: Vec<String> = unknown
        .iter()
        .map(|path| format!(".{path}: field not declared in schema"))
        .collect();
    report(texts, mode, || {
        format!(
            "failed to create typed patch object ({}, Kind={}): ",
            resource.api_version(),
            resource.kind
        )
    })
}

fn report(texts: Vec<String>, mode: &str, prefix: impl FnOnce() -> String) -> ApiResult<()> {
    if texts.is_empty() || mode == "Ignore" {
        return Ok(());
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "{}{}",
            prefix(),
            texts.join(", ")
        )));
    }
    for text in texts {
        crate::warnings::add(text);
    }
    Ok(())
}

/// The paths of a built-in object's unknown fields, which are dropped.
fn unknown(resource: &ResourceInfo, object: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if resource.custom.is_some() {
        return unknown;
    }
    let definitions = crate::openapi::builtin_definitions();
    let schema = definitions
        .kind(&resource.group, &resource.version, &resource.kind)
        .and_then(|kind| definitions.schemas.get(&kind.name));
    if let Some(schema) = schema {
        unknown_fields(definitions, object, schema, "", &mut unknown);
    }
    unknown
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The schema `schema` stands for, its `$ref`s followed.
fn resolve<'a>(definitions: &'a Definitions, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let target = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(ref_target)
            .and_then(|name| definitions.schemas.get(name));
        match target {
            // A reference's siblings are descriptions only; the target says the type.
            Some(target) if schema.get("properties").is_none() => schema = target,
            _ => break,
        }
    }
    schema
}

/// Collects the paths of `value`'s unknown fields, and drops those fields.
fn unknown_fields(
    definitions: &Definitions,
    value: &mut Value,
    schema: &Value,
    path: &str,
    unknown: &mut Vec<String>,
) {
    let schema = resolve(definitions, schema);
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut dropped = Vec::new();
            for (name, field) in fields.iter_mut() {
                let field_path = join(path, name);
                match (properties.and_then(|p| p.get(name)), additional) {
                    (Some(field_schema), _) | (None, Some(field_schema)) => {
                        unknown_fields(definitions, field, field_schema, &field_path, unknown)
                    }
                    // No properties at all: a free-form object.
                    (None, None) if properties.is_none() => {}
                    (None, None) => {
                        unknown.push(field_path);
                        dropped.push(name.clone());
                    }
                }
            }
            for name in dropped {
                fields.shift_remove(&name);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter_mut().enumerate() {
                    let item_path = format!("{path}[{index}]");
                    unknown_fields(definitions, item, item_schema, &item_path, unknown);
                }
            }
        }
        _ => {}
    }
}

/// The paths of the fields a JSON document repeats within one object, in document order
/// (an unparsable body has none: decoding it reports the error).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let _ = Walk {
        path: String::new(),
        found: &mut found,
    }
    .deserialize(&mut deserializer);
    found
}

/// A JSON value walked for repeated keys, at `path`.
struct Walk<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let item = Walk {
                path: format!("{}[{index}]", self.path),
                found: &mut *self.found,
            };
            if seq.next_element_seed(item)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            map.next_value_seed(Walk {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployments() -> std::sync::Arc<ResourceInfo> {
        crate::resources::Catalogue::new()
            .get("apps", "v1", "deployments")
            .expect("served")
    }

    #[test]
    fn repeated_fields_are_found_by_path() {
        let body =
            br#"{"spec":{"unknownField":"foo","replicas":2,"replicas":3,"list":[{"a":1,"a":2}]}}"#;
        assert_eq!(duplicate_fields(body), ["spec.replicas", "spec.list[0].a"]);
        assert!(duplicate_fields(b"{\"a\":{\"a\":1}}").is_empty());
    }

    #[test]
    fn unknown_and_repeated_fields_of_a_typed_object_are_refused_when_strict() {
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","labels":{"app":"x"}},
            "spec":{"unknownField":"foo","replicas":2,"replicas":3,"selector":{"matchLabels":{"app":"x"}},
            "template":{"metadata":{"labels":{"app":"x"}},"spec":{"containers":[{"name":"c","image":"i",
            "resources":{"limits":{"cpu":"1"}},"ports":[{"containerPort":80}]}]}}}}"#;
        let mut object: Value = serde_json::from_slice(body).unwrap();
        let refused = check(&deployments(), &mut object.clone(), body, true, "Strict").unwrap_err();
        assert!(
            refused.message.ends_with(
                r#"strict decoding error: unknown field "spec.unknownField", duplicate field "spec.replicas""#
            ),
            "{}",
            refused.message
        );
        assert!(check(&deployments(), &mut object, body, true, "Ignore").is_ok());
        assert!(object["spec"].get("unknownField").is_none(), "dropped");
        assert_eq!(object["spec"]["replicas"], 3);
        let mut meta = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "unknownMeta": "foo", "annotations": {"any": "thing"}}});
        let refused = check(&deployments(), &mut meta, b"{}", true, "Strict").unwrap_err();
        assert!(
            refused
                .message
                .ends_with(r#"strict decoding error: unknown field "metadata.unknownMeta""#),
            "{}",
            refused.message
        );
    }

    #[test]
    fn an_apply_is_refused_its_unknown_fields_in_its_own_words() {
        let mut applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 1, "paused2": true}});
        let refused = check_applied(&deployments(), &mut applied.clone(), "Strict").unwrap_err();
        assert_eq!(
            refused.message,
            "failed to create typed patch object (apps/v1, Kind=Deployment): .spec.paused2: field not declared in schema"
        );
        assert!(check_applied(&deployments(), &mut applied, "Warn").is_ok());
        assert!(applied["spec"].get("paused2").is_none(), "dropped");
    }

    #[test]
    fn known_fields_of_every_shape_pass() {
        let catalogue = crate::resources::Catalogue::new();
        let pods = catalogue.get("", "v1", "pods").expect("served");
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}]},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
                "resources": {"requests": {"memory": "1Gi"}},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/"}}}],
                "affinity": {"nodeAffinity": {}}, "securityContext": {"sysctls": []}},
            "status": {"phase": "Pending"}});
        let sent = pod.clone();
        assert!(check(&pods, &mut pod, b"{}", true, "Strict").is_ok());
        assert_eq!(pod, sent, "nothing dropped");
        let crds = catalogue
            .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("served");
        let mut crd = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"spec": {"type": "object", "default": {"a": 1}}}}}}]}});
        assert!(check(&crds, &mut crd, b"{}", true, "Strict").is_ok());
    }
}
