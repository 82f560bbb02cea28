//! Converting custom objects between the versions of their CRD, as upstream's
//! apiextensions-apiserver does. Strategy `None` changes only `apiVersion`. Strategy
//! `Webhook` sends an `apiextensions.k8s.io/v1` `ConversionReview` to the CRD's webhook
//! (a URL or a Service, trusted through its `caBundle`) whenever an object is read in, or
//! written from, a version other than the one it is stored in. What comes back is
//! checked as upstream checks it: one object per object sent, each in the version asked
//! for, and of the metadata only labels and annotations may change.

use std::time::Duration;

use serde_json::{json, Value};

use super::definition::CustomVersion;
use crate::registry::Registry;
use crate::status::{ApiError, ApiResult};

/// Upstream's timeout for conversion webhooks.
const TIMEOUT: Duration = Duration::from_secs(30);

fn with_api_version(mut object: Value, api_version: &str) -> Value {
    if let Some(fields) = object.as_object_mut() {
        if fields.contains_key("apiVersion") {
            fields.insert("apiVersion".into(), json!(api_version));
        }
    }
    object
}

/// `object` (a custom object of `custom`'s CRD) in `api_version`.
pub fn convert(
    registry: &Registry,
    custom: &CustomVersion,
    object: Value,
    api_version: &str,
) -> ApiResult<Value> {
    let from = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(api_version);
    match &custom.conversion_webhook {
        Some(webhook) if from != api_version => {
            let kind = object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let failed = |message: String| {
                ApiError::internal(format!(
                    "conversion webhook for {from}, Kind={kind} failed: {message}"
                ))
            };
            let converted = crate::webhooks::wait_for(async {
                call(registry, &custom.definition, webhook, &object, api_version)
                    .await
                    .map_err(failed)
            })?;
            keep_metadata(&object, converted, api_version).map_err(failed)
        }
        _ => Ok(with_api_version(object, api_version)),
    }
}

/// Asks the webhook for `object` in `api_version`.
async fn call(
    registry: &Registry,
    definition: &str,
    webhook: &Value,
    object: &Value,
    api_version: &str,
) -> Result<Value, String> {
    let client_config = webhook.get("clientConfig").cloned().unwrap_or(Value::Null);
    let target = crate::webhooks::target(registry, definition, &client_config)?;
    let uid = uuid::Uuid::new_v4().to_string();
    let review = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": uid, "desiredAPIVersion": api_version, "objects": [object]},
    });
    let response = crate::webhooks::call(&target, &review, TIMEOUT).await?;
    if response.get("uid").and_then(Value::as_str) != Some(uid.as_str()) {
        return Err(format!(
            "expected response uid {uid:?}, got {:?}",
            response
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ));
    }
    let result = response.get("result").cloned().unwrap_or(Value::Null);
    if result.get("status").and_then(Value::as_str) != Some("Success") {
        let message = result
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the webhook did not report success");
        return Err(format!("conversion request failed: {message}"));
    }
    match response
        .get("convertedObjects")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([converted]) => Ok(converted.clone()),
        Some(objects) => Err(format!(
            "conversion webhook returned {} objects, expected 1",
            objects.len()
        )),
        None => Err("conversion webhook returned no convertedObjects".into()),
    }
}

/// The converted object with the original's metadata, except labels and annotations
/// (the only metadata a webhook may change); refused if it is not in `api_version` or
/// changed the kind.
fn keep_metadata(
    original: &Value,
    mut converted: Value,
    api_version: &str,
) -> Result<Value, String> {
    let got = converted
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got != api_version {
        return Err(format!(
            "invalid converted object: expected apiVersion {api_version:?}, got {got:?}"
        ));
    }
    if converted.get("kind") != original.get("kind") {
        return Err("invalid converted object: the kind changed".into());
    }
    let mut metadata = original
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    for field in ["labels", "annotations"] {
        match converted.pointer(&format!("/metadata/{field}")) {
            Some(value) => metadata[field] = value.clone(),
            None => {
                if let Some(fields) = metadata.as_object_mut() {
                    fields.shift_remove(field);
                }
            }
        }
    }
    converted["metadata"] = metadata;
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_objects_keep_their_metadata_but_labels_and_annotations() {
        let original = json!({"apiVersion": "stable.example.com/v1", "kind": "Thing",
            "metadata": {"name": "a", "uid": "1", "labels": {"x": "1"}}, "hostPort": "localhost:80"});
        let converted = json!({"apiVersion": "stable.example.com/v2", "kind": "Thing",
            "metadata": {"name": "b", "uid": "2", "labels": {"x": "2"}, "annotations": {"y": "z"}},
            "host": "localhost", "port": "80"});
        let kept = keep_metadata(&original, converted.clone(), "stable.example.com/v2").unwrap();
        assert_eq!(
            kept["metadata"],
            json!({"name": "a", "uid": "1", "labels": {"x": "2"}, "annotations": {"y": "z"}})
        );
        assert_eq!(kept["port"], "80");
        assert!(keep_metadata(&original, converted, "stable.example.com/v3")
            .unwrap_err()
            .contains("expected apiVersion"));
    }
}
