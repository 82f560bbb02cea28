//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`), as upstream's
//! apiextensions-apiserver serves them, inside this API server.
//!
//! - [`definition`]: what a CRD says, read into catalogue entries ([`CustomVersion`] per
//!   served version), and the validation of the CRD object itself.
//! - [`schema`]: a version's structural `openAPIV3Schema` applied to custom objects:
//!   pruning of unknown fields, defaults, validation with upstream's messages; [`cel`]
//!   its `x-kubernetes-validations` rules.
//! - [`controller`]: the in-process controller that accepts names, sets `Established`,
//!   puts the resources in the catalogue, and empties a deleted CRD's resources.

pub mod cel;
pub mod controller;
pub mod conversion;
pub mod definition;
pub mod jsonpath;
pub mod schema;

pub use definition::{compare_versions, CustomVersion};

use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::status::ApiResult;

/// The `fieldValidation` of a write of a custom object (`mode` as the request gave it):
/// fields its schema does not know are refused (`Strict`), warned about (`Warn`, the
/// default) or passed over (`Ignore`); pruning drops them in every case.
pub fn check_unknown_fields(resource: &ResourceInfo, object: &Value, mode: &str) -> ApiResult<()> {
    let unknown = unknown_fields(resource, object, mode);
    crate::field_validation::report_decoded(resource, &unknown, &[], mode)
}

/// [`check_unknown_fields`] for a server-side apply, in the words upstream's apply uses.
pub fn check_unknown_applied_fields(
    resource: &ResourceInfo,
    object: &Value,
    mode: &str,
) -> ApiResult<()> {
    let unknown = unknown_fields(resource, object, mode);
    crate::field_validation::report_applied(resource, &unknown, mode)
}

/// The paths of the fields of `object` that its schema does not know, unless `mode`
/// passes them over or the resource has no schema.
fn unknown_fields(resource: &ResourceInfo, object: &Value, mode: &str) -> Vec<String> {
    match resource.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        Some(schema) if mode != "Ignore" => schema::prune(&mut object.clone(), schema),
        _ => Vec::new(),
    }
}

/// The finalizer that holds a deleted CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// The group CRDs are served in.
pub const GROUP: &str = "apiextensions.k8s.io";

/// Compiled expressions (CEL rules, schema patterns) by their source text, so a write
/// does not compile each rule again for every object and list item it checks. Bounded:
/// when full it starts over, so rules of deleted CRDs do not stay for good.
pub(crate) struct Memo<T> {
    compiled: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<T>>>,
}

impl<T> Memo<T> {
    const LIMIT: usize = 4096;

    pub(crate) fn new() -> Self {
        Memo {
            compiled: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::sync::Arc<T>>> {
        match self.compiled.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The compiled form of `source`, compiled now if it is not known yet.
    pub(crate) fn get<E>(
        &self,
        source: &str,
        compile: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<std::sync::Arc<T>, E> {
        if let Some(found) = self.lock().get(source) {
            return Ok(found.clone());
        }
        // Compiled outside the lock: two writers may both compile; either result serves.
        let compiled = std::sync::Arc::new(compile(source)?);
        let mut map = self.lock();
        if map.len() >= Self::LIMIT {
            map.clear();
        }
        map.insert(source.to_string(), compiled.clone());
        Ok(compiled)
    }
}
