//! Content negotiation: request bodies in JSON, YAML or Kubernetes protobuf; responses in
//! whatever the client's `Accept` header prefers among those, plus the `Table` and
//! `PartialObjectMetadata` views that `kubectl get` and metadata informers ask for.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

pub const JSON: &str = "application/json";
pub const YAML: &str = "application/yaml";
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// What the client wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Protobuf,
    /// `meta.k8s.io` `Table`, at the version the client asked for.
    Table(&'static str),
    /// `meta.k8s.io/v1` `PartialObjectMetadata` (or its list).
    Metadata,
}

#[derive(Debug, Clone, PartialEq)]
struct MediaType<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> MediaType<'a> {
    fn parse(text: &'a str) -> Self {
        let mut parts = text.split(';').map(str::trim);
        let essence = parts.next().unwrap_or("");
        let params = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        MediaType { essence, params }
    }

    fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

pub(crate) fn accept_list(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// Picks the response format from `Accept`, honouring the client's order.
/// `protobuf_ok` says whether the object has a protobuf form.
pub fn negotiate(headers: &HeaderMap, protobuf_ok: bool) -> ApiResult<Format> {
    negotiate_as(headers, protobuf_ok, true)
}

/// [`negotiate`] for a resource that may have no `Table` form (`tables` false: the
/// reviews, which upstream serves without a table converter), so a client that accepts
/// nothing else gets `406`, as upstream answers.
pub fn negotiate_as(headers: &HeaderMap, protobuf_ok: bool, tables: bool) -> ApiResult<Format> {
    let accepted = accept_list(headers);
    if accepted.is_empty() {
        return Ok(Format::Json);
    }
    for entry in &accepted {
        let media = MediaType::parse(entry);
        let view = media.param("as");
        match (media.essence, view) {
            ("application/json", Some("Table"))
                if tables && media.param("g") == Some("meta.k8s.io") =>
            {
                match media.param("v") {
                    Some("v1") => return Ok(Format::Table("meta.k8s.io/v1")),
                    Some("v1beta1") => return Ok(Format::Table("meta.k8s.io/v1beta1")),
                    _ => continue,
                }
            }
            ("application/json", Some("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if media.param("g") == Some("meta.k8s.io") && media.param("v") == Some("v1") =>
            {
                return Ok(Format::Metadata)
            }
            (_, Some(_)) => continue,
            ("application/json" | "application/*" | "*/*", None) => return Ok(Format::Json),
            ("application/yaml", None) => return Ok(Format::Yaml),
            (PROTOBUF, None) if protobuf_ok => return Ok(Format::Protobuf),
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable())
}

/// Whether the client prefers the aggregated discovery document (`apidiscovery.k8s.io/v2`)
/// to the classic `APIVersions` / `APIGroupList`.
pub fn wants_aggregated_discovery(headers: &HeaderMap) -> bool {
    for entry in accept_list(headers) {
        let media = MediaType::parse(entry);
        match media.param("as") {
            Some("APIGroupDiscoveryList")
                if media.param("g") == Some("apidiscovery.k8s.io")
                    && media.param("v") == Some("v2") =>
            {
                return true
            }
            Some(_) => continue,
            None => return false,
        }
    }
    false
}

/// Whether a watch request asked for the protobuf stream.
pub fn wants_protobuf_stream(headers: &HeaderMap) -> bool {
    accept_list(headers)
        .first()
        .is_some_and(|first| MediaType::parse(first).essence == PROTOBUF)
}

/// Decodes a request body by its `Content-Type`.
/// Whether a request's body is JSON (which is also what no `Content-Type` means).
pub fn body_is_json(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(JSON);
    matches!(MediaType::parse(content_type).essence, JSON | "")
}

/// Whether a request's body is YAML.
pub fn body_is_yaml(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(JSON);
    matches!(
        MediaType::parse(content_type).essence,
        YAML | "application/x-yaml" | "text/yaml"
    )
}

pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(JSON);
    let essence = MediaType::parse(content_type).essence;
    if body.is_empty() {
        return Err(ApiError::bad_request("the body of the request is empty"));
    }
    match essence {
        JSON | "" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{}': {e}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }),
        YAML | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}"))),
        PROTOBUF => skiff_protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// JSON bytes with the trailing newline upstream's encoder writes.
pub fn json_bytes(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Renders a value in `format` with the given status code.
pub fn respond(status: StatusCode, format: Format, value: &Value) -> Response {
    let (content_type, body): (&str, Vec<u8>) = match format {
        Format::Yaml => match serde_yaml::to_string(value) {
            Ok(text) => (YAML, text.into_bytes()),
            Err(e) => return ApiError::internal(e).into_response(),
        },
        Format::Protobuf => match skiff_protobuf::encode(value) {
            Ok(bytes) => (PROTOBUF, bytes),
            Err(_) => (JSON, json_bytes(value)),
        },
        _ => (JSON, json_bytes(value)),
    };
    raw(status, content_type, Bytes::from(body))
}

pub fn raw(status: StatusCode, content_type: &str, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn kubectl_get_asks_for_tables() {
        let h = headers("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json");
        assert_eq!(
            negotiate(&h, true).unwrap(),
            Format::Table("meta.k8s.io/v1")
        );
    }

    #[test]
    fn aggregated_discovery_preference() {
        assert!(wants_aggregated_discovery(&headers("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")));
        assert!(!wants_aggregated_discovery(&headers(
            "application/json, */*"
        )));
        assert!(!wants_aggregated_discovery(&headers("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")));
    }

    #[test]
    fn protobuf_only_when_possible() {
        let h = headers("application/vnd.kubernetes.protobuf, */*");
        assert_eq!(negotiate(&h, true).unwrap(), Format::Protobuf);
        assert_eq!(negotiate(&h, false).unwrap(), Format::Json);
        assert!(negotiate(&headers("text/html"), true).is_err());
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
        assert!(negotiate_as(&headers(table), true, false).is_err());
        assert_eq!(
            negotiate_as(&headers(&format!("{table},application/json")), true, false).unwrap(),
            Format::Json
        );
        assert_eq!(negotiate(&HeaderMap::new(), true).unwrap(), Format::Json);
    }
}
