//! Upstream's messages for the kinds beyond pods, workloads and Services, pinned.

use serde_json::{json, Value};

/// The causes of a `kind` object once defaulted, as `field: message` lines.
fn refused(kind: &str, mut object: Value) -> Vec<String> {
    crate::defaults::apply(kind, &mut object);
    super::validate(kind, &object)
        .into_iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

fn web(extra: Value) -> Value {
    let mut container = json!({"name": "web", "image": "nginx"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        container[k] = v.clone();
    }
    container
}

#[test]
fn roles_need_verbs_and_resource_rules_groups() {
    assert_eq!(
        refused(
            "Role",
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]})
        ),
        ["rules[0].verbs: Required value: verbs must contain at least one value"]
    );
    assert_eq!(
        refused("Role", json!({"rules": [{"verbs": ["get"]}]})),
        [
            "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
            "rules[0].resources: Required value: resource rules must supply at least one resource",
        ]
    );
    assert_eq!(
        refused("Role", json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]})),
        ["rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"]
    );
    assert!(refused(
        "ClusterRole",
        json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]})
    )
    .is_empty());
    assert!(refused(
        "ClusterRole",
        json!({"rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]})
    )
    .is_empty());
}

#[test]
fn bindings_reference_a_role_and_name_their_subjects() {
    let binding =
        |role_ref: Value, subjects: Value| json!({"roleRef": role_ref, "subjects": subjects});
    assert!(refused(
        "RoleBinding",
        binding(
            json!({"kind": "Role", "name": "r"}),
            json!([{"kind": "User", "name": "alice"},
            {"kind": "ServiceAccount", "name": "default", "namespace": "ns"}])
        )
    )
    .is_empty());
    assert_eq!(
        refused("RoleBinding", binding(json!({"kind": "Role"}), json!([]))),
        ["roleRef.name: Required value"]
    );
    assert_eq!(
        refused(
            "ClusterRoleBinding",
            binding(json!({"kind": "Role", "name": "r", "apiGroup": "x"}),
                json!([{"kind": "Robot", "name": "r2"}, {"kind": "ServiceAccount", "name": "d"}, {"kind": "Group"}]))
        ),
        [
            "roleRef.apiGroup: Unsupported value: \"x\": supported values: \"rbac.authorization.k8s.io\"",
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
            "subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            "subjects[1].namespace: Required value",
            "subjects[2].name: Required value",
            "subjects[2].name: Invalid value: \"\": group name cannot be empty",
        ]
    );
    let old =
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "a"}});
    let new =
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "b"}});
    let causes = super::role_ref_update(&new, &old);
    assert_eq!(
        format!("{}: {}", causes[0].field, causes[0].message),
        "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"b\"}: cannot change roleRef"
    );
    assert!(super::role_ref_update(&old, &old).is_empty());
}

#[test]
fn ingresses_as_upstream() {
    let ingress = |path: Value| json!({"spec": {"rules": [{"host": "example.com", "http": {"paths": [path]}}]}});
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    assert!(refused(
        "Ingress",
        ingress(json!({"path": "/", "pathType": "Prefix", "backend": backend}))
    )
    .is_empty());
    assert_eq!(
        refused(
            "Ingress",
            ingress(json!({"path": "/", "pathType": "Sometimes", "backend": backend}))
        ),
        ["spec.rules[0].http.paths[0].pathType: Unsupported value: \"Sometimes\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""]
    );
    assert_eq!(
        refused(
            "Ingress",
            ingress(json!({"path": "api//v1", "pathType": "Exact",
                "backend": {"service": {"name": "web", "port": {"number": 80, "name": "http"}}}}))
        ),
        [
            "spec.rules[0].http.paths[0].path: Invalid value: \"api//v1\": must be an absolute path",
            "spec.rules[0].http.paths[0].path: Invalid value: \"api//v1\": must not contain '//'",
            "spec.rules[0].http.paths[0].backend: Invalid value: \"\": cannot set both port name & port number",
        ]
    );
    assert_eq!(
        refused("Ingress", ingress(json!({"path": "/", "backend": backend}))),
        ["spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"]
    );
    assert_eq!(
        refused(
            "Ingress",
            ingress(
                json!({"path": "/", "pathType": "Prefix", "backend": {"service": {"port": {}}}})
            )
        ),
        [
            "spec.rules[0].http.paths[0].backend.service.name: Required value",
            "spec.rules[0].http.paths[0].backend: Required value: port name or number is required",
        ]
    );
    assert_eq!(
        refused("Ingress", json!({"spec": {}})),
        ["spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"]
    );
    assert_eq!(
        refused("IngressClass", json!({"spec": {}})),
        ["spec.controller: Required value"]
    );
    assert_eq!(
        refused("IngressClass", json!({"spec": {"controller": "nginx"}})),
        ["spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"]
    );
    assert!(refused(
        "IngressClass",
        json!({"spec": {"controller": "k8s.io/ingress-nginx"}})
    )
    .is_empty());
}

#[test]
fn network_policies_as_upstream() {
    let policy = json!({"spec": {"podSelector": {}, "ingress": [{
        "ports": [{"port": 70000}, {"port": 80, "endPort": 79}, {"port": "http", "endPort": 90},
                  {"protocol": "ICMP", "port": 53}],
        "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16", "10.1.0.0/16"]}},
                 {"ipBlock": {"cidr": "10.0.0.1/8"}},
                 {"ipBlock": {"cidr": "nonsense"}},
                 {}]
    }], "policyTypes": ["Ingress", "Sideways"]}});
    assert_eq!(
        refused("NetworkPolicy", policy),
        [
            "spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.ingress[0].ports[1].endPort: Invalid value: 79: must be greater than or equal to `port`",
            "spec.ingress[0].ports[2].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
            "spec.ingress[0].ports[3].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
            "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"192.168.0.0/16\": must be a strict subset of `cidr`",
            "spec.ingress[0].from[1].ipBlock.cidr: Invalid value: \"10.0.0.1/8\": must not have bits set beyond the prefix length",
            "spec.ingress[0].from[2].ipBlock.cidr: Invalid value: \"nonsense\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "spec.ingress[0].from[3]: Required value: must specify a peer",
            "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"",
        ]
    );
}

#[test]
fn disruption_budgets_set_one_bound() {
    assert_eq!(
        refused(
            "PodDisruptionBudget",
            json!({"spec": {"minAvailable": 1, "maxUnavailable": "50%", "selector": {"matchLabels": {"a": "b"}}}})
        ),
        ["spec: Invalid value: policy.PodDisruptionBudgetSpec{MinAvailable:(*intstr.IntOrString)(0x0), Selector:(*v1.LabelSelector)(0x0), MaxUnavailable:(*intstr.IntOrString)(0x0), UnhealthyPodEvictionPolicy:(*policy.UnhealthyPodEvictionPolicyType)(nil)}: minAvailable and maxUnavailable cannot be both set"]
    );
    assert_eq!(
        refused("PodDisruptionBudget", json!({"spec": {"minAvailable": -1}})),
        ["spec.minAvailable: Invalid value: -1: must be greater than or equal to 0"]
    );
    assert_eq!(
        refused("PodDisruptionBudget", json!({"spec": {"maxUnavailable": "150%"}})),
        ["spec.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%"]
    );
    assert!(refused(
        "PodDisruptionBudget",
        json!({"spec": {"minAvailable": "50%"}})
    )
    .is_empty());
}

#[test]
fn autoscalers_as_upstream() {
    let hpa = |spec: Value| json!({ "spec": spec });
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
    assert!(refused(
        "HorizontalPodAutoscaler",
        hpa(json!({"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 3}))
    )
    .is_empty());
    assert_eq!(
        refused(
            "HorizontalPodAutoscaler",
            hpa(json!({"scaleTargetRef": target, "minReplicas": 5, "maxReplicas": 2}))
        ),
        ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
    );
    assert_eq!(
        refused(
            "HorizontalPodAutoscaler",
            hpa(json!({"scaleTargetRef": {}, "minReplicas": 0, "maxReplicas": 0,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 0}}}]}))
        ),
        [
            "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
            "spec.maxReplicas: Invalid value: 0: must be greater than 0",
            "spec.scaleTargetRef.kind: Required value",
            "spec.scaleTargetRef.name: Required value",
            "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
        ]
    );
    assert_eq!(
        refused(
            "HorizontalPodAutoscaler",
            hpa(json!({"scaleTargetRef": target, "maxReplicas": 2,
                "metrics": [{"type": "Pods"}]}))
        ),
        ["spec.metrics[0].pods: Required value: must populate information for the given metric source"]
    );
}

#[test]
fn cron_jobs_parse_their_schedule() {
    let cron = |schedule: &str| {
        json!({"spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [web(json!({}))]}}}}}})
    };
    assert!(refused("CronJob", cron("*/5 * * * *")).is_empty());
    assert!(refused("CronJob", cron("@hourly")).is_empty());
    assert!(refused("CronJob", cron("0 9 * jan-mar mon-fri")).is_empty());
    let messages = |schedule: &str| refused("CronJob", cron(schedule));
    assert_eq!(
        messages("not a schedule"),
        ["spec.schedule: Invalid value: \"not a schedule\": expected exactly 5 fields, found 3: [not a schedule]"]
    );
    assert_eq!(
        messages("61 * * * *"),
        ["spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"]
    );
    assert_eq!(
        messages("x * * * *"),
        ["spec.schedule: Invalid value: \"x * * * *\": failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"]
    );
    assert_eq!(
        messages("@sometimes"),
        ["spec.schedule: Invalid value: \"@sometimes\": unrecognized descriptor: @sometimes"]
    );
    let mut bad = cron("* * * * *");
    bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
    bad["spec"]["timeZone"] = json!("Local");
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["name"] = json!("");
    assert_eq!(
        refused("CronJob", bad),
        [
            "spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            "spec.jobTemplate.spec.template.spec.containers[0].name: Required value",
            "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ]
    );
}

#[test]
fn priority_classes_as_upstream() {
    assert_eq!(
        refused(
            "PriorityClass",
            json!({"metadata": {"name": "high"}, "value": 2_000_000_000})
        ),
        ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
    );
    assert_eq!(
        refused("PriorityClass", json!({"metadata": {"name": "system-mine"}, "value": 5})),
        ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"]
    );
    assert!(refused(
        "PriorityClass",
        json!({"metadata": {"name": "system-cluster-critical"}, "value": 2_000_000_000})
    )
    .is_empty());
}

#[test]
fn storage_kinds_as_upstream() {
    assert_eq!(
        refused("PersistentVolumeClaim", json!({"spec": {}})),
        [
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value",
        ]
    );
    assert_eq!(
        refused(
            "PersistentVolumeClaim",
            json!({"spec": {"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {"storage": "1Gi"}}}})
        ),
        ["spec.accessModes: Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""]
    );
    assert_eq!(
        refused("PersistentVolume", json!({"spec": {}})),
        [
            "spec.accessModes: Required value",
            "spec.capacity: Required value",
            "spec: Required value: must specify a volume type",
        ]
    );
    assert_eq!(
        refused(
            "PersistentVolume",
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                "hostPath": {"path": "/data"}, "nfs": {"server": "s", "path": "/"}}})
        ),
        ["spec.nfs: Forbidden: may not specify more than 1 volume type"]
    );
    assert_eq!(
        refused("StorageClass", json!({})),
        ["provisioner: Required value"]
    );
    assert!(refused(
        "StorageClass",
        json!({"provisioner": "kubernetes.io/no-provisioner"})
    )
    .is_empty());
}

#[test]
fn quotas_limits_leases_secrets_and_endpoints_as_upstream() {
    assert_eq!(
        refused(
            "ResourceQuota",
            json!({"spec": {"hard": {"cpu": "-1", "pods": "10"}}})
        ),
        ["spec.hard[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"]
    );
    assert_eq!(
        refused(
            "LimitRange",
            json!({"spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}, "default": {"cpu": "1"}, "defaultRequest": {"cpu": "1"}}]}})
        ),
        [
            "spec.limits[0].min[cpu]: Invalid value: resource.Quantity{i:resource.int64Amount{value:2, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"2\", Format:\"DecimalSI\"}: min value 2 is greater than max value 1",
            "spec.limits[0].defaultRequest[cpu]: Invalid value: resource.Quantity{i:resource.int64Amount{value:1, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"1\", Format:\"DecimalSI\"}: min value 2 is greater than default request value 1",
            "spec.limits[0].default[cpu]: Invalid value: resource.Quantity{i:resource.int64Amount{value:2, scale:0}, d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"2\", Format:\"DecimalSI\"}: min value 2 is greater than default value 1",
        ]
    );
    assert_eq!(
        refused("Lease", json!({"spec": {"leaseDurationSeconds": 0}})),
        ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
    assert_eq!(
        refused(
            "Secret",
            json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}})
        ),
        ["data[tls.key]: Required value"]
    );
    assert_eq!(
        refused("Secret", json!({"type": "kubernetes.io/dockerconfigjson"})),
        ["data[.dockerconfigjson]: Required value"]
    );
    // The docker configuration must be a JSON object (values are base64, as sent).
    let docker = |kind: &str, key: &str, content: &str| {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(content);
        refused("Secret", json!({"type": kind, "data": {key: encoded}}))
    };
    let config_json = "kubernetes.io/dockerconfigjson";
    assert_eq!(
        docker(config_json, ".dockerconfigjson", "x"),
        ["data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character 'x' looking for beginning of value"]
    );
    assert_eq!(
        docker(config_json, ".dockerconfigjson", "{\"auths\": {"),
        ["data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": unexpected end of JSON input"]
    );
    assert_eq!(
        docker("kubernetes.io/dockercfg", ".dockercfg", "[]"),
        ["data[.dockercfg]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}"]
    );
    assert_eq!(
        docker(config_json, ".dockerconfigjson", "{\"auths\": {}}"),
        Vec::<String>::new()
    );
    assert_eq!(
        refused(
            "Secret",
            json!({"type": "kubernetes.io/service-account-token"})
        ),
        ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
    );
    assert_eq!(
        refused(
            "Secret",
            json!({"type": "kubernetes.io/basic-auth", "data": {}})
        ),
        [
            "data[username]: Required value",
            "data[password]: Required value"
        ]
    );
    assert_eq!(
        refused(
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.300"}], "ports": [{"port": 80}]}]})
        ),
        ["subsets[0].addresses[0].ip: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    );
    // Addresses of the host itself or of a link are no endpoints.
    assert_eq!(
        refused(
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}, {"ip": "fe80::1"}, {"ip": "10.0.0.1"}],
                "notReadyAddresses": [{"ip": "0.0.0.0"}, {"ip": "224.0.0.5"}], "ports": [{"port": 80}]}]})
        ),
        [
            "subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "subsets[0].addresses[1].ip: Invalid value: \"fe80::1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            "subsets[0].notReadyAddresses[0].ip: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
            "subsets[0].notReadyAddresses[1].ip: Invalid value: \"224.0.0.5\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ]
    );
    assert_eq!(
        refused(
            "EndpointSlice",
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": []}]})
        ),
        [
            "endpoints[0].addresses: Invalid value: \"fd00::1\": must be an IPv4 address",
            "endpoints[1].addresses: Required value: must contain at least 1 address",
        ]
    );
    assert_eq!(
        refused("EndpointSlice", json!({"addressType": "IPv5", "endpoints": []})),
        ["addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]
    );
}

#[test]
fn pod_volumes_mounts_probes_and_env_sources_as_upstream() {
    let pod = |volumes: Value, container: Value| json!({"spec": {"volumes": volumes, "containers": [container]}});
    assert_eq!(
        refused(
            "Pod",
            pod(
                json!([]),
                web(json!({"volumeMounts": [{"name": "missing", "mountPath": "/a"}]}))
            )
        ),
        ["spec.containers[0].volumeMounts[0].name: Not found: \"missing\""]
    );
    assert_eq!(
        refused(
            "Pod",
            pod(
                json!([{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}},
                       {"name": "Two", "emptyDir": {}, "secret": {"secretName": "s"}},
                       {"name": "cm", "configMap": {}}]),
                web(json!({"volumeMounts": [{"name": "data", "mountPath": "/a"},
                                            {"name": "data", "mountPath": "/a"}, {"name": "data"}]}))
            )
        ),
        [
            "spec.volumes[1].name: Duplicate value: \"data\"",
            "spec.volumes[2].secret: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[2].name: Invalid value: \"Two\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.volumes[3].configMap.name: Required value",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
            "spec.containers[0].volumeMounts[2].mountPath: Required value",
        ]
    );
    assert_eq!(
        refused(
            "Pod",
            pod(json!([]), web(json!({"livenessProbe": {"periodSeconds": -1},
                "readinessProbe": {"httpGet": {"port": 80}, "exec": {"command": ["true"]}},
                "envFrom": [{}, {"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}]})))
        ),
        [
            "spec.containers[0].envFrom: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`",
            "spec.containers[0].envFrom: Invalid value: \"\": may not have more than one field specified at a time",
            "spec.containers[0].livenessProbe: Required value: must specify a handler type",
            "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.containers[0].readinessProbe.httpGet: Forbidden: may not specify more than 1 handler type",
        ]
    );
    assert!(refused(
        "Pod",
        pod(
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}]),
            web(
                json!({"volumeMounts": [{"name": "data", "mountPath": "/a"}],
                "livenessProbe": {"tcpSocket": {"port": "http"}}})
            )
        )
    )
    .is_empty());
    // A template's pod spec is checked the same way.
    let deployment = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {
        "metadata": {"labels": {"app": "a"}},
        "spec": {"containers": [web(json!({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}))]}}}});
    assert_eq!(
        refused("Deployment", deployment),
        ["spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"x\""]
    );
}

#[test]
fn lifecycle_hooks_and_volume_devices_as_upstream() {
    let pod = |volumes: Value, container: Value| {
        json!({"spec": {"volumes": volumes, "containers": [container],
        "terminationGracePeriodSeconds": 10}})
    };
    assert_eq!(
        refused(
            "Pod",
            pod(
                json!([]),
                web(json!({"lifecycle": {"postStart": {},
                    "preStop": {"sleep": {"seconds": 11}, "exec": {"command": []}}}}))
            )
        ),
        [
            "spec.containers[0].lifecycle.postStart: Required value: must specify a handler type",
            "spec.containers[0].lifecycle.preStop.exec.command: Required value",
            "spec.containers[0].lifecycle.preStop.sleep: Forbidden: may not specify more than 1 handler type",
        ]
    );
    assert_eq!(
        refused(
            "Pod",
            pod(
                json!([]),
                web(json!({"lifecycle": {"preStop": {"sleep": {"seconds": 11}}}}))
            )
        ),
        ["spec.containers[0].lifecycle.preStop.sleep: Invalid value: 11: must be non-negative and less than terminationGracePeriodSeconds (10)"]
    );
    // Init containers that run to completion have no hooks; restartable ones (sidecars) may.
    let hook = json!({"preStop": {"sleep": {"seconds": 0}}});
    let with_init = |restart: Value| {
        let mut spec = pod(json!([]), web(json!({})));
        spec["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox", "restartPolicy": restart, "lifecycle": hook}]);
        spec
    };
    assert_eq!(
        refused("Pod", with_init(Value::Null)),
        ["spec.initContainers[0].lifecycle: Forbidden: may not be set for init containers without restartPolicy=Always"]
    );
    assert!(refused("Pod", with_init(json!("Always"))).is_empty());

    let volumes = json!([{"name": "block", "persistentVolumeClaim": {"claimName": "c"}},
                         {"name": "scratch", "emptyDir": {}}]);
    assert_eq!(
        refused(
            "Pod",
            pod(
                volumes.clone(),
                web(json!({"volumeMounts": [{"name": "scratch", "mountPath": "/mnt"}],
                    "volumeDevices": [
                        {"name": "block", "devicePath": "/dev/xvda"},
                        {"name": "block", "devicePath": "/dev/xvda"},
                        {"name": "scratch", "devicePath": "/mnt"},
                        {"name": "nothing", "devicePath": "/dev/../x"},
                    ]}))
            )
        ),
        [
            "spec.containers[0].volumeDevices[1].name: Invalid value: \"block\": must be unique",
            "spec.containers[0].volumeDevices[1].devicePath: Invalid value: \"/dev/xvda\": must be unique",
            "spec.containers[0].volumeDevices[2].name: Invalid value: \"scratch\": can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            "spec.containers[0].volumeDevices[2].name: Invalid value: \"scratch\": must not already exist in volumeMounts",
            "spec.containers[0].volumeDevices[2].devicePath: Invalid value: \"/mnt\": must not already exist as a path in volumeMounts",
            "spec.containers[0].volumeDevices[3].name: Not found: \"nothing\"",
            "spec.containers[0].volumeDevices[3].devicePath: Invalid value: \"/dev/../x\": can not contain backsteps ('..')",
        ]
    );
    assert_eq!(
        refused(
            "Pod",
            pod(
                volumes,
                web(
                    json!({"volumeDevices": [{"name": "block", "devicePath": "/dev/xvda"}],
                "lifecycle": {"postStart": {"httpGet": {"path": "/", "port": 80}}, "preStop": {"sleep": {"seconds": 10}}}})
                )
            )
        ),
        Vec::<String>::new()
    );
}

#[test]
fn namespaces_are_dns_labels() {
    let catalogue = crate::resources::Catalogue::new();
    let namespaces = catalogue.get("", "v1", "namespaces").expect("served");
    let causes = crate::strategy::validate(&namespaces, &json!({"metadata": {"name": "My_NS"}}));
    assert_eq!(causes[0].field, "metadata.name");
    assert!(causes[0]
        .message
        .starts_with("Invalid value: \"My_NS\": a lowercase RFC 1123 label"));
}

#[test]
fn image_volumes_as_upstream() {
    let pod = |volume: Value, mount: Value| json!({"spec": {"volumes": [volume], "containers": [web(json!({"volumeMounts": [mount]}))]}});
    let mount = json!({"name": "v", "mountPath": "/volume"});
    // A pull policy, sub paths and writable mounts are all allowed (the runtime mounts
    // image volumes read-only whatever the mount says).
    let good = json!({"name": "v", "image": {"reference": "kitten:1.7", "pullPolicy": "Always"}});
    assert!(refused("Pod", pod(good.clone(), mount.clone())).is_empty());
    let sub_paths =
        json!({"name": "v", "mountPath": "/etc-only", "subPath": "etc", "readOnly": false});
    assert!(refused("Pod", pod(good.clone(), sub_paths)).is_empty());
    let expr = json!({"name": "v", "mountPath": "/x", "subPathExpr": "$(POD_NAME)"});
    assert!(refused("Pod", pod(good, expr)).is_empty());
    assert_eq!(
        refused(
            "Pod",
            pod(
                json!({"name": "v", "image": {"pullPolicy": "Sometimes"}}),
                mount.clone()
            )
        ),
        [
            "spec.volumes[0].image.reference: Required value",
            "spec.volumes[0].image.pullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            // An invalid volume is not one a mount may name.
            "spec.containers[0].volumeMounts[0].name: Not found: \"v\"",
        ]
    );
    assert_eq!(
        refused(
            "Pod",
            pod(
                json!({"name": "v", "image": {"reference": "kitten"}, "emptyDir": {}}),
                mount.clone()
            )
        ),
        [
            "spec.volumes[0].image: Forbidden: may not specify more than 1 volume type",
            "spec.containers[0].volumeMounts[0].name: Not found: \"v\"",
        ]
    );
    // Templates may leave the reference to be set later (upstream's ResourceIsPod).
    let template = json!({"template": {"spec": {
        "volumes": [{"name": "v", "image": {}}],
        "containers": [web(json!({"volumeMounts": [mount]}))]}}});
    assert!(refused("PodTemplate", template).is_empty());
}
