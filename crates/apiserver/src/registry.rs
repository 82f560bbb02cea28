//! The generic registry: one implementation of create, get, list, update, patch and delete
//! for every resource, with the per-type differences in [`crate::strategy`].
//!
//! Objects are stored as JSON without `resourceVersion`; the store's modification
//! revision becomes the `resourceVersion` clients see. Every read-modify-write goes through
//! [`Registry::guaranteed_update`], a compare-and-swap loop on that revision, so
//! concurrent writers never lose each other's changes and a stale client gets `409`.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use skiff_store::{KeyValue, RangeRequest, Store, StoreError};

use crate::cache::{CachedObject, WatchCache};
use crate::convert;
use crate::managedfields::{self, Writer};
use crate::object;
use crate::patch::PatchType;
use crate::resources::{Catalogue, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{quote, ApiError, ApiResult, Cause};
use crate::strategy;

/// How many times a read-modify-write is retried when another writer got there first.
const MAX_UPDATE_ATTEMPTS: usize = 16;

#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One page of a list.
pub struct ListPage {
    pub rv: i64,
    pub items: Vec<Arc<CachedObject>>,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub preconditions: Option<Preconditions>,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

/// The position a paginated list resumes from, encoded as upstream encodes it.
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

/// The revision of an inconsistent continue token: the list goes on at whatever the
/// current revision is (upstream offers such a token once the snapshot is compacted).
const LATEST: i64 = -1;

fn encode_continue(rv: i64, start: String) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let invalid = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let token: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let revision_ok = token.rv > 0 || token.rv == LATEST;
    if token.v != "meta.k8s.io/v1" || !revision_ok || token.start.contains("..") {
        return Err(invalid());
    }
    Ok(token)
}

/// A PATCH request's body, how to read it, and who sends it.
#[derive(Clone, Copy)]
pub struct Patch<'a> {
    pub patch_type: crate::patch::PatchType,
    pub body: &'a [u8],
    /// The field manager the write is recorded under.
    pub manager: &'a str,
    /// Server-side apply only: take fields other managers own.
    pub force: bool,
    /// The subresource the request came through, when it differs from the part written
    /// (`scale` writes the main resource's `spec.replicas`).
    pub via: Option<&'a str>,
    /// The request's `fieldValidation` (empty: the default), for custom objects.
    pub field_validation: &'a str,
}

/// Whether a create records its writer in `managedFields`, or carries the ones an apply
/// computed.
#[derive(Clone, Copy)]
enum CreateFields<'a> {
    Record(&'a str),
    Applied,
}

/// The manager the API server's own writes are recorded under.
pub const SERVER_MANAGER: &str = "kube-apiserver";

/// What a read-modify-write decided to do with the current object.
pub enum Action {
    Keep,
    Replace(Value),
    Delete,
}

/// The result of a read-modify-write.
pub enum Outcome {
    /// The object as stored now (unchanged when nothing needed writing).
    Stored(Value),
    /// The object was deleted; this was its last state.
    Deleted(Value),
}

pub struct Registry {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    pub catalogue: Catalogue,
    /// Where Services get their cluster IPs.
    pub service_cidr: crate::services::Cidr,
    /// The admission plugins every create goes through.
    pub admission: crate::admission::Admission,
}

/// The stored form of an object: JSON without `resourceVersion`.
fn encode_stored(object: &Value) -> ApiResult<Bytes> {
    let mut object = object.clone();
    object::metadata_mut(&mut object).shift_remove("resourceVersion");
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

fn decode_stored(kv: &KeyValue) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    object::set_resource_version(&mut object, kv.mod_revision);
    Ok(object)
}

fn with_resource_version(mut object: Value, rv: i64) -> Value {
    object::set_resource_version(&mut object, rv);
    object
}

/// Random suffix for `generateName`, from upstream's alphabet (no vowels, no look-alikes).
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<WatchCache>,
        service_cidr: crate::services::Cidr,
    ) -> Self {
        Registry {
            store,
            cache,
            catalogue: Catalogue::new(),
            service_cidr,
            admission: Default::default(),
        }
    }

    /// A resource of the core group (`v1`), by plural.
    pub fn core(&self, plural: &str) -> ApiResult<Arc<ResourceInfo>> {
        self.catalogue
            .get("", "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
    }

    fn namespaces(&self) -> Arc<ResourceInfo> {
        self.catalogue
            .get("", "v1", "namespaces")
            .expect("namespaces are in the catalogue")
    }

    /// The newest stored state of one object.
    pub async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        let key = resource.key(namespace, name);
        match self.store.get(&key).await? {
            Some(kv) => decode_stored(&kv),
            None => Err(ApiError::not_found(resource, name)),
        }
    }

    /// The namespace object, unless it does not exist.
    async fn namespace_object(&self, namespace: &str) -> ApiResult<Option<Value>> {
        let key = self.namespaces().key(None, namespace);
        match self.cache.get(&key) {
            Some(cached) => cached.value().map(Some),
            None => match self.store.get(&key).await? {
                Some(kv) => decode_stored(&kv).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Fails unless `namespace` exists and is not being deleted; returns it.
    async fn check_namespace_open(&self, namespace: &str) -> ApiResult<Value> {
        let Some(object) = self.namespace_object(namespace).await? else {
            return Err(ApiError::namespace_not_found(namespace));
        };
        if object::meta_str(&object, "deletionTimestamp").is_some() {
            return Err(ApiError::namespace_terminating(namespace));
        }
        Ok(object)
    }

    /// What the `PodSecurity` plugin needs before a write of `resource`: whether it
    /// looks at it, and the namespace whose labels choose the policy.
    async fn pod_security_namespace(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
    ) -> ApiResult<Option<Value>> {
        match (&self.admission.pod_security, namespace) {
            (Some(_), Some(ns))
                if resource.namespaced && crate::podsecurity::PodSecurity::watches(resource) =>
            {
                self.namespace_object(ns).await
            }
            _ => Ok(None),
        }
    }

    /// The `PodSecurity` plugin on a create (`old` is `None`) or an update.
    fn admit_pod_security(
        &self,
        resource: &ResourceInfo,
        subresource: Option<&str>,
        namespace: Option<&Value>,
        new: &Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        match &self.admission.pod_security {
            Some(plugin) if crate::podsecurity::PodSecurity::watches(resource) => {
                plugin.admit(self, resource, subresource, namespace, new, old)
            }
            _ => Ok(()),
        }
    }

    /// Checks the identity a request body claims against the URL it was sent to.
    fn check_identity(
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: &mut Value,
    ) -> ApiResult<()> {
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let api_version = resource.api_version();
        let fields = object
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("not an object"))?;
        match fields.get("kind").and_then(Value::as_str) {
            Some(kind) if kind != resource.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind of the provided object ({kind}) does not match the kind expected by the request ({})",
                    resource.kind
                )))
            }
            _ => {}
        }
        match fields.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
            _ => {}
        }
        fields.insert("kind".into(), json!(resource.kind));
        fields.insert("apiVersion".into(), json!(api_version));
        let metadata = object::metadata_mut(object);
        if resource.namespaced {
            let url_namespace = namespace.unwrap_or("");
            match metadata.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != url_namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    metadata.insert("namespace".into(), json!(url_namespace));
                }
            }
        } else if metadata
            .get("namespace")
            .and_then(Value::as_str)
            .is_some_and(|ns| !ns.is_empty())
        {
            metadata.shift_remove("namespace");
        }
        Ok(())
    }

    fn invalid(resource: &ResourceInfo, object: &Value, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(
            &resource.kind,
            &resource.group,
            object::name(object),
            causes,
        )
    }

    /// An update's admission and preparation, in upstream's order: mutating policies and
    /// webhooks (the policies again if either changed the object), the
    /// strategy's preparation and validation, PodSecurity, the plugins that judge by
    /// requester, ValidatingAdmissionPolicy, validating webhooks. `namespace_object` is
    /// the namespace PodSecurity reads its levels from.
    #[allow(clippy::too_many_arguments)]
    fn admit_update(
        &self,
        resource: &ResourceInfo,
        subresource: Option<&str>,
        namespace: Option<&str>,
        namespace_object: Option<&Value>,
        dry_run: bool,
        new: &mut Value,
        current: &Value,
    ) -> ApiResult<()> {
        let name = object::name(current).to_string();
        let hook = |object| crate::webhooks::Request {
            resource,
            subresource,
            namespace,
            name: &name,
            operation: "UPDATE",
            object,
            old_object: Some(current),
            dry_run,
        };
        crate::admission::mutate(self, &hook(None), new)?;
        prepare_update(resource, subresource, new, current)?;
        self.admit_pod_security(resource, subresource, namespace_object, new, Some(current))?;
        self.admit_update_by_requester(resource, subresource, new, current)?;
        crate::policy::validating::validate(self, &hook(Some(new)))?;
        crate::webhooks::validate_in_place(self, &hook(Some(new)))
    }

    /// The admission plugins that judge an update by who makes it: NodeRestriction, and
    /// the approval and signing checks of CertificateSigningRequests.
    fn admit_update_by_requester(
        &self,
        resource: &ResourceInfo,
        subresource: Option<&str>,
        new: &Value,
        current: &Value,
    ) -> ApiResult<()> {
        crate::noderestriction::admit_update(resource, subresource, new, current)?;
        if resource.builtin_kind() == "CertificateSigningRequest" {
            let authorizer = crate::authz::rbac::Authorizer { cache: &self.cache };
            crate::certificates::admit_update(&authorizer, resource, subresource, new, current)?;
        }
        Ok(())
    }

    /// Creates an object; `manager` is recorded as its first field manager.
    pub async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: Value,
        manager: &str,
        dry_run: bool,
    ) -> ApiResult<Value> {
        self.create_with(
            resource,
            namespace,
            object,
            CreateFields::Record(manager),
            dry_run,
        )
        .await
    }

    async fn create_with(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: Value,
        fields: CreateFields<'_>,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let mut object = object;
        Self::check_identity(resource, namespace, &mut object)?;
        let mut object = convert::to_storage(self, resource, object)?;
        let metadata = object::metadata_mut(&mut object);
        let name_missing = metadata
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if name_missing {
            if let Some(prefix) = metadata.get("generateName").and_then(Value::as_str) {
                let generated = format!("{prefix}{}", random_suffix());
                metadata.insert("name".into(), json!(generated));
            }
        }
        for server_owned in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            metadata.shift_remove(server_owned);
        }
        metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
        if resource.tracks_generation {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.shift_remove("generation");
        }

        if let CreateFields::Record(manager) = fields {
            // Upstream records the decoded, defaulted object, before admission changes it.
            let mut recorded = object.clone();
            strategy::apply_defaults(resource, &mut recorded);
            let api_version = resource.api_version();
            let writer = Writer {
                manager,
                subresource: None,
                api_version: &api_version,
                structure: crate::schema::Structure::of(resource),
            };
            let reset = managedfields::reset_field(resource.has_subresource("status"), None);
            managedfields::record_update(None, &mut recorded, &writer, reset);
            let managed = object::metadata_mut(&mut recorded).shift_remove("managedFields");
            let metadata = object::metadata_mut(&mut object);
            match managed {
                Some(list) => metadata.insert("managedFields".into(), list),
                None => metadata.shift_remove("managedFields"),
            };
        }

        // Admission as upstream orders it: namespace lifecycle first, then the others
        // (which may change the object), then the strategy's preparation and validation.
        let namespace_object = match (resource.namespaced, namespace) {
            (true, Some(ns)) => Some(self.check_namespace_open(ns).await?),
            _ => None,
        };
        self.admission
            .admit_create(self, resource, namespace, &mut object)?;
        let name = object::name(&object).to_string();
        let hook = |object| crate::webhooks::Request {
            resource,
            subresource: None,
            namespace,
            name: &name,
            operation: "CREATE",
            object,
            old_object: None,
            dry_run,
        };
        crate::admission::mutate(self, &hook(None), &mut object)?;
        strategy::prepare_for_create(resource, &mut object);
        let causes = strategy::validate(resource, &object);
        if !causes.is_empty() {
            return Err(Self::invalid(resource, &object, causes));
        }
        crate::admission::admit_create_by_requester(resource, &object)?;
        self.admit_pod_security(resource, None, namespace_object.as_ref(), &object, None)?;
        crate::policy::validating::validate(self, &hook(Some(&object)))?;
        crate::webhooks::validate(self, &hook(Some(&object))).await?;
        if let (true, Some(ns)) = (
            self.admission.resource_quota && resource.namespaced,
            namespace,
        ) {
            crate::quota::charge(self, resource, ns, &object, dry_run).await?;
        }
        let name = object::name(&object).to_string();
        let key = resource.key(namespace, &name);
        let is_service = resource.builtin_kind() == "Service";
        if is_service && !dry_run && self.store.get(&key).await?.is_some() {
            // Allocating first would hold addresses for a create that must fail.
            return Err(ApiError::already_exists(resource, &name));
        }
        if is_service {
            crate::services::allocate(self, &mut object, dry_run).await?;
        }
        let object = object::canonicalize(object);
        if dry_run {
            return Ok(object);
        }
        let result = match self.store.create(&key, encode_stored(&object)?).await {
            Ok(rv) => Ok(with_resource_version(object.clone(), rv)),
            Err(StoreError::AlreadyExists(_)) => Err(ApiError::already_exists(resource, &name)),
            Err(e) => Err(e.into()),
        };
        if is_service && result.is_err() {
            crate::services::release(self, &object).await;
        }
        result
    }

    /// The compare-and-swap loop every read-modify-write uses. `decide` sees the current
    /// object (with its `resourceVersion`) and may be called again if another writer wins.
    pub async fn guaranteed_update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
        mut decide: impl FnMut(Value) -> ApiResult<Action>,
    ) -> ApiResult<Outcome> {
        let key = resource.key(namespace, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some(kv) = self.store.get(&key).await? else {
                return Err(ApiError::not_found(resource, name));
            };
            let current = decode_stored(&kv)?;
            match decide(current.clone())? {
                Action::Keep => return Ok(Outcome::Stored(current)),
                Action::Replace(mut new) => {
                    object::metadata_mut(&mut new).shift_remove("resourceVersion");
                    let is_service = resource.builtin_kind() == "Service";
                    if is_service {
                        crate::services::allocate_for_update(self, &mut new, &current, dry_run)
                            .await?;
                    }
                    let new = object::canonicalize(new);
                    let mut current_without_rv = current.clone();
                    object::metadata_mut(&mut current_without_rv).shift_remove("resourceVersion");
                    // Unchanged objects are not written, unless their stored form is
                    // stale (encrypted with a key that no longer writes), as upstream.
                    // Nor are objects whose only change is a manager's time: upstream
                    // reverts those (an apply of the same file again writes nothing).
                    let unchanged = new == current_without_rv
                        || object::equal_but_manager_times(&new, &current_without_rv);
                    if unchanged && !self.store.is_stale(&key).await? {
                        let rv = kv.mod_revision;
                        return Ok(Outcome::Stored(with_resource_version(
                            current_without_rv,
                            rv,
                        )));
                    }
                    if dry_run {
                        let rv = kv.mod_revision;
                        return Ok(Outcome::Stored(with_resource_version(new, rv)));
                    }
                    let written = self
                        .store
                        .update(&key, encode_stored(&new)?, kv.mod_revision)
                        .await;
                    if is_service {
                        // Stored: what only the old version held goes; not stored: what
                        // only the new one would have held.
                        let (from, to) = match &written {
                            Ok(_) => (&current, &new),
                            Err(_) => (&new, &current),
                        };
                        crate::services::release_dropped(self, from, to).await;
                    }
                    match written {
                        Ok(rv) => return Ok(Outcome::Stored(with_resource_version(new, rv))),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(StoreError::NotFound(_)) => {
                            return Err(ApiError::not_found(resource, name))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Action::Delete => {
                    if dry_run {
                        return Ok(Outcome::Deleted(current));
                    }
                    match self.store.delete(&key, Some(kv.mod_revision)).await {
                        Ok((rv, _)) => {
                            if resource.builtin_kind() == "Service" {
                                crate::services::release(self, &current).await;
                            }
                            return Ok(Outcome::Deleted(with_resource_version(current, rv)));
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(StoreError::NotFound(_)) => {
                            return Err(ApiError::not_found(resource, name))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ApiError::conflict(
            resource,
            name,
            "too many concurrent updates; please try again",
        ))
    }

    /// Replaces an object (PUT), or one of its subresources (`status`, `finalize`).
    /// Returns the stored object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        mut object: Value,
        manager: &str,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        Self::check_identity(resource, namespace, &mut object)?;
        let body_name = object::name(&object).to_string();
        if body_name.is_empty() {
            object::metadata_mut(&mut object).insert("name".into(), json!(name));
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if resource.create_on_update && subresource.is_none() {
            let key = resource.key(namespace, name);
            if self.store.get(&key).await?.is_none() {
                let created = self
                    .create(resource, namespace, object.clone(), manager, dry_run)
                    .await;
                match created {
                    Err(e) if e.reason == "AlreadyExists" => {}
                    other => return other.map(|o| (o, true)),
                }
            }
        }
        let object = convert::to_storage(self, resource, object)?;
        let api_version = resource.api_version();
        let writer = Writer {
            manager,
            subresource,
            api_version: &api_version,
            structure: crate::schema::Structure::of(resource),
        };
        if subresource == Some("resize") {
            self.charge_resize(resource, namespace, name, dry_run, |_| Ok(object.clone()))
                .await?;
        }
        let namespace_object = self.pod_security_namespace(resource, namespace).await?;
        let outcome = self
            .guaranteed_update(resource, namespace, name, dry_run, |current| {
                let mut new = object.clone();
                self.admit_update(
                    resource,
                    subresource,
                    namespace,
                    namespace_object.as_ref(),
                    dry_run,
                    &mut new,
                    &current,
                )?;
                record_update(resource, &writer, &current, &mut new);
                Ok(finish_or_replace(resource, new))
            })
            .await?;
        Ok((outcome_object(outcome), false))
    }

    /// Charges what a resize adds to the pod's requests and limits to the namespace's
    /// quotas, before the write, as upstream's quota admission judges `pods/resize`;
    /// `requested` makes the pod the request asks for from the stored one. A write that
    /// then fails holds the charge until the quota controller recounts, as a failed
    /// create does.
    async fn charge_resize(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
        requested: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<()> {
        let Some(ns) = namespace.filter(|_| self.admission.resource_quota) else {
            return Ok(());
        };
        let current = self.get(resource, namespace, name).await?;
        let mut new = requested(&current)?;
        // What the strategy keeps of the request; its refusals come with the write.
        let _ = crate::pod_resize::prepare_update(&mut new, &current);
        crate::quota::charge_increase(self, resource, ns, &new, &current, dry_run).await
    }

    /// Applies a patch to the stored object (or to its `status`). A server-side apply
    /// creates the object if it does not exist; the flag says whether it did.
    pub async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch: Patch<'_>,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        let api_version = resource.api_version();
        let writer = Writer {
            manager: patch.manager,
            subresource: patch.via.or(subresource),
            api_version: &api_version,
            structure: crate::schema::Structure::of(resource),
        };
        let structure = writer.structure;
        let reset = managedfields::reset_field(resource.has_subresource("status"), subresource);
        let applied = match patch.patch_type {
            PatchType::Apply => Some(crate::patch::parse_apply(patch.body)?),
            _ => None,
        };
        if let Some(config) = &applied {
            if subresource.is_none()
                && self
                    .store
                    .get(&resource.key(namespace, name))
                    .await?
                    .is_none()
            {
                let mut object =
                    managedfields::apply(None, config.clone(), &writer, patch.force, reset)?;
                crate::crd::check_unknown_applied_fields(
                    resource,
                    &object,
                    patch.field_validation,
                )?;
                crate::field_validation::check_applied(
                    resource,
                    &mut object,
                    patch.field_validation,
                )?;
                Self::check_identity(resource, namespace, &mut object)?;
                match object::name(&object) {
                    "" => {
                        object::metadata_mut(&mut object).insert("name".into(), json!(name));
                    }
                    body_name if body_name != name => {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({body_name}) does not match the name on the URL ({name})"
                        )))
                    }
                    _ => {}
                }
                let created = self
                    .create_with(resource, namespace, object, CreateFields::Applied, dry_run)
                    .await;
                match created {
                    // Created meanwhile by someone else: apply to theirs.
                    Err(e) if e.reason == "AlreadyExists" => {}
                    other => return other.map(|o| (o, true)),
                }
            }
        }
        if subresource == Some("resize") && applied.is_none() {
            self.charge_resize(resource, namespace, name, dry_run, |current| {
                crate::patch::apply(patch.patch_type, current, patch.body, structure)
            })
            .await?;
        }
        let namespace_object = self.pod_security_namespace(resource, namespace).await?;
        let outcome = self
            .guaranteed_update(resource, namespace, name, dry_run, |current| {
                let served = convert::from_storage(self, resource, current.clone())?;
                let mut new = match &applied {
                    Some(config) => {
                        let mut new = managedfields::apply(
                            Some(&served),
                            config.clone(),
                            &writer,
                            patch.force,
                            reset,
                        )?;
                        crate::crd::check_unknown_applied_fields(
                            resource,
                            &new,
                            patch.field_validation,
                        )?;
                        crate::field_validation::check_applied(
                            resource,
                            &mut new,
                            patch.field_validation,
                        )?;
                        new
                    }
                    None => {
                        let mut new =
                            crate::patch::apply(patch.patch_type, &served, patch.body, structure)?;
                        // Unknown fields are judged on what the patch produces (repeated
                        // ones in a patch's own body are not looked for).
                        crate::crd::check_unknown_fields(resource, &new, patch.field_validation)?;
                        crate::field_validation::check(
                            resource,
                            &mut new,
                            &[],
                            false,
                            patch.field_validation,
                        )?;
                        new
                    }
                };
                // A patch that names no resourceVersion applies to whatever is current.
                if object::meta_str(&new, "resourceVersion").is_none() {
                    if let Some(rv) = object::meta_str(&current, "resourceVersion") {
                        let rv = rv.to_string();
                        object::metadata_mut(&mut new).insert("resourceVersion".into(), json!(rv));
                    }
                }
                Self::check_identity(resource, namespace, &mut new)?;
                let mut new = convert::to_storage(self, resource, new)?;
                if object::name(&new) != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        object::name(&new)
                    )));
                }
                // What an apply recorded survives the strategy (a status write starts
                // from the stored object); other patches are recorded now.
                let recorded = object::metadata(&new)
                    .and_then(|m| m.get("managedFields"))
                    .cloned();
                self.admit_update(
                    resource,
                    subresource,
                    namespace,
                    namespace_object.as_ref(),
                    dry_run,
                    &mut new,
                    &current,
                )?;
                match (&applied, recorded) {
                    (None, _) => record_update(resource, &writer, &current, &mut new),
                    (Some(_), Some(fields)) => {
                        object::metadata_mut(&mut new).insert("managedFields".into(), fields);
                    }
                    (Some(_), None) => {
                        object::metadata_mut(&mut new).shift_remove("managedFields");
                    }
                }
                Ok(finish_or_replace(resource, new))
            })
            .await?;
        Ok((outcome_object(outcome), false))
    }

    /// Deletes an object as upstream does: at once, or by marking it (finalizers, graceful
    /// pod termination, namespace teardown). Returns the object and whether it is gone.
    pub async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        let outcome = self
            .guaranteed_update(resource, namespace, name, dry_run, |current| {
                check_preconditions(resource, name, &current, options.preconditions.as_ref())?;
                crate::noderestriction::admit_delete(resource, &current)?;
                let request = crate::webhooks::Request {
                    resource,
                    subresource: None,
                    namespace,
                    name,
                    operation: "DELETE",
                    object: None,
                    old_object: Some(&current),
                    dry_run,
                };
                crate::policy::validating::validate(self, &request)?;
                crate::webhooks::validate_in_place(self, &request)?;
                Ok(deletion_action(resource, current, options))
            })
            .await?;
        Ok(match outcome {
            Outcome::Deleted(object) => (object, true),
            Outcome::Stored(object) => (object, false),
        })
    }

    /// Deletes every object a list would return.
    pub async fn delete_collection(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        list: &ListOptions,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> ApiResult<(i64, Vec<Value>)> {
        let page = self.list(resource, namespace, list).await?;
        let mut deleted = Vec::with_capacity(page.items.len());
        for item in &page.items {
            let value = item.value()?;
            let item_namespace = object::namespace(&value).map(str::to_string);
            match self
                .delete(
                    resource,
                    item_namespace.as_deref(),
                    object::name(&value),
                    options,
                    dry_run,
                )
                .await
            {
                Ok((object, _)) => deleted.push(object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((page.rv, deleted))
    }

    /// Whether a stored object matches a field selector as the version `resource` serves
    /// shows it. A custom object stored in another version is converted first: its
    /// selectable fields are paths in the version asked for (upstream's storage is per
    /// served version), and the stored shape may not hold them. Name and namespace read
    /// the same in every version: selectors on them alone convert nothing.
    pub fn fields_match(
        &self,
        resource: &ResourceInfo,
        selector: &FieldSelector,
        object: &CachedObject,
    ) -> ApiResult<bool> {
        if selector.is_empty() {
            return Ok(true);
        }
        if resource.custom.is_some()
            && convert::needs_conversion(resource)
            && !selector.only_metadata()
        {
            let served = convert::from_storage(self, resource, object.value()?)?;
            return Ok(selector.matches(&|f| strategy::field_value(&served, f)));
        }
        Ok(selector.matches(&|f| object.field(f)))
    }

    /// Lists objects, from the watch cache or, for a continuation or an exact older
    /// revision, from the store at that revision.
    pub async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> ApiResult<ListPage> {
        options
            .field_selector
            .check_supported(&strategy::selectable_fields_of(resource))?;
        let prefix = resource.key_prefix(namespace);
        if let Some(token) = &options.continue_token {
            let token = decode_continue(token)?;
            let start = format!("{prefix}{}", token.start);
            let rv = match token.rv {
                LATEST => self.store.current_revision().await?,
                rv => rv,
            };
            return self
                .list_from_store(resource, &prefix, &start, rv, options)
                .await;
        }
        let requested_rv = match options.resource_version.as_deref() {
            None | Some("") => None,
            Some(rv) => Some(rv.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {}", quote(rv)))
            })?),
        };
        if options.resource_version_match.as_deref() == Some("Exact") {
            let rv = requested_rv.filter(|rv| *rv > 0).ok_or_else(|| {
                ApiError::bad_request(
                    "resourceVersionMatch: Exact requires a resourceVersion greater than 0",
                )
            })?;
            return self
                .list_from_store(resource, &prefix, &prefix, rv, options)
                .await;
        }
        match requested_rv {
            // The newest state: wait until the cache has every write the store has.
            None => {
                let current = self.store.current_revision().await?;
                self.cache.wait_for(current).await?;
            }
            Some(rv) if rv > 0 => self.cache.wait_for(rv).await?,
            Some(_) => {}
        }
        let snapshot = self.cache.snapshot(&prefix, None);
        let matches = |o: &Arc<CachedObject>| -> ApiResult<bool> {
            Ok(options.label_selector.matches(&o.labels)
                && self.fields_match(resource, &options.field_selector, o)?)
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut iter = snapshot.objects.iter();
        for object in iter.by_ref() {
            if !matches(object)? {
                continue;
            }
            items.push(object.clone());
            if options.limit > 0 && items.len() == options.limit {
                last_key = Some(object.key.clone());
                break;
            }
        }
        let (mut continue_token, mut remaining) = (None, None);
        if let Some(last) = last_key {
            let mut rest = Vec::new();
            for object in iter {
                if matches(object)? {
                    rest.push(object);
                }
            }
            if !rest.is_empty() {
                let start = format!("{}\0", &last[prefix.len()..]);
                continue_token = Some(encode_continue(snapshot.rv, start));
                if options.label_selector.is_empty() && options.field_selector.is_empty() {
                    remaining = Some(rest.len() as i64);
                }
            }
        }
        Ok(ListPage {
            rv: snapshot.rv,
            items,
            continue_token,
            remaining,
        })
    }

    async fn list_from_store(
        &self,
        resource: &ResourceInfo,
        prefix: &str,
        start: &str,
        rv: i64,
        options: &ListOptions,
    ) -> ApiResult<ListPage> {
        let end = skiff_store::prefix_end(prefix);
        let mut items = Vec::new();
        let mut next_start = start.to_string();
        let batch = if options.limit > 0 {
            options.limit.max(100)
        } else {
            0
        };
        loop {
            let response = self
                .store
                .range(RangeRequest {
                    start: next_start.clone(),
                    end: end.clone(),
                    revision: Some(rv),
                    limit: batch,
                })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if options.continue_token.is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    )
                    .with_continue(encode_continue(
                        LATEST,
                        start.get(prefix.len()..).unwrap_or_default().to_string(),
                    )),
                    StoreError::Compacted { .. } => ApiError::gone(format!(
                        "too old resource version: {rv}"
                    )),
                    other => other.into(),
                })?;
            let mut reached_limit = None;
            for kv in &response.kvs {
                let object = Arc::new(CachedObject::from_kv(kv).map_err(ApiError::internal)?);
                if options.label_selector.matches(&object.labels)
                    && self.fields_match(resource, &options.field_selector, &object)?
                {
                    items.push(object);
                    if options.limit > 0 && items.len() == options.limit {
                        reached_limit = Some(kv.key.clone());
                        break;
                    }
                }
            }
            if let Some(last) = reached_limit {
                let more_after = self
                    .store
                    .range(RangeRequest {
                        start: format!("{last}\0"),
                        end: end.clone(),
                        revision: Some(rv),
                        limit: 1,
                    })
                    .await?;
                let continue_token = (!more_after.kvs.is_empty())
                    .then(|| encode_continue(rv, format!("{}\0", &last[prefix.len()..])));
                return Ok(ListPage {
                    rv,
                    items,
                    continue_token,
                    remaining: None,
                });
            }
            match (response.more, response.kvs.last()) {
                (true, Some(last)) => next_start = format!("{}\0", last.key),
                _ => break,
            }
        }
        Ok(ListPage {
            rv,
            items,
            continue_token: None,
            remaining: None,
        })
    }

    /// Assigns a pod to a node (`pods/binding`), once.
    pub async fn bind(
        &self,
        pods: &ResourceInfo,
        namespace: &str,
        name: &str,
        binding: &Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        let node = binding
            .get("target")
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid("Binding", "", name, vec![Cause::required("target.name")])
            })?
            .to_string();
        self.guaranteed_update(pods, Some(namespace), name, dry_run, |mut pod| {
            if object::meta_str(&pod, "deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    pods,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(existing) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
                if !existing.is_empty() {
                    return Err(ApiError::conflict(
                        pods,
                        name,
                        &format!("pod {name} is already assigned to node {}", quote(existing)),
                    ));
                }
            }
            if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), json!(node));
            }
            set_condition(
                &mut pod,
                json!({
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": null,
                    "lastTransitionTime": object::now_rfc3339(),
                }),
            );
            Ok(Action::Replace(pod))
        })
        .await?;
        Ok(())
    }
}

fn set_condition(object: &mut Value, condition: Value) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    let status = fields.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c.get("type") != condition.get("type"));
        list.push(condition);
    }
}

/// Records an update by `writer` in `new`'s `managedFields`.
fn record_update(resource: &ResourceInfo, writer: &Writer, current: &Value, new: &mut Value) {
    let reset = managedfields::reset_field(resource.has_subresource("status"), writer.subresource);
    managedfields::record_update(Some(current), new, writer, reset);
}

fn outcome_object(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Stored(object) | Outcome::Deleted(object) => object,
    }
}

/// A `422 Invalid` naming the causes, if there are any.
fn refuse(resource: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiResult<()> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &resource.kind,
        &resource.group,
        name,
        causes,
    ))
}

/// The update-time rules shared by PUT and PATCH: optimistic concurrency, immutable
/// metadata, status/spec separation, generation.
fn prepare_update(
    resource: &ResourceInfo,
    subresource: Option<&str>,
    new: &mut Value,
    current: &Value,
) -> ApiResult<()> {
    let name = object::name(current).to_string();
    match object::meta_str(new, "resourceVersion") {
        Some(rv) if !rv.is_empty() && Some(rv) != object::meta_str(current, "resourceVersion") => {
            return Err(ApiError::stale(resource, &name));
        }
        _ => {}
    }
    if let Some(uid) = object::meta_str(new, "uid") {
        if Some(uid) != object::meta_str(current, "uid") {
            return Err(ApiError::invalid(
                &resource.kind,
                &resource.group,
                &name,
                vec![Cause::invalid("metadata.uid", uid, "field is immutable")],
            ));
        }
    }
    if resource.builtin_kind() == "CertificateSigningRequest" {
        crate::certificates::prepare_update(subresource, new, current);
        refuse(
            resource,
            &name,
            crate::certificates::validate_update(new, current),
        )?;
    }
    match subresource {
        _ if resource.builtin_kind() == "CertificateSigningRequest" => {}
        Some("status") => {
            strategy::prepare_for_status_update(resource.builtin_kind(), new, current);
            if resource.custom.is_some() {
                // Custom objects are pruned and defaulted on every write.
                strategy::apply_defaults(resource, new);
            }
        }
        Some("ephemeralcontainers") => {
            refuse(
                resource,
                &name,
                crate::ephemeral::prepare_update(new, current),
            )?;
        }
        Some("resize") => {
            refuse(
                resource,
                &name,
                crate::pod_resize::prepare_update(new, current),
            )?;
        }
        Some("finalize") => {
            // Only the namespace's spec.finalizers change through `finalize`.
            let finalizers = new.pointer("/spec/finalizers").cloned();
            let mut merged = current.clone();
            if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("finalizers".into(), finalizers.unwrap_or(json!([])));
            }
            *new = merged;
        }
        _ => {
            strategy::prepare_for_update(resource, new, current);
            refuse(
                resource,
                &name,
                strategy::validate_update(resource, new, current),
            )?;
            if resource.builtin_kind() == "Service" {
                refuse(
                    resource,
                    &name,
                    crate::services::keep_allocations(new, current),
                )?;
            }
        }
    }
    // What the server owns is carried over from the stored object.
    let current_meta = object::metadata(current).cloned().unwrap_or_default();
    let metadata = object::metadata_mut(new);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match current_meta.get(owned) {
            Some(value) => {
                metadata.insert(owned.into(), value.clone());
            }
            None => {
                metadata.shift_remove(owned);
            }
        }
    }
    metadata.shift_remove("selfLink");
    metadata.shift_remove("generateName");
    if let Some(generate_name) = current_meta.get("generateName") {
        metadata.insert("generateName".into(), generate_name.clone());
    }
    if resource.tracks_generation && strategy::spec_changed(resource, new, current) {
        let generation = current_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        object::metadata_mut(new).insert("generation".into(), json!(generation));
    }
    if object::meta_str(current, "deletionTimestamp").is_some() {
        let added: Vec<String> = object::finalizers(new)
            .into_iter()
            .filter(|f| !object::finalizers(current).contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                &resource.kind,
                &resource.group,
                &name,
                vec![Cause::forbidden(
                    "metadata.finalizers",
                    &format!("no new finalizers can be added if the object is being deleted, found new finalizers {}", quote(&added.join(","))),
                )],
            ));
        }
    }
    let mut causes = if subresource == Some("status") {
        strategy::validate_for_status(resource, new)
    } else {
        strategy::validate(resource, new)
    };
    causes.extend(strategy::validate_transition(resource, new, current));
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            &resource.kind,
            &resource.group,
            &name,
            causes,
        ));
    }
    Ok(())
}

/// An object being deleted goes once nothing holds it: no finalizers, no pending grace
/// period, and (for namespaces) no namespace finalizers.
fn finish_or_replace(resource: &ResourceInfo, object: Value) -> Action {
    if ready_to_go(resource, &object) {
        Action::Delete
    } else {
        Action::Replace(object)
    }
}

fn ready_to_go(resource: &ResourceInfo, object: &Value) -> bool {
    if object::meta_str(object, "deletionTimestamp").is_none()
        || !object::finalizers(object).is_empty()
    {
        return false;
    }
    if resource.builtin_kind() == "Namespace" {
        return object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    }
    object::metadata(object)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
        == 0
}

fn check_preconditions(
    resource: &ResourceInfo,
    name: &str,
    current: &Value,
    preconditions: Option<&Preconditions>,
) -> ApiResult<()> {
    let Some(pre) = preconditions else {
        return Ok(());
    };
    if let Some(uid) = &pre.uid {
        let actual = object::meta_str(current, "uid").unwrap_or("");
        if uid != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &pre.resource_version {
        let actual = object::meta_str(current, "resourceVersion").unwrap_or("");
        if rv != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"),
            ));
        }
    }
    Ok(())
}

/// Decides how a DELETE treats the current object.
fn deletion_action(resource: &ResourceInfo, mut current: Value, options: &DeleteOptions) -> Action {
    let already_deleting = object::meta_str(&current, "deletionTimestamp").is_some();
    if resource.builtin_kind() == "CustomResourceDefinition" && !already_deleting {
        crate::crd::controller::mark_terminating(&mut current);
    }
    let grace = match resource.builtin_kind() {
        "Pod" => pod_grace_period(&current, options.grace_period_seconds),
        _ => 0,
    };
    if resource.builtin_kind() == "Namespace" {
        if already_deleting {
            return Action::Keep;
        }
        let metadata = object::metadata_mut(&mut current);
        metadata.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        if let Some(status) = current.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("phase".into(), json!("Terminating"));
        }
        return finish_or_replace(resource, current);
    }

    let mut finalizers = object::finalizers(&current);
    let policy_finalizer = match (
        options.propagation_policy.as_deref(),
        options.orphan_dependents,
    ) {
        (Some("Orphan"), _) | (None, Some(true)) => Some("orphan"),
        (Some("Foreground"), _) => Some("foregroundDeletion"),
        _ => None,
    };
    if let Some(f) = policy_finalizer {
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_string());
        }
    }

    if already_deleting {
        let pending_grace = object::metadata(&current)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if grace >= pending_grace {
            // A later delete can only shorten the grace period.
            return Action::Keep;
        }
    }
    if finalizers.is_empty() && grace == 0 {
        return Action::Delete;
    }
    let deadline = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let metadata = object::metadata_mut(&mut current);
    metadata.insert(
        "deletionTimestamp".into(),
        json!(object::format_time(deadline)),
    );
    metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if !finalizers.is_empty() {
        metadata.insert("finalizers".into(), json!(finalizers));
    }
    if grace > 0 && resource.builtin_kind() == "Pod" {
        // A graceful deletion is a change the kubelet acts on: upstream bumps the pod's
        // generation, so that `status.observedGeneration` tells when it has seen it.
        let generation = metadata
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        metadata.insert("generation".into(), json!(generation + 1));
    }
    Action::Replace(current)
}

/// A pod's grace period: the request's, else the pod's own; none for a pod that never
/// ran (not scheduled, or already finished), since no kubelet will act on it.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let unscheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished {
        return 0;
    }
    let grace = requested.unwrap_or_else(|| {
        pod.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    // Upstream turns a negative request into the minimum grace of one second.
    if grace < 0 {
        1
    } else {
        grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "web-7\0".into());
        let decoded = decode_continue(&token).unwrap();
        assert_eq!(decoded.rv, 42);
        assert_eq!(decoded.start, "web-7\0");
        assert!(decode_continue("garbage!").is_err());
        // The inconsistent token an expired list offers; other revisions below 1 are not.
        assert_eq!(
            decode_continue(&encode_continue(LATEST, "a".into()))
                .unwrap()
                .rv,
            LATEST
        );
        assert!(decode_continue(&encode_continue(-2, "a".into())).is_err());
        assert!(decode_continue(&encode_continue(0, "a".into())).is_err());
    }

    #[test]
    fn grace_periods() {
        let scheduled = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}});
        assert_eq!(pod_grace_period(&scheduled, None), 10);
        assert_eq!(pod_grace_period(&scheduled, Some(0)), 0);
        let pending = json!({"spec": {}});
        assert_eq!(pod_grace_period(&pending, Some(30)), 0);
    }

    #[test]
    fn a_graceful_pod_deletion_bumps_the_generation() {
        let pods = crate::resources::builtin()
            .into_iter()
            .find(|r| r.plural == "pods" && r.group.is_empty())
            .expect("pods");
        let pod = json!({"metadata": {"name": "p", "generation": 3},
                         "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}});
        let Action::Replace(deleting) =
            deletion_action(&pods, pod.clone(), &DeleteOptions::default())
        else {
            panic!("a scheduled pod is deleted gracefully");
        };
        assert_eq!(deleting["metadata"]["generation"], 4);
        assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 10);
        let immediate = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            deletion_action(&pods, pod, &immediate),
            Action::Delete
        ));
    }
}
