//! The OpenAPI documents: `/openapi/v2` (Swagger 2.0, JSON or protobuf) and
//! `/openapi/v3` (an index of one OpenAPI 3.0 document per group-version), with the schema
//! of every served kind.
//!
//! - [`definitions`] makes the schemas (from `k8s-openapi`, upstream's names and
//!   descriptions) and is where kinds that are not built in come in
//!   ([`Definitions::add_kind`]: custom resources, with their CRD's schema).
//! - [`extensions`] puts [`crate::schema`]'s list and patch semantics on the fields.
//! - [`v3`] and [`v2`] lay the documents out.
//!
//! Documents are rendered once per state of the catalogue ([`Documents::get`]) and served
//! as bytes, each with the hash of its content, which the v3 index puts in its URLs
//! (`?hash=`) and which is the `ETag`: clients cache a document for as long as its hash
//! stays the same.

pub mod definitions;
pub mod extensions;
pub mod v2;
pub mod v3;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

pub use definitions::{Definitions, Gvk, KindSchema};

use crate::resources::{Catalogue, ResourceInfo};

/// A rendered document and the hash of its bytes.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Bytes,
    pub hash: String,
}

impl Rendered {
    fn new(body: Vec<u8>) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA512, &body);
        let hash = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        Rendered {
            body: Bytes::from(body),
            hash,
        }
    }

    fn json(value: &Value) -> Self {
        Self::new(crate::encoding::json_bytes(value))
    }
}

/// Every OpenAPI document the server serves.
pub struct OpenApi {
    pub v2_json: Rendered,
    pub v2_protobuf: Rendered,
    pub v3_index: Rendered,
    /// By the path after `/openapi/v3/`: `api/v1`, `apis/apps/v1`.
    pub v3: HashMap<String, Rendered>,
}

/// The catalogue's entries a rendering was made from, and the rendering.
type Rendering = (Vec<Arc<ResourceInfo>>, Arc<OpenApi>);

/// The documents of one catalogue, kept for as long as the catalogue stays the same.
#[derive(Default)]
pub struct Documents {
    last: Mutex<Option<Rendering>>,
}

impl Documents {
    /// The documents of what `catalogue` serves now. They are rendered again only when
    /// the catalogue changed (a CustomResourceDefinition established or gone): the
    /// snapshot's entries are compared by identity with those of the last rendering.
    pub fn get(&self, catalogue: &Catalogue) -> Arc<OpenApi> {
        let resources = catalogue.all();
        let mut last = match self.last.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((seen, api)) = last.as_ref() {
            if seen.len() == resources.len()
                && seen.iter().zip(&resources).all(|(a, b)| Arc::ptr_eq(a, b))
            {
                return api.clone();
            }
        }
        let mut definitions = builtin_definitions().clone();
        for r in &resources {
            if let Some((gvk, name, schema)) = custom_kind(r) {
                definitions.add_kind(gvk, name, schema);
            }
            if !r.create_only {
                let item = Gvk::new(&r.group, &r.version, &r.kind);
                definitions.add_list(&item, &r.list_kind());
            }
        }
        let api = Arc::new(OpenApi::build(
            &resources,
            &catalogue.groups(),
            &definitions,
        ));
        *last = Some((resources, api.clone()));
        api
    }
}

impl OpenApi {
    /// Renders the documents of `groups`' versions for `resources`.
    pub fn build(
        resources: &[Arc<ResourceInfo>],
        groups: &[(String, Vec<String>)],
        definitions: &Definitions,
    ) -> OpenApi {
        let mut v3 = HashMap::new();
        let mut index = Map::new();
        for (group, versions) in groups {
            for version in versions {
                let served: Vec<&ResourceInfo> = resources
                    .iter()
                    .filter(|r| r.group == *group && r.version == *version)
                    .map(|r| &**r)
                    .collect();
                let document = v3::document(&served, definitions, group, version);
                let path = if group.is_empty() {
                    format!("api/{version}")
                } else {
                    format!("apis/{group}/{version}")
                };
                let rendered = Rendered::json(&document);
                index.insert(
                    path.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", rendered.hash)}),
                );
                v3.insert(path, rendered);
            }
        }
        let v2 = v2::document(definitions);
        OpenApi {
            v2_protobuf: Rendered::new(v2::protobuf(&v2)),
            v2_json: Rendered::json(&v2),
            v3_index: Rendered::json(&json!({"paths": index})),
            v3,
        }
    }
}

/// The built-in kinds' definitions, made once.
pub fn builtin_definitions() -> &'static Definitions {
    static BUILTIN: OnceLock<Definitions> = OnceLock::new();
    BUILTIN.get_or_init(Definitions::builtin)
}

/// A custom resource's kind and schema, named as upstream names them (the group reversed:
/// `com.example.stable.v1.CronTab`), with the fields every object has.
fn custom_kind(resource: &ResourceInfo) -> Option<(Gvk, String, Value)> {
    let custom = resource.custom.as_ref()?;
    let reversed: Vec<&str> = resource.group.split('.').rev().collect();
    let name = format!(
        "{}.{}.{}",
        reversed.join("."),
        resource.version,
        resource.kind
    );
    let mut schema = custom
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    if let Value::Object(map) = &mut schema {
        let properties = map
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(properties) = properties {
            let common = [
                (
                    "apiVersion",
                    json!({"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"}),
                ),
                (
                    "kind",
                    json!({"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"}),
                ),
                (
                    "metadata",
                    json!({"description": "Standard object's metadata.", "$ref": format!("{}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", definitions::REF_PREFIX)}),
                ),
            ];
            for (field, value) in common {
                properties.entry(field).or_insert(value);
            }
        }
    }
    Some((
        Gvk::new(&resource.group, &resource.version, &resource.kind),
        name,
        schema,
    ))
}

/// The content type of the protobuf document. Clients ask for `…spec.v2@v1.0+protobuf`, but
/// Go's media type parser (which client-go runs on the response) refuses the `@`.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` in the form `Accept` asks for first: protobuf (as kubectl asks) or JSON.
pub fn serve_v2(api: &OpenApi, headers: &HeaderMap) -> Response {
    let protobuf = crate::encoding::accept_list(headers)
        .iter()
        .map(|entry| entry.split(';').next().unwrap_or("").trim())
        .find_map(|media| {
            if media.starts_with("application/com.github.proto-openapi.spec.v2") {
                Some(true)
            } else if matches!(media, "application/json" | "application/*" | "*/*") {
                Some(false)
            } else {
                None
            }
        })
        .unwrap_or(false);
    if protobuf {
        serve(&api.v2_protobuf, V2_PROTOBUF, None, "/openapi/v2", headers)
    } else {
        serve(
            &api.v2_json,
            crate::encoding::JSON,
            None,
            "/openapi/v2",
            headers,
        )
    }
}

/// A document with its `ETag`. A `hash` query naming an older version of the document is
/// sent on to the current one, as upstream does; a matching one makes the response
/// cacheable for good, since that URL's content never changes.
pub fn serve(
    rendered: &Rendered,
    content_type: &str,
    query_hash: Option<&str>,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let etag = format!("\"{}\"", rendered.hash);
    if let Some(hash) = query_hash {
        if hash != rendered.hash {
            let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("{path}?hash={}", rendered.hash)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            return response;
        }
    }
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        crate::encoding::raw(StatusCode::OK, content_type, rendered.body.clone())
    };
    let cache_control = if query_hash.is_some() {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    let response_headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, etag);
    }
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

#[cfg(test)]
mod tests;
