//! The schema definitions the OpenAPI documents publish, by upstream's definition names
//! (`io.k8s.api.core.v1.Pod`), generated from `k8s-openapi`'s `JsonSchema` impls (which
//! carry upstream's names and descriptions) and annotated with the merge semantics of
//! [`crate::schema`].
//!
//! Definitions are kept in one neutral form: `$ref`s point at `#/components/schemas/<name>`
//! and may have siblings (a field's own description next to its type's reference), as
//! JSON Schema allows. [`super::v3`] and [`super::v2`] turn that into what each OpenAPI
//! version allows.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use k8s_openapi::Resource;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Value};

pub const REF_PREFIX: &str = "#/components/schemas/";
pub const GVK_EXTENSION: &str = "x-kubernetes-group-version-kind";

/// A group, version and kind, as the `x-kubernetes-group-version-kind` extension names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Gvk {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }
    }

    pub fn to_value(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

/// A kind and the name of the definition that describes its objects.
#[derive(Debug, Clone)]
pub struct KindSchema {
    pub gvk: Gvk,
    pub name: String,
}

/// Every definition, and which of them are kinds.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    pub schemas: BTreeMap<String, Value>,
    pub kinds: Vec<KindSchema>,
}

/// Registers each type as a kind, with its group, version and kind from `k8s-openapi`'s
/// `Resource` impl, so that the list of types is the only thing written here.
macro_rules! builtin_kinds {
    ($($ty:ty),* $(,)?) => {
        fn builtin_kinds(generator: &mut SchemaGenerator) -> Vec<KindSchema> {
            vec![$(kind_of::<$ty>(generator)),*]
        }
    };
}

fn kind_of<T: Resource + JsonSchema>(generator: &mut SchemaGenerator) -> KindSchema {
    generator.subschema_for::<T>();
    KindSchema {
        gvk: Gvk::new(T::GROUP, T::VERSION, T::KIND),
        name: T::schema_name().into_owned(),
    }
}

// Every built-in kind the catalogue serves (`crate::resources::builtin`), and the kinds its
// subresources take (scale, eviction, token requests). A unit test checks the catalogue
// against this list.
builtin_kinds![
    api::core::v1::Binding,
    api::core::v1::ConfigMap,
    api::core::v1::Endpoints,
    api::core::v1::Event,
    api::core::v1::LimitRange,
    api::core::v1::Namespace,
    api::core::v1::Node,
    api::core::v1::PersistentVolumeClaim,
    api::core::v1::PersistentVolume,
    api::core::v1::Pod,
    api::core::v1::PodTemplate,
    api::core::v1::ReplicationController,
    api::core::v1::ResourceQuota,
    api::core::v1::Secret,
    api::core::v1::ServiceAccount,
    api::core::v1::Service,
    api::admissionregistration::v1::MutatingAdmissionPolicy,
    api::admissionregistration::v1::MutatingAdmissionPolicyBinding,
    api::admissionregistration::v1::MutatingWebhookConfiguration,
    api::admissionregistration::v1::ValidatingAdmissionPolicy,
    api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    api::admissionregistration::v1::ValidatingWebhookConfiguration,
    apiextensions::v1::CustomResourceDefinition,
    k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
    api::apps::v1::ControllerRevision,
    api::apps::v1::DaemonSet,
    api::apps::v1::Deployment,
    api::apps::v1::ReplicaSet,
    api::apps::v1::StatefulSet,
    api::authentication::v1::TokenReview,
    api::authentication::v1::SelfSubjectReview,
    api::authentication::v1::TokenRequest,
    api::authorization::v1::LocalSubjectAccessReview,
    api::authorization::v1::SelfSubjectAccessReview,
    api::authorization::v1::SelfSubjectRulesReview,
    api::authorization::v1::SubjectAccessReview,
    api::autoscaling::v1::HorizontalPodAutoscaler,
    api::autoscaling::v1::Scale,
    api::autoscaling::v2::HorizontalPodAutoscaler,
    api::batch::v1::CronJob,
    api::batch::v1::Job,
    api::certificates::v1::CertificateSigningRequest,
    api::coordination::v1::Lease,
    api::discovery::v1::EndpointSlice,
    api::events::v1::Event,
    api::flowcontrol::v1::FlowSchema,
    api::flowcontrol::v1::PriorityLevelConfiguration,
    api::networking::v1::IPAddress,
    api::networking::v1::IngressClass,
    api::networking::v1::Ingress,
    api::networking::v1::NetworkPolicy,
    api::networking::v1::ServiceCIDR,
    api::node::v1::RuntimeClass,
    api::policy::v1::Eviction,
    api::policy::v1::PodDisruptionBudget,
    api::rbac::v1::ClusterRoleBinding,
    api::rbac::v1::ClusterRole,
    api::rbac::v1::RoleBinding,
    api::rbac::v1::Role,
    api::resource::v1::DeviceClass,
    api::resource::v1::DeviceTaintRule,
    api::resource::v1::ResourceClaim,
    api::resource::v1::ResourceClaimTemplate,
    api::resource::v1::ResourceSlice,
    api::scheduling::v1::PriorityClass,
    api::storage::v1::CSIDriver,
    api::storage::v1::CSINode,
    api::storage::v1::CSIStorageCapacity,
    api::storage::v1::StorageClass,
    api::storage::v1::VolumeAttachment,
    api::storage::v1::VolumeAttributesClass,
    api::storagemigration::v1::StorageVersionMigration,
];

/// Definitions every group-version's document carries, as upstream's do (its operations
/// refer to them): options and results of requests rather than kinds.
pub const SHARED: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
];

impl Definitions {
    /// The built-in kinds' definitions, with the list and patch extensions of
    /// [`crate::schema`] on their fields.
    pub fn builtin() -> Self {
        let mut generator = SchemaSettings::openapi3()
            .with(|s| {
                // Schemas are adapted to each OpenAPI version by hand (`v2`, `v3`).
                s.transforms.clear();
                s.meta_schema = None;
            })
            .into_generator();
        let mut kinds = builtin_kinds(&mut generator);
        // PodCertificateRequest is `certificates.k8s.io/v1` in 1.37; `k8s-openapi` knows
        // only its `v1beta1` form, whose fields are the same: that schema describes it.
        kinds.push(KindSchema {
            gvk: Gvk::new("certificates.k8s.io", "v1", "PodCertificateRequest"),
            name: kind_of::<api::certificates::v1beta1::PodCertificateRequest>(&mut generator).name,
        });
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
        let mut definitions = Definitions {
            schemas: generator.take_definitions(false).into_iter().collect(),
            kinds: Vec::new(),
        };
        for kind in kinds {
            definitions.mark_kind(kind);
        }
        definitions.fix_required();
        super::extensions::annotate(&mut definitions);
        definitions.add_metrics();
        definitions
    }

    /// Adds a kind whose schema is not one of the built-in types (a custom resource's,
    /// from its definition). `schema` may refer to the built-in definitions
    /// (`#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`) and keeps
    /// whatever `x-kubernetes-*` extensions it carries.
    pub fn add_kind(&mut self, gvk: Gvk, name: String, schema: Value) {
        self.schemas.insert(name.clone(), schema);
        self.mark_kind(KindSchema { gvk, name });
    }

    /// Adds the list kind of `item` (`PodList` for `Pod`), named after it in the same
    /// package (`io.k8s.api.core.v1.PodList`), as the list operations answer with.
    pub fn add_list(&mut self, item: &Gvk, list_kind: &str) {
        let Some(item) = self.kinds.iter().find(|k| k.gvk == *item).cloned() else {
            return;
        };
        let package = item
            .name
            .rsplit_once('.')
            .map_or("", |(package, _)| package);
        let name = format!("{package}.{list_kind}");
        if self.schemas.contains_key(&name) {
            return;
        }
        let field = |field: &str| {
            self.schemas
                .get(&item.name)
                .and_then(|s| s.pointer(&format!("/properties/{field}")))
                .cloned()
                .unwrap_or_else(|| json!({"type": "string"}))
        };
        let schema = json!({
            "description": format!("{list_kind} is a list of {} objects.", item.gvk.kind),
            "type": "object",
            "properties": {
                "apiVersion": field("apiVersion"),
                "items": {
                    "description": format!("The {} objects.", item.gvk.kind),
                    "type": "array",
                    "items": {"$ref": format!("{REF_PREFIX}{}", item.name)},
                },
                "kind": field("kind"),
                "metadata": {
                    "description": "Standard list metadata.",
                    "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
                },
            },
            "required": ["items"],
        });
        let gvk = Gvk {
            kind: list_kind.to_string(),
            ..item.gvk
        };
        self.add_kind(gvk, name, schema);
    }

    fn mark_kind(&mut self, kind: KindSchema) {
        if let Some(Value::Object(schema)) = self.schemas.get_mut(&kind.name) {
            let entry = schema
                .entry(GVK_EXTENSION)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(gvks) = entry {
                let gvk = kind.gvk.to_value();
                if !gvks.contains(&gvk) {
                    gvks.push(gvk);
                }
            }
        }
        self.kinds.push(kind);
    }

    /// Puts upstream's `required` lists where `k8s-openapi`'s differ (compared with
    /// upstream's 1.37 schemas): its Rust types hold `metadata` unconditionally, and a
    /// reference's `name`, which upstream defaults to "", so it requires them; and it
    /// leaves a required time optional. `kubectl explain` prints `-required-` from these.
    fn fix_required(&mut self) {
        const UPSTREAM: &[(&str, &[&str])] = &[
            ("io.k8s.api.core.v1.ConfigMapEnvSource", &[]),
            ("io.k8s.api.core.v1.ConfigMapKeySelector", &["key"]),
            ("io.k8s.api.core.v1.ConfigMapProjection", &[]),
            ("io.k8s.api.core.v1.ConfigMapVolumeSource", &[]),
            ("io.k8s.api.core.v1.Event", &["metadata", "involvedObject"]),
            ("io.k8s.api.core.v1.LocalObjectReference", &[]),
            ("io.k8s.api.core.v1.SecretEnvSource", &[]),
            ("io.k8s.api.core.v1.SecretKeySelector", &["key"]),
            ("io.k8s.api.core.v1.SecretProjection", &[]),
            ("io.k8s.api.events.v1.Event", &["eventTime"]),
        ];
        for (name, schema) in self.schemas.iter_mut() {
            let Value::Object(schema) = schema else {
                continue;
            };
            let required: Vec<Value> = match UPSTREAM.iter().find(|(n, _)| n == name) {
                Some((_, required)) => required.iter().map(|f| json!(f)).collect(),
                None => match schema.get("required") {
                    Some(Value::Array(required)) => required
                        .iter()
                        .filter(|f| *f != "metadata")
                        .cloned()
                        .collect(),
                    _ => continue,
                },
            };
            if required.is_empty() {
                schema.shift_remove("required");
            } else {
                schema.insert("required".into(), Value::Array(required));
            }
        }
    }

    /// The definition of a kind, by its group, version and kind.
    pub fn kind(&self, group: &str, version: &str, kind: &str) -> Option<&KindSchema> {
        self.kinds
            .iter()
            .find(|k| k.gvk.group == group && k.gvk.version == version && k.gvk.kind == kind)
    }

    /// The names of `roots` and of every definition they refer to, directly or not.
    pub fn reachable<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<String> = roots.into_iter().map(str::to_string).collect();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(schema) = self.schemas.get(&name) {
                for_each_ref(schema, &mut |reference| {
                    if let Some(target) = ref_target(reference) {
                        if !seen.contains(target) {
                            pending.push(target.to_string());
                        }
                    }
                });
            }
        }
        seen.retain(|name| self.schemas.contains_key(name));
        seen
    }

    /// `metrics.k8s.io`'s kinds, which `k8s-openapi` does not have: served by the API
    /// server itself here, as metrics-server serves them upstream.
    fn add_metrics(&mut self) {
        let meta = |description: &str| json!({"description": description, "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")});
        let usage = json!({
            "description": "The CPU and memory in use.",
            "type": "object",
            "additionalProperties": {"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.api.resource.Quantity")},
        });
        let common = |description: &str| {
            json!({
                "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                "metadata": meta(description),
                "timestamp": {"description": "When the usage was measured: the end of the window it covers.", "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.Time")},
                "window": {"description": "How long the window the usage was averaged over is.", "type": "string"},
            })
        };
        let group = "io.k8s.metrics.pkg.apis.metrics.v1beta1";
        let mut node = common("Standard object's metadata.");
        node["usage"] = usage.clone();
        self.add_kind(
            Gvk::new("metrics.k8s.io", "v1beta1", "NodeMetrics"),
            format!("{group}.NodeMetrics"),
            json!({
                "description": "NodeMetrics is the resource usage of a node.",
                "type": "object",
                "properties": node,
                "required": ["timestamp", "window", "usage"],
            }),
        );
        self.schemas.insert(
            format!("{group}.ContainerMetrics"),
            json!({
                "description": "ContainerMetrics is the resource usage of a container.",
                "type": "object",
                "properties": {
                    "name": {"description": "The container's name in the pod's spec.", "type": "string"},
                    "usage": usage,
                },
                "required": ["name", "usage"],
            }),
        );
        let mut pod = common("Standard object's metadata.");
        pod["containers"] = json!({
            "description": "Each container's usage, measured over the same window.",
            "type": "array",
            "items": {"$ref": format!("{REF_PREFIX}{group}.ContainerMetrics")},
            "x-kubernetes-list-type": "atomic",
        });
        self.add_kind(
            Gvk::new("metrics.k8s.io", "v1beta1", "PodMetrics"),
            format!("{group}.PodMetrics"),
            json!({
                "description": "PodMetrics is the resource usage of a pod's containers.",
                "type": "object",
                "properties": pod,
                "required": ["timestamp", "window", "containers"],
            }),
        );
    }
}

/// The definition a `$ref` string names, if it is one of ours.
pub fn ref_target(reference: &str) -> Option<&str> {
    reference.strip_prefix(REF_PREFIX)
}

/// Calls `f` with every `$ref` in `schema`.
pub fn for_each_ref(schema: &Value, f: &mut impl FnMut(&str)) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => f(reference),
                    _ => for_each_ref(value, f),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| for_each_ref(item, f)),
        _ => {}
    }
}
