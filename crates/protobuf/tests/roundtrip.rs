//! JSON -> protobuf -> JSON round trips for many kinds, cross-checks against the prost structs
//! of k8s-pb, watch framing, errors, and garbage input.

use prost::Message as _;
use serde_json::{json, Value};
use skiff_protobuf::{decode, decode_watch_event, encode, encode_watch_event, supports};

fn round_trip(v: &Value) -> Value {
    let bytes = encode(v).unwrap_or_else(|e| panic!("encode: {e}"));
    let back = decode(&bytes).unwrap_or_else(|e| panic!("decode: {e}"));
    assert_eq!(
        &back,
        v,
        "\n got {}\nwant {}",
        serde_json::to_string_pretty(&back).unwrap(),
        serde_json::to_string_pretty(v).unwrap()
    );
    back
}

/// The object message inside a full body, for prost.
fn raw_of(body: &[u8]) -> Vec<u8> {
    let unknown =
        k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..]).expect("envelope");
    unknown.raw.expect("raw")
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "default",
            "uid": "7f1c0a52-1111-2222-3333-444455556666",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": "x"},
            "finalizers": ["example.com/f"],
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                "uid": "u-1", "controller": true, "blockOwnerDeletion": true
            }],
            "managedFields": [{
                "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}
            }]
        },
        "spec": {
            "containers": [{
                "name": "nginx",
                "image": "nginx:1.27",
                "command": ["nginx", "-g", "daemon off;"],
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "b", "optional": false}}},
                    {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m", "memory": "64Mi"}
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "initialDelaySeconds": 5, "periodSeconds": 10
                },
                "readinessProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 3},
                "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
                "securityContext": {"runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false}
            }],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420}},
                {"name": "sec", "secret": {"secretName": "s", "items": [{"key": "k", "path": "p"}]}}
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "hostNetwork": true,
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                ]}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                }]}
            },
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "podIP": "10.0.0.1"
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}],
            "hostIP": "192.168.1.1",
            "startTime": "2024-01-02T03:04:06Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-02T03:04:07Z"}],
            "containerStatuses": [{
                "name": "nginx", "ready": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "",
                "state": {"running": {"startedAt": "2024-01-02T03:04:06Z"}}
            }]
        }
    })
}

#[test]
fn pod_round_trip_and_prost_agrees() {
    let mut p = pod();
    // podIP is not a PodSpec field: unknown keys are ignored by encode.
    p["spec"].as_object_mut().unwrap().remove("podIP");
    let mut with_unknown = p.clone();
    with_unknown["spec"]["podIP"] = json!("10.0.0.1");
    assert_eq!(decode(&encode(&with_unknown).unwrap()).unwrap(), p);
    // imageID "" is a non-omitempty Go field: kept.
    round_trip(&p);

    let bytes = encode(&p).unwrap();
    let pod = k8s_pb::api::core::v1::Pod::decode(raw_of(&bytes).as_slice()).unwrap();
    let meta = pod.metadata.as_ref().unwrap();
    assert_eq!(meta.name.as_deref(), Some("web-0"));
    assert_eq!(meta.generation, Some(3));
    assert_eq!(
        meta.creation_timestamp.unwrap().seconds,
        Some(1_704_164_645)
    );
    let spec = pod.spec.as_ref().unwrap();
    let c = &spec.containers[0];
    assert_eq!(c.ports[0].container_port, Some(80));
    assert_eq!(
        c.resources.as_ref().unwrap().limits["cpu"]
            .string
            .as_deref(),
        Some("500m")
    );
    let port = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .handler
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap()
        .port
        .as_ref()
        .unwrap();
    assert_eq!(
        (port.r#type, port.str_val.as_deref()),
        (Some(1), Some("http"))
    );
    assert_eq!(
        c.env[1]
            .value_from
            .as_ref()
            .unwrap()
            .config_map_key_ref
            .as_ref()
            .unwrap()
            .local_object_reference
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("cm")
    );
    assert_eq!(spec.termination_grace_period_seconds, Some(0));
    assert!(spec.volumes[0]
        .volume_source
        .as_ref()
        .unwrap()
        .empty_dir
        .is_some());
    assert_eq!(spec.tolerations[0].toleration_seconds, Some(300));

    // And prost's own encoding decodes to the same JSON.
    let again = decode(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap();
    assert_eq!(again, p);
}

#[test]
fn prost_built_namespace_decodes() {
    use k8s_pb::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let ns = Namespace {
        metadata: Some(ObjectMeta {
            name: Some("foo".into()),
            generate_name: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(Time {
                seconds: Some(-62_135_596_800),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(NamespaceSpec {
            finalizers: vec!["kubernetes".into()],
        }),
        status: Some(NamespaceStatus {
            phase: Some("Active".into()),
            conditions: vec![],
        }),
    };
    let got = decode(&envelope("v1", "Namespace", ns.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    );
}

#[test]
fn deployment_keeps_meaningful_zeros() {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {}}]}
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600
        },
        "status": {"replicas": 2, "observedGeneration": 1}
    });
    round_trip(&d);
    let bytes = encode(&d).unwrap();
    let dep = k8s_pb::api::apps::v1::Deployment::decode(raw_of(&bytes).as_slice()).unwrap();
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_surge.unwrap().str_val.as_deref(), Some("25%"));
    assert_eq!(ru.max_unavailable.unwrap().int_val, Some(0));

    // An omitempty non-pointer zero (minReadySeconds 0, paused false) is dropped on decode.
    let mut with_zeros = d.clone();
    with_zeros["spec"]["minReadySeconds"] = json!(0);
    with_zeros["spec"]["paused"] = json!(false);
    assert_eq!(decode(&encode(&with_zeros).unwrap()).unwrap(), d);
}

/// The kinds served in a version newer than the generated table's, through the messages
/// of the version they were promoted from.
#[test]
fn promoted_mutating_admission_policies_round_trip() {
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
    "metadata": {"name": "p", "generation": 1},
    "spec": {
        "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
        "matchConstraints": {"namespaceSelector": {"matchLabels": {"a": "b"}}, "objectSelector": {},
            "resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"],
                               "resources": ["deployments"], "scope": "*"}],
            "matchPolicy": "Equivalent"},
        "variables": [{"name": "v", "expression": "1"}],
        "mutations": [
            {"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": "Object{}"}},
            {"patchType": "JSONPatch", "jsonPatch": {"expression": "[]"}},
        ],
        "failurePolicy": "Fail",
        "matchConditions": [{"name": "c", "expression": "true"}],
        "reinvocationPolicy": "IfNeeded",
    }});
    round_trip(&policy);
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": "b"},
        "spec": {"policyName": "p",
                 "paramRef": {"name": "cm", "namespace": "ns", "parameterNotFoundAction": "Deny"}}});
    round_trip(&binding);
    assert!(supports(
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicyBindingList"
    ));
}

#[test]
fn many_kinds_round_trip() {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cm", "namespace": "default"},
               "data": {"a": "1", "b": "", "c.txt": "hello\nworld"},
               "binaryData": {"bin": "AAH/"}, "immutable": true}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "s", "namespace": "default"},
               "type": "Opaque", "data": {"password": "aHVudGVyMg=="}, "stringData": {"x": "y"}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "svc", "namespace": "default"},
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                        "selector": {"app": "web"}, "sessionAffinity": "None",
                        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                                  {"name": "alt", "port": 8080, "targetPort": 9090, "nodePort": 30000}],
                        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"},
               "status": {"loadBalancer": {}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "r", "namespace": "default"},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"],
                          "resourceNames": ["a"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "rb", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                            {"kind": "ServiceAccount", "name": "sa", "namespace": "default"}]}),
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": "e1", "namespace": "default"},
               "eventTime": "2024-01-02T03:04:05.123456Z",
               "series": {"count": 2, "lastObservedTime": "2024-01-02T03:05:05.000001Z"},
               "reportingController": "kubelet", "reportingInstance": "node-1",
               "action": "Pulled", "reason": "Pulled", "type": "Normal", "note": "pulled image",
               "regarding": {"kind": "Pod", "name": "web-0", "namespace": "default"}}),
        json!({"apiVersion": "v1", "kind": "Event",
               "metadata": {"name": "e2", "namespace": "default"},
               "involvedObject": {"kind": "Pod", "name": "web-0"},
               "reason": "Started", "message": "started", "count": 1, "type": "Normal",
               "firstTimestamp": "2024-01-02T03:04:05Z", "lastTimestamp": "2024-01-02T03:04:05Z",
               "source": {"component": "kubelet", "host": "node-1"}}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
               "spec": {"holderIdentity": "node-1_abc", "leaseDurationSeconds": 15,
                        "acquireTime": "2024-01-02T03:04:05.000000Z",
                        "renewTime": "2024-01-02T03:04:20.654321Z", "leaseTransitions": 0}}),
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
               "status": "Failure", "message": "pods \"x\" not found", "reason": "NotFound",
               "details": {"name": "x", "kind": "pods",
                           "causes": [{"reason": "FieldValueInvalid", "message": "bad", "field": "spec"}]},
               "code": 404}),
        json!({"apiVersion": "v1", "kind": "NamespaceList",
               "metadata": {"resourceVersion": "100", "continue": "abc", "remainingItemCount": 5},
               "items": [{"metadata": {"name": "a"}, "spec": {}, "status": {"phase": "Active"}},
                         {"metadata": {"name": "b"}}]}),
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": []}),
        json!({"apiVersion": "v1", "kind": "APIResourceList", "groupVersion": "v1",
               "resources": [{"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                              "verbs": ["create", "get"], "shortNames": ["po"], "categories": ["all"]},
                             {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod",
                              "verbs": ["get"]}]}),
        json!({"apiVersion": "v1", "kind": "APIGroupList",
               "groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                           "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}),
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions",
               "gracePeriodSeconds": 0, "propagationPolicy": "Foreground",
               "preconditions": {"uid": "u", "resourceVersion": "1"}, "dryRun": ["All"]}),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "metadata": {}, "spec": {"token": "abc", "audiences": ["api"]},
               "status": {"authenticated": true,
                          "user": {"username": "alice", "uid": "1", "groups": ["g"],
                                   "extra": {"scopes": ["a", "b"], "empty": []}}}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "db"},
               "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                        "template": {"metadata": {}, "spec": {}},
                        "volumeClaimTemplates": [{"metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                                     "resources": {"requests": {"storage": "1Gi"}}}}]},
               "status": {"replicas": 0, "availableReplicas": 0}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": "cj"},
               "spec": {"schedule": "*/5 * * * *", "timeZone": "Etc/UTC", "suspend": false,
                        "jobTemplate": {"metadata": {}, "spec": {"backoffLimit": 6,
                            "template": {"metadata": {}, "spec": {"restartPolicy": "OnFailure",
                                "containers": [{"name": "c", "image": "busybox", "args": ["date"]}]}}}}},
               "status": {"lastScheduleTime": "2024-01-02T03:04:05Z"}}),
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
               "metadata": {"name": "web-0", "namespace": "default"},
               "deleteOptions": {"gracePeriodSeconds": 30}}),
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": "web"}, "spec": {"replicas": 5},
               "status": {"replicas": 2, "selector": "app=web"}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "ing"},
               "spec": {"rules": [{"host": "foo.com", "http": {"paths": [{"path": "/bar", "pathType": "Exact",
                   "backend": {"service": {"name": "svc1", "port": {"number": 80}}}}]}}]},
               "status": {"loadBalancer": {}}}),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "n1"},
               "spec": {"podCIDR": "10.244.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
               "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                          "addresses": [{"type": "InternalIP", "address": "192.168.1.1"}],
                          "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b",
                                       "kernelVersion": "6", "osImage": "os", "containerRuntimeVersion": "skiff://1",
                                       "kubeletVersion": "v1.37.0", "operatingSystem": "linux",
                                       "architecture": "amd64"},
                          "conditions": [{"type": "Ready", "status": "True",
                                          "lastHeartbeatTime": "2024-01-02T03:04:05Z"}],
                          "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
               "metadata": {"name": "cr"}, "revision": 2,
               "data": {"spec": {"template": {"x": [1, 2, {"y": null}]}}}}),
    ];
    for o in &objects {
        round_trip(o);
    }
}

#[test]
fn crd_with_schema_round_trips() {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList",
                      "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "size": {"type": "integer", "format": "int32", "minimum": 1.0, "maximum": 10.0,
                                         "default": 3},
                                "color": {"type": "string", "enum": ["red", "blue"], "pattern": "^[a-z]+$"},
                                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                                "tuple": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "closed": {"type": "object", "additionalProperties": false},
                                "deps": {"type": "object", "dependencies": {"a": ["b", "c"], "d": {"type": "object"}}},
                                "port": {"x-kubernetes-int-or-string": true,
                                         "anyOf": [{"type": "integer"}, {"type": "string"}]}
                            },
                            "x-kubernetes-validations": [{"rule": "self.size < 100", "message": "too big"}]
                        },
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size",
                                                         "statusReplicasPath": ".status.size"}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]
            }],
            "conversion": {"strategy": "None"}
        },
        "status": {"acceptedNames": {"plural": "widgets", "kind": "Widget"}, "storedVersions": ["v1"],
                   "conditions": [{"type": "Established", "status": "True",
                                   "lastTransitionTime": "2024-01-02T03:04:05Z", "reason": "InitialNamesAccepted",
                                   "message": "ok"}]}
    });
    round_trip(&crd);
}

#[test]
fn watch_frames() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}});
    let frame = encode_watch_event("ADDED", &ns).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    // The frame body is a bare WatchEvent whose object raw is a full enveloped body.
    let ev = k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent::decode(&frame[4..]).unwrap();
    assert_eq!(ev.r#type.as_deref(), Some("ADDED"));
    let raw = ev.object.unwrap().raw.unwrap();
    assert_eq!(raw, encode(&ns).unwrap());
    assert_eq!(
        decode_watch_event(&frame).unwrap(),
        ("ADDED".to_string(), ns.clone())
    );
    // A WatchEvent sent as a whole object (kind WatchEvent) decodes its embedded object too.
    let mut body = b"k8s\0".to_vec();
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("meta.k8s.io/v1".into()),
            kind: Some("WatchEvent".into()),
        }),
        raw: Some(frame[4..].to_vec()),
        ..Default::default()
    };
    body.extend(unknown.encode_to_vec());
    assert_eq!(
        decode(&body).unwrap(),
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "WatchEvent", "type": "ADDED", "object": ns})
    );
    let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                        "reason": "Expired", "code": 410});
    let f = encode_watch_event("ERROR", &status).unwrap();
    assert_eq!(decode_watch_event(&f).unwrap().1, status);
    assert!(decode_watch_event(&f[..f.len() - 1]).is_err());
}

#[test]
fn supports_and_errors() {
    for (av, k) in [
        ("v1", "Namespace"),
        ("v1", "NamespaceList"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "DeploymentList"),
        ("v1", "Status"),
        ("meta.k8s.io/v1", "Status"),
        ("v1", "DeleteOptions"),
        ("apps/v1", "DeleteOptions"),
        ("meta.k8s.io/v1", "WatchEvent"),
        ("v1", "APIResourceList"),
        ("v1", "APIGroupList"),
        ("autoscaling/v1", "Scale"),
        ("policy/v1", "Eviction"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("v1", "Binding"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("apiregistration.k8s.io/v1", "APIService"),
        ("storage.k8s.io/v1", "CSIDriver"),
        ("meta.k8s.io/v1", "PartialObjectMetadataList"),
    ] {
        assert!(supports(av, k), "{av} {k}");
    }
    assert!(!supports("example.com/v1", "Widget"));
    assert!(!supports("v1", "Deployment"));
    assert!(!supports("meta.k8s.io/v1", "Table"));

    let e = encode(&json!({"apiVersion": "example.com/v1", "kind": "Widget"})).unwrap_err();
    assert!(e.to_string().contains("Widget"), "{e}");
    assert!(encode(&json!({"kind": "Pod"}))
        .unwrap_err()
        .to_string()
        .contains("apiVersion"));
    assert!(matches!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(skiff_protobuf::ProtobufError::MissingMagic)
    ));

    let mut bad = pod();
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
    let e = encode(&bad).unwrap_err().to_string();
    assert!(
        e.contains("$.spec.containers[0].ports[0].containerPort") && e.contains("integer"),
        "{e}"
    );
    let mut bad = pod();
    bad["metadata"]["creationTimestamp"] = json!("yesterday");
    let e = encode(&bad).unwrap_err().to_string();
    assert!(e.contains("$.metadata.creationTimestamp"), "{e}");
    let mut bad = pod();
    bad["spec"]["containers"] = json!({"name": "x"});
    assert!(encode(&bad).unwrap_err().to_string().contains("array"));

    // Unknown kind on decode.
    let body = envelope("example.com/v1", "Widget", vec![]);
    assert!(matches!(
        decode(&body),
        Err(skiff_protobuf::ProtobufError::UnknownKind { .. })
    ));
}

/// xorshift, so the garbage test needs no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let valid: Vec<Vec<u8>> = vec![
        encode(&pod()).unwrap(),
        encode(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}}))
            .unwrap(),
    ];
    for body in &valid {
        // Every truncation.
        for n in 0..body.len() {
            let _ = decode(&body[..n]);
        }
        // Random byte and bit damage.
        for _ in 0..3000 {
            let mut b = body.clone();
            for _ in 0..(1 + rng.next() % 4) {
                let i = (rng.next() as usize) % b.len();
                b[i] = rng.next() as u8;
            }
            if let Ok(v) = decode(&b) {
                let _ = encode(&v);
            }
        }
    }
    // Pure noise after a valid envelope header for Pod.
    for _ in 0..3000 {
        let len = (rng.next() % 200) as usize;
        let raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = decode(&envelope("v1", "Pod", raw));
    }
    // Deep nesting: JSONSchemaProps within itself, far beyond the limit.
    let mut raw = Vec::new();
    for _ in 0..5000 {
        let mut outer = vec![0x42]; // a JSONSchemaProps-typed field is length-delimited
        prost::encoding::encode_varint(raw.len() as u64, &mut outer);
        outer.extend(raw);
        raw = outer;
    }
    let _ = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        raw,
    ));
}
