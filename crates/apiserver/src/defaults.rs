//! Defaulting: the values upstream's API server fills in for fields a client left out, so
//! that `kubectl get -o yaml` shows what it shows upstream and every component can rely on
//! them (`spec.schedulerName` routes a pod to its scheduler, `restartPolicy` drives the
//! kubelet). Applied to every create and update body before validation, as upstream
//! applies its defaulters when it decodes a request.

use serde_json::{json, Map, Value};

use crate::object::object_entry;

/// Fills in the defaults for an object of `kind`.
pub fn apply(kind: &str, object: &mut Value) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    match kind {
        "Pod" => {
            if let Some(spec) = fields.get_mut("spec").and_then(Value::as_object_mut) {
                pod_spec(spec);
                pod_only(spec);
                default_tolerations(spec);
            }
        }
        "PodTemplate" => template(fields.get_mut("template")),
        "LimitRange" => {
            let items = fields
                .get_mut("spec")
                .and_then(|s| s.get_mut("limits"))
                .and_then(Value::as_array_mut);
            for item in items.into_iter().flatten() {
                if let Some(item) = item.as_object_mut() {
                    limit_range_item(item);
                }
            }
        }
        "ReplicationController" => {
            // Upstream's: an empty selector and empty labels are the template's labels.
            let template_labels = fields
                .get("spec")
                .and_then(|s| s.get("template"))
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels"))
                .filter(|l| l.as_object().is_some_and(|l| !l.is_empty()))
                .cloned();
            let spec = object_entry(fields, "spec");
            set(spec, "replicas", json!(1));
            if let Some(labels) = &template_labels {
                if spec
                    .get("selector")
                    .and_then(Value::as_object)
                    .is_none_or(|s| s.is_empty())
                {
                    spec.insert("selector".into(), labels.clone());
                }
            }
            template(spec.get_mut("template"));
            if let Some(labels) = template_labels {
                let metadata = object_entry(fields, "metadata");
                if metadata
                    .get("labels")
                    .and_then(Value::as_object)
                    .is_none_or(|l| l.is_empty())
                {
                    metadata.insert("labels".into(), labels);
                }
            }
        }
        "ReplicaSet" => {
            let spec = object_entry(fields, "spec");
            set(spec, "replicas", json!(1));
            template(spec.get_mut("template"));
        }
        "Deployment" => {
            let spec = object_entry(fields, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            let strategy = object_entry(spec, "strategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let rolling = object_entry(strategy, "rollingUpdate");
                set(rolling, "maxUnavailable", json!("25%"));
                set(rolling, "maxSurge", json!("25%"));
            }
            template(spec.get_mut("template"));
        }
        "StatefulSet" => {
            let spec = object_entry(fields, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(spec, "revisionHistoryLimit", json!(10));
            let strategy = object_entry(spec, "updateStrategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                set(
                    object_entry(strategy, "rollingUpdate"),
                    "partition",
                    json!(0),
                );
            }
            let retention = object_entry(spec, "persistentVolumeClaimRetentionPolicy");
            set(retention, "whenDeleted", json!("Retain"));
            set(retention, "whenScaled", json!("Retain"));
            template(spec.get_mut("template"));
        }
        "DaemonSet" => {
            let spec = object_entry(fields, "spec");
            set(spec, "revisionHistoryLimit", json!(10));
            let strategy = object_entry(spec, "updateStrategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let rolling = object_entry(strategy, "rollingUpdate");
                set(rolling, "maxUnavailable", json!(1));
                set(rolling, "maxSurge", json!(0));
            }
            template(spec.get_mut("template"));
        }
        "Job" => {
            let spec = object_entry(fields, "spec");
            job_spec(spec);
        }
        "CronJob" => {
            let spec = object_entry(fields, "spec");
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            // Only the pod template inside is defaulted (upstream's defaulters reach every
            // pod spec, but the Job defaults belong to Jobs): the Jobs made from it get
            // theirs when they are created.
            template(
                spec.get_mut("jobTemplate")
                    .and_then(|job| job.pointer_mut("/spec/template")),
            );
        }
        "Service" => {
            let spec = object_entry(fields, "spec");
            service_spec(spec);
        }
        "Endpoints" => {
            for subset in items(fields, "subsets") {
                for port in items(subset, "ports") {
                    set(port, "protocol", json!("TCP"));
                }
            }
        }
        "EndpointSlice" => {
            for port in items(fields, "ports") {
                set(port, "protocol", json!("TCP"));
                set(port, "name", json!(""));
            }
        }
        "NetworkPolicy" => network_policy_spec(object_entry(fields, "spec")),
        "PersistentVolumeClaim" => {
            set(
                object_entry(fields, "spec"),
                "volumeMode",
                json!("Filesystem"),
            );
            set(object_entry(fields, "status"), "phase", json!("Pending"));
        }
        "PersistentVolume" => {
            let spec = object_entry(fields, "spec");
            set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set(spec, "volumeMode", json!("Filesystem"));
            set(object_entry(fields, "status"), "phase", json!("Pending"));
        }
        "CSIDriver" => {
            let spec = object_entry(fields, "spec");
            set(spec, "attachRequired", json!(true));
            set(spec, "podInfoOnMount", json!(false));
            set(spec, "storageCapacity", json!(false));
            set(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
            set(spec, "requiresRepublish", json!(false));
            set(spec, "seLinuxMount", json!(false));
            if spec
                .get("volumeLifecycleModes")
                .and_then(Value::as_array)
                .is_none_or(|modes| modes.is_empty())
            {
                spec.insert("volumeLifecycleModes".into(), json!(["Persistent"]));
            }
        }
        "StorageClass" => {
            set(fields, "reclaimPolicy", json!("Delete"));
            set(fields, "volumeBindingMode", json!("Immediate"));
        }
        // Upstream's RBAC defaults: the binding's role is RBAC's, users and groups are
        // RBAC's subjects.
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = object_entry(fields, "roleRef");
            if role_ref
                .get("apiGroup")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                role_ref.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
            }
            let subjects = fields.get_mut("subjects").and_then(Value::as_array_mut);
            for subject in subjects
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
                let unset = subject
                    .get("apiGroup")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty);
                if unset && (kind == "User" || kind == "Group") {
                    subject.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
                }
            }
        }
        "PriorityClass" => {
            set(fields, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            let mutating = kind == "MutatingWebhookConfiguration";
            let webhooks = fields.get_mut("webhooks").and_then(Value::as_array_mut);
            for webhook in webhooks
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                webhook_defaults(webhook, mutating);
            }
        }
        "APIService" => {
            let spec = object_entry(fields, "spec");
            if let Some(service) = spec.get_mut("service").and_then(Value::as_object_mut) {
                set(service, "port", json!(443));
            }
        }
        // Stored as autoscaling/v2, whichever version was written.
        "HorizontalPodAutoscaler" => autoscaler_spec(object_entry(fields, "spec")),
        "ValidatingAdmissionPolicy" | "MutatingAdmissionPolicy" => {
            let spec = object_entry(fields, "spec");
            set(spec, "failurePolicy", json!("Fail"));
            if let Some(resources) = spec
                .get_mut("matchConstraints")
                .and_then(Value::as_object_mut)
            {
                match_resources(resources);
            }
        }
        "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicyBinding" => {
            let resources = fields
                .get_mut("spec")
                .and_then(|s| s.get_mut("matchResources"))
                .and_then(Value::as_object_mut);
            if let Some(resources) = resources {
                match_resources(resources);
            }
        }
        _ => {}
    }
}

/// Upstream's: one replica at least, 80 % CPU when no metric is named, and a `behavior`
/// given in part completed direction by direction (the scale-down window stays unset:
/// the controller's own flag decides it).
fn autoscaler_spec(spec: &mut Map<String, Value>) {
    set(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty())
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else {
        return;
    };
    let scale_up = object_entry(behavior, "scaleUp");
    set(scale_up, "stabilizationWindowSeconds", json!(0));
    set(scale_up, "selectPolicy", json!("Max"));
    set(
        scale_up,
        "policies",
        json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
               {"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
    let scale_down = object_entry(behavior, "scaleDown");
    set(scale_down, "selectPolicy", json!("Max"));
    set(
        scale_down,
        "policies",
        json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
}

/// Upstream's defaults of one admission webhook: fail closed, equivalent resources,
/// every namespace and object, ten seconds, never reinvoked; rules of any scope; a
/// Service on port 443.
fn webhook_defaults(webhook: &mut Map<String, Value>, mutating: bool) {
    set(webhook, "failurePolicy", json!("Fail"));
    set(webhook, "matchPolicy", json!("Equivalent"));
    set(webhook, "namespaceSelector", json!({}));
    set(webhook, "objectSelector", json!({}));
    set(webhook, "timeoutSeconds", json!(10));
    if mutating {
        set(webhook, "reinvocationPolicy", json!("Never"));
    }
    let rules = webhook.get_mut("rules").and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten().filter_map(Value::as_object_mut) {
        set(rule, "scope", json!("*"));
    }
    if let Some(service) = webhook
        .get_mut("clientConfig")
        .and_then(|c| c.get_mut("service"))
        .and_then(Value::as_object_mut)
    {
        set(service, "port", json!(443));
    }
}

/// Upstream's defaults of an admission policy's (or binding's) match resources: match
/// equivalent resources, select every namespace and object, rules of any scope.
fn match_resources(resources: &mut Map<String, Value>) {
    set(resources, "matchPolicy", json!("Equivalent"));
    set(resources, "namespaceSelector", json!({}));
    set(resources, "objectSelector", json!({}));
    for rules in ["resourceRules", "excludeResourceRules"] {
        let rules = resources.get_mut(rules).and_then(Value::as_array_mut);
        for rule in rules.into_iter().flatten().filter_map(Value::as_object_mut) {
            set(rule, "scope", json!("*"));
        }
    }
}

/// Upstream's: a container item's default limit comes from `max`, its default request
/// from the default limit, or else from `min`.
fn limit_range_item(item: &mut Map<String, Value>) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let inherit = |item: &mut Map<String, Value>, into: &str, from: &str| {
        let source = item
            .get(from)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let target = object_entry(item, into);
        for (name, quantity) in source {
            target.entry(name).or_insert(quantity);
        }
    };
    inherit(item, "default", "max");
    inherit(item, "defaultRequest", "default");
    inherit(item, "defaultRequest", "min");
}

/// The objects in the list `key` of `fields` (none if it is not a list).
fn items<'a>(
    fields: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    fields
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Upstream's `SetDefaults_NetworkPolicy`: a policy without `policyTypes` is an ingress
/// policy, and an egress one too if it has egress rules; rule ports are TCP.
fn network_policy_spec(spec: &mut Map<String, Value>) {
    for direction in ["ingress", "egress"] {
        for rule in items(spec, direction) {
            for port in items(rule, "ports") {
                set(port, "protocol", json!("TCP"));
            }
        }
    }
    let has_egress = spec
        .get("egress")
        .and_then(Value::as_array)
        .is_some_and(|rules| !rules.is_empty());
    let types = if has_egress {
        json!(["Ingress", "Egress"])
    } else {
        json!(["Ingress"])
    };
    match spec.get("policyTypes").and_then(Value::as_array) {
        Some(listed) if !listed.is_empty() => {}
        _ => {
            spec.insert("policyTypes".into(), types);
        }
    }
}

/// Sets `key` unless the client set it (to anything but null).
fn set(fields: &mut Map<String, Value>, key: &str, value: Value) {
    match fields.get(key) {
        Some(existing) if !existing.is_null() => {}
        _ => {
            fields.insert(key.to_string(), value);
        }
    }
}

fn template(template: Option<&mut Value>) {
    if let Some(spec) = template
        .and_then(Value::as_object_mut)
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        pod_spec(spec);
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    // Both unset: one pod, once. One set: the other follows upstream's rules.
    let completions = spec.get("completions").filter(|v| !v.is_null()).cloned();
    let parallelism = spec.get("parallelism").filter(|v| !v.is_null()).cloned();
    if completions.is_none() && parallelism.is_none() {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    } else if parallelism.is_none() {
        spec.insert("parallelism".into(), json!(1));
    }
    let given = |field: &str| spec.get(field).is_some_and(|v| !v.is_null());
    // Per-index limits leave the total unlimited; a failure policy waits for failed pods.
    let backoff_limit = if given("backoffLimitPerIndex") {
        i32::MAX
    } else {
        6
    };
    let replacement = if given("podFailurePolicy") {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set(spec, "backoffLimit", json!(backoff_limit));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    set(spec, "podReplacementPolicy", json!(replacement));
    template(spec.get_mut("template"));
}

fn service_spec(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if service_type != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "ipFamilies", json!(["IPv4"]));
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    for port in items(spec, "ports") {
        set(port, "protocol", json!("TCP"));
        // A target port of 0 or "" is no target port: the port itself.
        if matches!(port.get("targetPort"), Some(t) if t == &json!(0) || t == &json!("")) {
            port.remove("targetPort");
        }
        if let Some(number) = port.get("port").cloned() {
            set(port, "targetPort", number);
        }
    }
}

/// Upstream's `SetDefaults_Pod`: defaults of pods that templates (of Deployments,
/// Jobs, …) do not get; their pods get them when they are created.
fn pod_only(spec: &mut Map<String, Value>) {
    set(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        // Host-network pods expose their container ports on the host.
        for list in ["containers", "initContainers"] {
            for container in items(spec, list) {
                for port in items(container, "ports") {
                    if let Some(number) = port.get("containerPort").cloned() {
                        set(port, "hostPort", number);
                    }
                }
            }
        }
    }
}

/// Upstream's `SetDefaults_PodSpec` and the defaults of what a pod spec holds.
fn pod_spec(spec: &mut Map<String, Value>) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                container_defaults(container);
            }
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes.iter_mut().filter_map(Value::as_object_mut) {
            for source in ["configMap", "secret", "downwardAPI", "projected"] {
                if let Some(v) = volume.get_mut(source).and_then(Value::as_object_mut) {
                    set(v, "defaultMode", json!(420));
                }
            }
            if let Some(host_path) = volume.get_mut("hostPath").and_then(Value::as_object_mut) {
                set(host_path, "type", json!(""));
            }
            // Upstream's `SetDefaults_ImageVolumeSource`: the container image's rule.
            if let Some(image) = volume.get_mut("image").and_then(Value::as_object_mut) {
                if text_or_empty(image, "pullPolicy").is_empty() {
                    let policy = image_pull_policy(text_or_empty(image, "reference"));
                    image.insert("pullPolicy".into(), json!(policy));
                }
            }
            let has_source = volume.keys().any(|k| k != "name");
            if !has_source {
                volume.insert("emptyDir".into(), json!({}));
            }
        }
    }
}

/// The tolerations upstream's `DefaultTolerationSeconds` admission adds: five minutes on
/// a node that is not ready or unreachable before the pod is evicted.
fn default_tolerations(spec: &mut Map<String, Value>) {
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = list.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                && t.get("effect")
                    .and_then(Value::as_str)
                    .is_none_or(|e| e == "NoExecute")
        }) || list.iter().any(|t| {
            t.get("operator").and_then(Value::as_str) == Some("Exists") && t.get("key").is_none()
        });
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

fn text_or_empty<'v>(fields: &'v Map<String, Value>, key: &str) -> &'v str {
    fields.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The pull policy of an image reference with none given: Always for the `latest` tag,
/// which a reference with neither tag nor digest means, else IfNotPresent (also for an
/// empty reference, which upstream's parser refuses and so finds no tag in).
fn image_pull_policy(image: &str) -> &'static str {
    if image.is_empty() {
        return "IfNotPresent";
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    // The tag is what follows the last ':' after the last '/' (a registry's port is
    // before a '/').
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, "latest")) => "Always",
        None if !digest => "Always",
        _ => "IfNotPresent",
    }
}

fn container_defaults(container: &mut Map<String, Value>) {
    set(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set(container, "terminationMessagePolicy", json!("File"));
    if let Some(image) = container.get("image").and_then(Value::as_str) {
        let policy = image_pull_policy(image);
        set(container, "imagePullPolicy", json!(policy));
    }
    set(container, "resources", json!({}));
    if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(port, "protocol", json!("TCP"));
        }
    }
    if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
        for var in env.iter_mut() {
            if let Some(field_ref) = var
                .pointer_mut("/valueFrom/fieldRef")
                .and_then(Value::as_object_mut)
            {
                set(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = container.get_mut(probe).and_then(Value::as_object_mut) {
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
        }
    }
    // Every HTTP GET action, a probe's or a lifecycle hook's (upstream's
    // `SetDefaults_HTTPGetAction`).
    for handler in [
        &["livenessProbe"][..],
        &["readinessProbe"],
        &["startupProbe"],
        &["lifecycle", "postStart"],
        &["lifecycle", "preStop"],
    ] {
        let mut at = Some(&mut *container);
        for field in handler.iter().chain(&["httpGet"]) {
            at = at
                .and_then(|map| map.get_mut(*field))
                .and_then(Value::as_object_mut);
        }
        if let Some(http) = at {
            set(http, "path", json!("/"));
            set(http, "scheme", json!("HTTP"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_as_upstream() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}}},
            {"name": "b", "image": "registry.k8s.io/pause:3.10",
             "lifecycle": {"preStop": {"httpGet": {"port": 80}}}}
        ]}});
        apply("Pod", &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        let a = &spec["containers"][0];
        assert_eq!(a["imagePullPolicy"], "Always");
        assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(a["ports"][0]["protocol"], "TCP");
        assert_eq!(a["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(a["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        let b = &spec["containers"][1];
        assert_eq!(b["lifecycle"]["preStop"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(b["lifecycle"]["preStop"]["httpGet"]["path"], "/");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn image_volumes_pull_as_containers_do() {
        let policy = |reference: Value| {
            let mut pod =
                json!({"spec": {"volumes": [{"name": "v", "image": {"reference": reference}}]}});
            apply("Pod", &mut pod);
            pod["spec"]["volumes"][0]["image"]["pullPolicy"].clone()
        };
        for (reference, expected) in [
            (json!("kitten"), "Always"),
            (json!("kitten:latest"), "Always"),
            (
                json!("registry.k8s.io:443/e2e-test-images/kitten"),
                "Always",
            ),
            (json!("kitten:1.7"), "IfNotPresent"),
            (json!("localhost:5000/kitten@sha256:abcd"), "IfNotPresent"),
            (json!("kitten:latest@sha256:abcd"), "Always"),
            (json!(""), "IfNotPresent"),
            (Value::Null, "IfNotPresent"),
        ] {
            assert_eq!(policy(reference.clone()), expected, "{reference}");
        }
        let mut given = json!({"spec": {"volumes": [{"name": "v", "image": {"reference": "k", "pullPolicy": "Never"}}]}});
        apply("Pod", &mut given);
        assert_eq!(given["spec"]["volumes"][0]["image"]["pullPolicy"], "Never");
        // Not a volume with no source: no emptyDir is added beside the image.
        assert!(given["spec"]["volumes"][0].get("emptyDir").is_none());
    }

    #[test]
    fn client_values_win() {
        let mut pod = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "Always"}]}});
        apply("Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    }

    #[test]
    fn workload_defaults() {
        let mut d =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        // Pod-only defaults stay out of templates, as upstream's SetDefaults_Pod does.
        assert!(d["spec"]["template"]["spec"]
            .get("enableServiceLinks")
            .is_none());
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply("Deployment", &mut recreate);
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
        let mut job = json!({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}});
        apply("Job", &mut job);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        let mut cron = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}});
        apply("CronJob", &mut cron);
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cron["spec"]["successfulJobsHistoryLimit"], 3);
        let job_template = &cron["spec"]["jobTemplate"]["spec"];
        assert!(job_template.get("backoffLimit").is_none(), "{job_template}");
        assert!(job_template.get("completions").is_none(), "{job_template}");
        assert_eq!(
            job_template["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply("Service", &mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn network_policies_and_endpoints_as_upstream() {
        let mut ingress =
            json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}});
        apply("NetworkPolicy", &mut ingress);
        assert_eq!(ingress["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(ingress["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
        let mut both = json!({"spec": {"podSelector": {}, "egress": [{}]}});
        apply("NetworkPolicy", &mut both);
        assert_eq!(both["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let mut egress_only = json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}});
        apply("NetworkPolicy", &mut egress_only);
        assert_eq!(egress_only["spec"]["policyTypes"], json!(["Egress"]));
        let mut endpoints =
            json!({"subsets": [{"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]});
        apply("Endpoints", &mut endpoints);
        assert_eq!(endpoints["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(endpoints["subsets"][0]["ports"][1]["protocol"], "UDP");
        let mut slice = json!({"ports": [{"port": 80}]});
        apply("EndpointSlice", &mut slice);
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "protocol": "TCP", "name": ""})
        );
    }

    #[test]
    fn autoscaler_defaults_as_upstream() {
        let mut bare = json!({"spec": {"maxReplicas": 5}});
        apply("HorizontalPodAutoscaler", &mut bare);
        assert_eq!(bare["spec"]["minReplicas"], 1);
        assert_eq!(
            bare["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(bare["spec"].get("behavior").is_none());
        let mut partial = json!({"spec": {"minReplicas": 2, "behavior": {"scaleDown": {
            "stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}}}});
        apply("HorizontalPodAutoscaler", &mut partial);
        let behavior = &partial["spec"]["behavior"];
        assert_eq!(partial["spec"]["minReplicas"], 2);
        assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 60);
        assert_eq!(behavior["scaleDown"]["policies"][0]["type"], "Pods");
        assert_eq!(behavior["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(behavior["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(behavior["scaleUp"]["policies"][1]["value"], 100);
    }

    #[test]
    fn pull_policy_from_tag() {
        assert_eq!(image_pull_policy("busybox"), "Always");
        assert_eq!(image_pull_policy("busybox:latest"), "Always");
        assert_eq!(image_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(image_pull_policy("a/b@sha256:abc"), "IfNotPresent");
    }
}
