//! The catalogue of every resource this server serves: names, scope, short names,
//! categories, subresources and where objects are stored.
//!
//! Discovery, routing, the registry and `kubectl api-resources` all read this one table.
//! The built-in resources are fixed at start (adding one is one line in [`builtin`], plus,
//! when it needs them, a strategy in [`crate::strategy`] and printer columns in
//! [`crate::table`]); custom resources come and go with their CustomResourceDefinitions
//! ([`crate::crd`]), so the catalogue is a snapshot swapped whole on each change and
//! entries are shared as `Arc<ResourceInfo>`: a request keeps the entry it routed by even
//! if the definition goes away meanwhile, and nothing outlives the last user.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A resource as one group-version serves it.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<String>,
    /// The name under `/registry/` that holds the objects (upstream's layout).
    pub storage: String,
    /// The group-version objects are stored in, when several versions share storage.
    pub storage_version: String,
    /// Only `create` is served (bindings and the like).
    pub create_only: bool,
    /// `metadata.generation` counts changes to the spec.
    pub tracks_generation: bool,
    /// An update of an object that does not exist creates it.
    pub create_on_update: bool,
    /// DELETE answers with the object rather than a `Status`.
    pub returns_deleted_object: bool,
    /// Answered, never stored (the review APIs).
    pub ephemeral: bool,
    /// Read from the kubelets when asked, never stored (`metrics.k8s.io`).
    pub metrics: bool,
    /// For a custom resource: what its definition says about this version (schema,
    /// printer columns, scale paths). `None` for the built-in resources.
    pub custom: Option<Arc<crate::crd::CustomVersion>>,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        group_version(&self.group, &self.version)
    }

    pub fn list_kind(&self) -> String {
        match &self.custom {
            Some(custom) => custom.list_kind.clone(),
            None => format!("{}List", self.kind),
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }

    /// The kind for per-type behaviour of the built-in types (strategies, tables,
    /// defaults): empty for a custom resource, whose kind may repeat a built-in one.
    pub fn builtin_kind(&self) -> &str {
        match self.custom {
            Some(_) => "",
            None => &self.kind,
        }
    }

    /// `/registry/<storage>/` — or, for one namespace, `/registry/<storage>/<ns>/`.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.storage),
            _ => format!("/registry/{}/", self.storage),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.metrics {
            &["get", "list"]
        } else if self.create_only {
            &["create"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Starts a catalogue entry; the builder methods below fill in what differs from the defaults.
pub(crate) fn resource(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    singular: &str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: singular.into(),
        namespaced,
        short_names: Vec::new(),
        categories: Vec::new(),
        subresources: Vec::new(),
        storage: plural.into(),
        storage_version: String::new(),
        create_only: false,
        tracks_generation: false,
        create_on_update: false,
        returns_deleted_object: false,
        ephemeral: false,
        metrics: false,
        custom: None,
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

impl ResourceInfo {
    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = strings(names);
        self
    }
    fn all(mut self) -> Self {
        self.categories = strings(&["all"]);
        self
    }
    fn category(mut self, names: &[&str]) -> Self {
        self.categories = strings(names);
        self
    }
    fn sub(mut self, subresources: &[&str]) -> Self {
        self.subresources = strings(subresources);
        self
    }
    fn stored_as(mut self, storage: &str) -> Self {
        self.storage = storage.into();
        self
    }
    fn stored_in(mut self, api_version: &str) -> Self {
        self.storage_version = api_version.into();
        self
    }
    fn generation(mut self) -> Self {
        self.tracks_generation = true;
        self
    }
    fn upsert(mut self) -> Self {
        self.create_on_update = true;
        self
    }
    fn returns_object(mut self) -> Self {
        self.returns_deleted_object = true;
        self
    }
    fn create_only(mut self) -> Self {
        self.create_only = true;
        self
    }
    fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }
    fn review(mut self) -> Self {
        self.create_only = true;
        self.ephemeral = true;
        self
    }
}

const NS: bool = true;
const CLUSTER: bool = false;
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

/// Every built-in resource, in the order discovery lists them.
pub fn builtin() -> Vec<ResourceInfo> {
    vec![
        // core/v1
        resource("", "v1", "Binding", "bindings", "binding", NS).create_only(),
        resource("", "v1", "ConfigMap", "configmaps", "configmap", NS).short(&["cm"]),
        resource("", "v1", "Endpoints", "endpoints", "endpoints", NS)
            .short(&["ep"])
            .stored_as("services/endpoints")
            .upsert(),
        resource("", "v1", "Event", "events", "event", NS)
            .short(&["ev"])
            .upsert(),
        resource("", "v1", "LimitRange", "limitranges", "limitrange", NS).short(&["limits"]),
        resource("", "v1", "Namespace", "namespaces", "namespace", CLUSTER)
            .short(&["ns"])
            .sub(&["finalize", "status"])
            .returns_object(),
        resource("", "v1", "Node", "nodes", "node", CLUSTER)
            .short(&["no"])
            .sub(&["proxy", "status"])
            .stored_as("minions"),
        resource(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            NS,
        )
        .short(&["pvc"])
        .sub(STATUS),
        resource(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            "persistentvolume",
            CLUSTER,
        )
        .short(&["pv"])
        .sub(STATUS),
        resource("", "v1", "Pod", "pods", "pod", NS)
            .short(&["po"])
            .all()
            .sub(&[
                "attach",
                "binding",
                "ephemeralcontainers",
                "eviction",
                "exec",
                "log",
                "portforward",
                "proxy",
                "resize",
                "status",
            ])
            .generation()
            .returns_object(),
        resource("", "v1", "PodTemplate", "podtemplates", "podtemplate", NS),
        resource(
            "",
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            "replicationcontroller",
            NS,
        )
        .short(&["rc"])
        .all()
        .sub(STATUS_SCALE)
        .stored_as("controllers")
        .generation(),
        resource(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            "resourcequota",
            NS,
        )
        .short(&["quota"])
        .sub(STATUS),
        resource("", "v1", "Secret", "secrets", "secret", NS),
        resource(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            NS,
        )
        .short(&["sa"])
        .sub(&["token"]),
        resource("", "v1", "Service", "services", "service", NS)
            .short(&["svc"])
            .all()
            .sub(&["proxy", "status"])
            .stored_as("services/specs")
            .returns_object(),
        // admissionregistration.k8s.io/v1
        resource(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
            CLUSTER,
        )
        .generation(),
        resource(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingAdmissionPolicy",
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicy",
            CLUSTER,
        )
        .category(&["api-extensions"])
        .generation(),
        resource(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingAdmissionPolicyBinding",
            "mutatingadmissionpolicybindings",
            "mutatingadmissionpolicybinding",
            CLUSTER,
        )
        .category(&["api-extensions"])
        .generation(),
        resource(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            CLUSTER,
        )
        .sub(STATUS)
        .generation(),
        resource(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            CLUSTER,
        )
        .generation(),
        resource(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            "validatingwebhookconfiguration",
            CLUSTER,
        )
        .generation(),
        // apiextensions.k8s.io/v1
        resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "customresourcedefinition",
            CLUSTER,
        )
        .short(&["crd", "crds"])
        .category(&["api-extensions"])
        .sub(STATUS)
        .stored_as("apiextensions.k8s.io/customresourcedefinitions")
        .generation(),
        // apiregistration.k8s.io/v1: which server serves each group version (the
        // aggregator's routing table)
        resource(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
            "apiservices",
            "apiservice",
            CLUSTER,
        )
        .category(&["api-extensions"])
        .sub(STATUS)
        .stored_as("apiregistration.k8s.io/apiservices"),
        // apps/v1
        resource(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            "controllerrevision",
            NS,
        ),
        resource("apps", "v1", "DaemonSet", "daemonsets", "daemonset", NS)
            .short(&["ds"])
            .all()
            .sub(STATUS)
            .generation(),
        resource("apps", "v1", "Deployment", "deployments", "deployment", NS)
            .short(&["deploy"])
            .all()
            .sub(STATUS_SCALE)
            .generation(),
        resource("apps", "v1", "ReplicaSet", "replicasets", "replicaset", NS)
            .short(&["rs"])
            .all()
            .sub(STATUS_SCALE)
            .generation(),
        resource(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            "statefulset",
            NS,
        )
        .short(&["sts"])
        .all()
        .sub(STATUS_SCALE)
        .generation(),
        // authentication.k8s.io/v1 and authorization.k8s.io/v1: reviews, answered not stored
        resource(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            "tokenreview",
            CLUSTER,
        )
        .review(),
        resource(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
            CLUSTER,
        )
        .review(),
        resource(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            "localsubjectaccessreview",
            NS,
        )
        .review(),
        resource(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            CLUSTER,
        )
        .review(),
        resource(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
            CLUSTER,
        )
        .review(),
        resource(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            "subjectaccessreview",
            CLUSTER,
        )
        .review(),
        // autoscaling/v2 (stored) and autoscaling/v1 (converted)
        resource(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            NS,
        )
        .short(&["hpa"])
        .all()
        .sub(STATUS)
        .stored_in("autoscaling/v2"),
        resource(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            NS,
        )
        .short(&["hpa"])
        .all()
        .sub(STATUS)
        .stored_in("autoscaling/v2"),
        // batch/v1
        resource("batch", "v1", "CronJob", "cronjobs", "cronjob", NS)
            .short(&["cj"])
            .all()
            .sub(STATUS)
            .generation(),
        resource("batch", "v1", "Job", "jobs", "job", NS)
            .all()
            .sub(STATUS)
            .generation(),
        // certificates.k8s.io/v1
        resource(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            "certificatesigningrequest",
            CLUSTER,
        )
        .short(&["csr"])
        .sub(&["approval", "status"]),
        resource(
            "certificates.k8s.io",
            "v1",
            "PodCertificateRequest",
            "podcertificaterequests",
            "podcertificaterequest",
            NS,
        )
        .sub(STATUS),
        // coordination.k8s.io/v1
        resource("coordination.k8s.io", "v1", "Lease", "leases", "lease", NS).upsert(),
        // discovery.k8s.io/v1
        resource(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            NS,
        ),
        // events.k8s.io/v1 (stored as core/v1 events)
        resource("events.k8s.io", "v1", "Event", "events", "event", NS)
            .short(&["ev"])
            .stored_in("v1")
            .upsert(),
        // flowcontrol.apiserver.k8s.io/v1 (served and stored; no request is held back by
        // them: Skiff has no priority and fairness of its own yet)
        resource(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "FlowSchema",
            "flowschemas",
            "flowschema",
            CLUSTER,
        )
        .sub(STATUS)
        .generation(),
        resource(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "PriorityLevelConfiguration",
            "prioritylevelconfigurations",
            "prioritylevelconfiguration",
            CLUSTER,
        )
        .sub(STATUS)
        .generation(),
        // networking.k8s.io/v1
        resource(
            "networking.k8s.io",
            "v1",
            "IPAddress",
            "ipaddresses",
            "ipaddress",
            CLUSTER,
        )
        .short(&["ip"]),
        resource(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            "ingressclass",
            CLUSTER,
        ),
        resource(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            "ingress",
            NS,
        )
        .short(&["ing"])
        .sub(STATUS)
        .stored_as("ingress")
        .generation(),
        resource(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "networkpolicy",
            NS,
        )
        .short(&["netpol"])
        .generation(),
        resource(
            "networking.k8s.io",
            "v1",
            "ServiceCIDR",
            "servicecidrs",
            "servicecidr",
            CLUSTER,
        )
        .sub(STATUS),
        // node.k8s.io/v1
        resource(
            "node.k8s.io",
            "v1",
            "RuntimeClass",
            "runtimeclasses",
            "runtimeclass",
            CLUSTER,
        ),
        // policy/v1
        resource(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            NS,
        )
        .short(&["pdb"])
        .sub(STATUS)
        .generation(),
        // rbac.authorization.k8s.io/v1
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            "clusterrolebinding",
            CLUSTER,
        ),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            "clusterrole",
            CLUSTER,
        ),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            "rolebinding",
            NS,
        ),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            "role",
            NS,
        ),
        // resource.k8s.io/v1 (dynamic resource allocation: served and stored; no driver or
        // scheduler plugin allocates claims yet)
        resource(
            "resource.k8s.io",
            "v1",
            "DeviceClass",
            "deviceclasses",
            "deviceclass",
            CLUSTER,
        )
        .generation(),
        resource(
            "resource.k8s.io",
            "v1",
            "DeviceTaintRule",
            "devicetaintrules",
            "devicetaintrule",
            CLUSTER,
        )
        .sub(STATUS)
        .generation(),
        resource(
            "resource.k8s.io",
            "v1",
            "ResourceClaim",
            "resourceclaims",
            "resourceclaim",
            NS,
        )
        .sub(STATUS),
        resource(
            "resource.k8s.io",
            "v1",
            "ResourceClaimTemplate",
            "resourceclaimtemplates",
            "resourceclaimtemplate",
            NS,
        ),
        resource(
            "resource.k8s.io",
            "v1",
            "ResourceSlice",
            "resourceslices",
            "resourceslice",
            CLUSTER,
        )
        .generation(),
        // scheduling.k8s.io/v1
        resource(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            "priorityclass",
            CLUSTER,
        )
        .short(&["pc"]),
        // storage.k8s.io/v1
        resource(
            "storage.k8s.io",
            "v1",
            "CSIDriver",
            "csidrivers",
            "csidriver",
            CLUSTER,
        ),
        resource(
            "storage.k8s.io",
            "v1",
            "CSINode",
            "csinodes",
            "csinode",
            CLUSTER,
        ),
        resource(
            "storage.k8s.io",
            "v1",
            "CSIStorageCapacity",
            "csistoragecapacities",
            "csistoragecapacity",
            NS,
        ),
        resource(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            "storageclass",
            CLUSTER,
        )
        .short(&["sc"]),
        resource(
            "storage.k8s.io",
            "v1",
            "VolumeAttachment",
            "volumeattachments",
            "volumeattachment",
            CLUSTER,
        )
        .sub(STATUS),
        resource(
            "storage.k8s.io",
            "v1",
            "VolumeAttributesClass",
            "volumeattributesclasses",
            "volumeattributesclass",
            CLUSTER,
        )
        .short(&["vac"]),
        // storagemigration.k8s.io/v1 (served and stored; no migrator acts on them yet)
        resource(
            "storagemigration.k8s.io",
            "v1",
            "StorageVersionMigration",
            "storageversionmigrations",
            "storageversionmigration",
            CLUSTER,
        )
        .sub(STATUS),
        // Never stored: storage names of their own, so that no stored object is taken for one.
        resource(
            "metrics.k8s.io",
            "v1beta1",
            "NodeMetrics",
            "nodes",
            "",
            CLUSTER,
        )
        .stored_as("metrics.k8s.io/nodes")
        .metrics(),
        resource("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", "", NS)
            .stored_as("metrics.k8s.io/pods")
            .metrics(),
    ]
}

/// The preferred version of each group, in discovery order (core first).
pub static BUILTIN_GROUPS: &[(&str, &[&str])] = &[
    ("", &["v1"]),
    ("admissionregistration.k8s.io", &["v1"]),
    ("apiextensions.k8s.io", &["v1"]),
    ("apiregistration.k8s.io", &["v1"]),
    ("apps", &["v1"]),
    ("authentication.k8s.io", &["v1"]),
    ("authorization.k8s.io", &["v1"]),
    ("autoscaling", &["v2", "v1"]),
    ("batch", &["v1"]),
    ("certificates.k8s.io", &["v1"]),
    ("coordination.k8s.io", &["v1"]),
    ("discovery.k8s.io", &["v1"]),
    ("events.k8s.io", &["v1"]),
    ("flowcontrol.apiserver.k8s.io", &["v1"]),
    ("networking.k8s.io", &["v1"]),
    ("node.k8s.io", &["v1"]),
    ("policy", &["v1"]),
    ("rbac.authorization.k8s.io", &["v1"]),
    ("resource.k8s.io", &["v1"]),
    ("scheduling.k8s.io", &["v1"]),
    ("storage.k8s.io", &["v1"]),
    ("storagemigration.k8s.io", &["v1"]),
    ("metrics.k8s.io", &["v1beta1"]),
];

/// One state of the catalogue: every resource served, in discovery order, and the
/// groups with their versions, preferred first.
#[derive(Default)]
struct Snapshot {
    resources: Vec<Arc<ResourceInfo>>,
    by_path: HashMap<(String, String, String), Arc<ResourceInfo>>,
    groups: Vec<(String, Vec<String>)>,
}

impl Snapshot {
    fn build(resources: Vec<Arc<ResourceInfo>>, groups: Vec<(String, Vec<String>)>) -> Self {
        let by_path = resources
            .iter()
            .map(|r| {
                (
                    (r.group.clone(), r.version.clone(), r.plural.clone()),
                    r.clone(),
                )
            })
            .collect();
        Snapshot {
            resources,
            by_path,
            groups,
        }
    }
}

/// Lookup of resources by group, version and plural name.
///
/// Readers take the current snapshot; a change (a CustomResourceDefinition established
/// or gone) builds a new one, so a reader never sees half a change.
pub struct Catalogue {
    current: RwLock<Arc<Snapshot>>,
    /// The resources of each CustomResourceDefinition (by its name), in the order
    /// their versions are listed.
    custom: RwLock<Vec<(String, CustomGroup)>>,
}

/// What one CustomResourceDefinition adds: its group's versions (preferred first) and
/// one entry per served version.
#[derive(Clone)]
pub struct CustomGroup {
    pub group: String,
    pub versions: Vec<String>,
    pub resources: Vec<ResourceInfo>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalogue {
    pub fn new() -> Self {
        let catalogue = Catalogue {
            current: RwLock::new(Arc::new(Snapshot::default())),
            custom: RwLock::new(Vec::new()),
        };
        catalogue.rebuild(&[]);
        catalogue
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves `definition`'s resources (replacing what it served before), or stops
    /// serving them (`None`).
    pub fn set_custom(&self, definition: &str, served: Option<CustomGroup>) {
        let mut custom = match self.custom.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        custom.retain(|(name, _)| name != definition);
        if let Some(group) = served {
            custom.push((definition.to_string(), group));
        }
        custom.sort_by(|a, b| a.0.cmp(&b.0));
        self.rebuild(&custom);
    }

    fn rebuild(&self, custom: &[(String, CustomGroup)]) {
        let mut resources: Vec<Arc<ResourceInfo>> = builtin().into_iter().map(Arc::new).collect();
        let mut groups: Vec<(String, Vec<String>)> = BUILTIN_GROUPS
            .iter()
            .map(|(g, versions)| (g.to_string(), strings(versions)))
            .collect();
        for (_, definition) in custom {
            // A group may be shared by several definitions: its versions are the union,
            // ordered as upstream's discovery orders them (by version priority).
            match groups.iter_mut().find(|(g, _)| *g == definition.group) {
                Some((_, versions)) => {
                    for v in &definition.versions {
                        if !versions.contains(v) {
                            versions.push(v.clone());
                        }
                    }
                    versions.sort_by(|a, b| crate::crd::compare_versions(a, b));
                }
                None => groups.push((definition.group.clone(), definition.versions.clone())),
            }
            // A built-in resource is never shadowed (upstream's own handlers come first).
            for r in &definition.resources {
                let taken = resources.iter().any(|b| {
                    b.custom.is_none()
                        && b.group == r.group
                        && b.version == r.version
                        && b.plural == r.plural
                });
                if !taken {
                    resources.push(Arc::new(r.clone()));
                }
            }
        }
        let snapshot = Arc::new(Snapshot::build(resources, groups));
        match self.current.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.snapshot()
            .by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Every resource served, in discovery order.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.snapshot().resources.clone()
    }

    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.snapshot()
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .cloned()
            .collect()
    }

    /// The resource whose objects of `apiVersion`/`kind` are written, for lookups by kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.snapshot()
            .resources
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version)
            .cloned()
    }

    /// Every version served for a group, preferred first.
    pub fn versions(&self, group: &str) -> Option<Vec<String>> {
        self.snapshot()
            .groups
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, v)| v.clone())
    }

    /// Every group with its versions, preferred first, in discovery order (core first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.snapshot().groups.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_a_served_group_version() {
        let catalogue = Catalogue::new();
        for r in builtin() {
            let versions = catalogue.versions(&r.group).expect("group listed");
            assert!(versions.contains(&r.version), "{}/{}", r.group, r.version);
            assert_eq!(
                catalogue
                    .get(&r.group, &r.version, &r.plural)
                    .map(|x| x.kind.clone()),
                Some(r.kind.clone())
            );
        }
    }

    #[test]
    fn custom_resources_never_shadow_built_in_ones() {
        let catalogue = Catalogue::new();
        let mut shadow = resource("", "v1", "Imposter", "pods", "pod", true);
        shadow.custom = None;
        let mut custom = resource("example.com", "v1", "Widget", "widgets", "widget", true);
        custom.storage = "example.com/widgets".into();
        let group = |resources: Vec<ResourceInfo>| CustomGroup {
            group: "".into(),
            versions: vec!["v1".into()],
            resources,
        };
        catalogue.set_custom("pods.core", Some(group(vec![shadow])));
        assert_eq!(
            catalogue.get("", "v1", "pods").map(|r| r.kind.clone()),
            Some("Pod".into())
        );
        catalogue.set_custom(
            "widgets.example.com",
            Some(CustomGroup {
                group: "example.com".into(),
                ..group(vec![custom])
            }),
        );
        assert!(catalogue.get("example.com", "v1", "widgets").is_some());
        assert_eq!(
            catalogue.versions("example.com"),
            Some(vec!["v1".to_string()])
        );
        catalogue.set_custom("widgets.example.com", None);
        assert!(catalogue.get("example.com", "v1", "widgets").is_none());
        assert!(catalogue.versions("example.com").is_none());
    }

    #[test]
    fn keys_follow_upstream_layout() {
        let catalogue = Catalogue::new();
        let pods = catalogue.get("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let nodes = catalogue.get("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/minions/n1");
        let svc = catalogue.get("", "v1", "services").unwrap();
        assert_eq!(svc.key_prefix(Some("a")), "/registry/services/specs/a/");
    }
}
