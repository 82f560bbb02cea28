//! `Table` views (`kubectl get`): upstream's printer columns for the common kinds, and
//! upstream's default (`NAME`, `CREATED AT`) for the rest.

use serde_json::{json, Map, Value};

use crate::crd::definition::{PrinterColumn, AGE_COLUMN};
use crate::crd::{jsonpath, CustomVersion};
use crate::object::{self, age};
use crate::resources::ResourceInfo;

type Cell = Value;
/// A table's column definitions and how a row's cells are read from an object.
type Columns = (Vec<Value>, Box<dyn Fn(&Value) -> Vec<Cell>>);

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    /// Shown only with `-o wide`.
    wide: bool,
}

const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        wide: false,
    }
}

const fn wide(mut c: Column) -> Column {
    c.wide = true;
    c
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    wide: false,
};
/// The `-o wide` columns every workload with a pod template shows.
const CONTAINERS: Column = wide(col(
    "Containers",
    "string",
    "Names of each container in the template.",
));
const IMAGES: Column = wide(col(
    "Images",
    "string",
    "Images referenced by each container in the template.",
));
const AGE: Column = col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.");

const PARAM_KIND: Column = col(
    "ParamKind",
    "string",
    "ParamKind specifies the kind of resources used to parameterize this policy",
);

fn columns(kind: &str) -> Option<Vec<Column>> {
    Some(match kind {
        "Pod" => vec![
            NAME,
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            wide(col("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.")),
            wide(col("Node", "string", "NodeName is a request to schedule this pod onto a specific node. If it is non-empty, the scheduler simply schedules this pod onto that node, assuming that it fits resource requirements.")),
            wide(col("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.")),
            wide(col("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.")),
        ],
        "Namespace" => vec![
            NAME,
            col("Status", "string", "The status of the namespace"),
            AGE,
        ],
        "ConfigMap" => vec![NAME, col("Data", "string", "Data contains the configuration data."), AGE],
        "Secret" => vec![
            NAME,
            col("Type", "string", "Used to facilitate programmatic handling of secret data."),
            col("Data", "string", "Data contains the secret data."),
            AGE,
        ],
        "ServiceAccount" => vec![NAME, col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."), AGE],
        "Deployment" => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide(col("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.")),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            NAME,
            col("Desired", "integer", "Replicas is the number of desired replicas."),
            col("Current", "integer", "Replicas is the most recently observed number of replicas."),
            col("Ready", "integer", "The number of ready replicas for this replica set."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide(col("Selector", "string", "Selector is a label query over pods that should match the replica count.")),
        ],
        "PodDisruptionBudget" => vec![
            NAME,
            col("Min Available", "string", "The minimum number of pods that must be available."),
            col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
            col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
            AGE,
        ],
        "StatefulSet" => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        "DaemonSet" => vec![
            NAME,
            col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
            col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            col("Ready", "integer", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
            col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node."),
            AGE,
        ],
        "Job" => vec![
            NAME,
            col("Status", "string", "Status of the job."),
            col("Completions", "string", "The desired number of successfully finished pods the job should be run with."),
            col("Duration", "string", "Time required to complete the job."),
            AGE,
        ],
        "CronJob" => vec![
            NAME,
            col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
            col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
            col("Active", "integer", "A list of pointers to currently running jobs."),
            col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
            AGE,
        ],
        "Service" => vec![
            NAME,
            col("Type", "string", "type determines how the Service is exposed."),
            col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
            col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", "string", "The list of ports that are exposed by this service."),
            AGE,
            wide(col("Selector", "string", "Route service traffic to pods with label keys and values matching this selector.")),
        ],
        "Node" => vec![
            NAME,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide(col("Internal-IP", "string", "List of addresses reachable to the node.")),
            wide(col("External-IP", "string", "List of addresses reachable to the node.")),
            wide(col("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).")),
            wide(col("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).")),
            wide(col("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).")),
        ],
        "Role" | "ClusterRole" => vec![NAME, col("Created At", "date", "")],
        "RoleBinding" => vec![
            NAME,
            col("Role", "string", "RoleRef references the Role that this binding refers to."),
            AGE,
            wide(col("Users", "string", "Users in the binding")),
            wide(col("Groups", "string", "Groups in the binding")),
            wide(col("ServiceAccounts", "string", "ServiceAccounts in the binding")),
        ],
        "ClusterRoleBinding" => vec![
            NAME,
            col("Role", "string", "RoleRef references the Role that this binding refers to."),
            AGE,
            wide(col("Users", "string", "Users in the binding")),
            wide(col("Groups", "string", "Groups in the binding")),
            wide(col("ServiceAccounts", "string", "ServiceAccounts in the binding")),
        ],
        "Event" => vec![
            col("Last Seen", "string", "Time when this Event was last seen"),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future."),
            col("Reason", "string", "Reason is why the action was taken. It is human-readable."),
            col("Object", "string", "The object this Event is about"),
            col("Message", "string", "A human-readable description of the status of this operation."),
        ],
        "Lease" => vec![NAME, col("Holder", "string", "Name of the Lease holder"), AGE],
        "ValidatingAdmissionPolicy" => vec![
            NAME,
            col("Validations", "integer", "Validations indicates the number of validation rules defined in this configuration"),
            PARAM_KIND,
            AGE,
        ],
        "MutatingAdmissionPolicy" => vec![
            NAME,
            col("Mutations", "integer", "Mutation indicates the number of mutations rules defined in this configuration"),
            PARAM_KIND,
            AGE,
        ],
        "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicyBinding" => vec![
            NAME,
            col("PolicyName", "string", "PolicyName indicates the policy definition which the policy binding binded to"),
            col("ParamRef", "string", "ParamRef indicates the param resource which sets the configration param"),
            AGE,
        ],
        "Endpoints" => vec![NAME, col("Endpoints", "string", "Endpoints of the service"), AGE],
        "Ingress" => vec![
            NAME,
            col("Class", "string", "The name of the IngressClass resource that should be used"),
            col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
            col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
            col("Ports", "string", "Ports of TLS configurations that open"),
            AGE,
        ],
        "IngressClass" => vec![
            NAME,
            col("Controller", "string", "Controller that is responsible for handling this class"),
            col("Parameters", "string", "A reference to a resource with additional parameters"),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            col("AddressType", "string", "The IP protocol for this slice"),
            col("Ports", "string", "The ports exposed by this slice"),
            col("Endpoints", "string", "The endpoints in this slice"),
            AGE,
        ],
        "APIService" => vec![
            NAME,
            col("Service", "string", "The reference to the service that hosts this API endpoint."),
            col("Available", "string", "Whether this service is available."),
            AGE,
        ],
        "PriorityClass" => vec![
            NAME,
            col("Value", "integer", "The integer value of this priority class."),
            col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority."),
            AGE,
            col("PreemptionPolicy", "string", "PreemptionPolicy is the Policy for preempting pods with lower priority."),
        ],
        _ => return None,
    })
}

fn s(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn int(value: Option<&Value>) -> i64 {
    value.and_then(Value::as_i64).unwrap_or(0)
}

/// The first three items, and how many more there are, as kubectl prints endpoints.
fn first_three(items: &[String]) -> String {
    match items.len() {
        0..=3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

fn count(value: Option<&Value>) -> usize {
    match value {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn template_containers(object: &Value, field: &str) -> String {
    object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| s(c.get(field)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A label selector as `kubectl` prints it: `a=b,c in (d)`.
pub fn format_label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = object::string_map(selector.get("matchLabels"))
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(expressions) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in expressions {
            let key = s(e.get("key"));
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().map(|x| s(Some(x))).collect())
                .unwrap_or_default();
            parts.push(match s(e.get("operator")).as_str() {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key,
                "DoesNotExist" => format!("!{key}"),
                op => format!("{key} {op} ({})", values.join(",")),
            });
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn map_selector(selector: Option<&Value>) -> String {
    let parts: Vec<String> = object::string_map(selector)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn pod_cells(pod: &Value) -> Vec<Cell> {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses.iter().map(|c| int(c.get("restartCount"))).sum();
    let mut reason = s(pod.pointer("/status/reason"));
    if reason.is_empty() {
        reason = s(pod.pointer("/status/phase"));
    }
    for c in statuses.iter().rev() {
        if let Some(waiting) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = waiting.to_string();
        } else if let Some(terminated) = c.pointer("/state/terminated") {
            let r = s(terminated.get("reason"));
            reason = if r.is_empty() {
                format!("ExitCode:{}", int(terminated.get("exitCode")))
            } else {
                r
            };
        }
    }
    if object::meta_str(pod, "deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![
        json!(object::name(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(pod)),
        json!(or_none(s(pod.pointer("/status/podIP")))),
        json!(or_none(s(pod.pointer("/spec/nodeName")))),
        json!(or_none(s(pod.pointer("/status/nominatedNodeName")))),
        json!(if gates == 0 {
            "<none>".to_string()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn service_ports(svc: &Value) -> String {
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| {
            let protocol = s(p.get("protocol"));
            let protocol = if protocol.is_empty() {
                "TCP".into()
            } else {
                protocol
            };
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node_port) => format!("{}:{node_port}/{protocol}", int(p.get("port"))),
                None => format!("{}/{protocol}", int(p.get("port"))),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn node_cells(node: &Value) -> Vec<Cell> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(c.get("type")) == "Ready"))
        .map(|c| {
            if s(c.get("status")) == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = object::labels(node)
        .keys()
        .filter_map(|k| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(str::to_string)
        })
        .collect();
    let address = |kind: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| s(x.get("type")) == kind))
            .map(|x| s(x.get("address")))
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(object::name(node)),
        json!(status),
        json!(if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(",")
        }),
        json!(age(node)),
        json!(s(node.pointer("/status/nodeInfo/kubeletVersion"))),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(s(node.pointer("/status/nodeInfo/osImage"))),
        json!(s(node.pointer("/status/nodeInfo/kernelVersion"))),
        json!(s(node.pointer("/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn subjects(binding: &Value, kind: &str) -> String {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .map(|subjects| {
            subjects
                .iter()
                .filter(|x| s(x.get("kind")) == kind)
                .map(|x| {
                    if kind == "ServiceAccount" {
                        format!("{}/{}", s(x.get("namespace")), s(x.get("name")))
                    } else {
                        s(x.get("name"))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn cells(kind: &str, o: &Value) -> Vec<Cell> {
    let name = json!(object::name(o));
    match kind {
        "Pod" => pod_cells(o),
        "Namespace" => vec![name, json!(s(o.pointer("/status/phase"))), json!(age(o))],
        "ConfigMap" => vec![
            name,
            json!(count(o.get("data")) + count(o.get("binaryData"))),
            json!(age(o)),
        ],
        "Secret" => vec![
            name,
            json!(s(o.get("type"))),
            json!(count(o.get("data"))),
            json!(age(o)),
        ],
        "ServiceAccount" => vec![name, json!(count(o.get("secrets"))), json!(age(o))],
        "Deployment" => vec![
            name,
            json!(format!(
                "{}/{}",
                int(o.pointer("/status/readyReplicas")),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            )),
            json!(int(o.pointer("/status/updatedReplicas"))),
            json!(int(o.pointer("/status/availableReplicas"))),
            json!(age(o)),
            json!(template_containers(o, "name")),
            json!(template_containers(o, "image")),
            json!(format_label_selector(o.pointer("/spec/selector"))),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            name,
            json!(o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)),
            json!(int(o.pointer("/status/replicas"))),
            json!(int(o.pointer("/status/readyReplicas"))),
            json!(age(o)),
            json!(template_containers(o, "name")),
            json!(template_containers(o, "image")),
            json!(if kind == "ReplicaSet" {
                format_label_selector(o.pointer("/spec/selector"))
            } else {
                map_selector(o.pointer("/spec/selector"))
            }),
        ],
        "PodDisruptionBudget" => {
            let int_or_percent = |field: &str| match o.pointer(field) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(text)) => text.clone(),
                _ => "N/A".into(),
            };
            vec![
                name,
                json!(int_or_percent("/spec/minAvailable")),
                json!(int_or_percent("/spec/maxUnavailable")),
                json!(int(o.pointer("/status/disruptionsAllowed"))),
                json!(age(o)),
            ]
        }
        "StatefulSet" => vec![
            name,
            json!(format!(
                "{}/{}",
                int(o.pointer("/status/readyReplicas")),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            )),
            json!(age(o)),
            json!(template_containers(o, "name")),
            json!(template_containers(o, "image")),
        ],
        "DaemonSet" => vec![
            name,
            json!(int(o.pointer("/status/desiredNumberScheduled"))),
            json!(int(o.pointer("/status/currentNumberScheduled"))),
            json!(int(o.pointer("/status/numberReady"))),
            json!(int(o.pointer("/status/updatedNumberScheduled"))),
            json!(int(o.pointer("/status/numberAvailable"))),
            json!(map_selector(o.pointer("/spec/template/spec/nodeSelector"))),
            json!(age(o)),
        ],
        "Job" => {
            let succeeded = int(o.pointer("/status/succeeded"));
            let completions = match (
                o.pointer("/spec/completions").and_then(Value::as_i64),
                o.pointer("/spec/parallelism").and_then(Value::as_i64),
            ) {
                (Some(c), _) => format!("{succeeded}/{c}"),
                (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            };
            let time = |pointer: &str| {
                o.pointer(pointer)
                    .and_then(Value::as_str)
                    .and_then(object::parse_time)
            };
            let duration = match (time("/status/startTime"), time("/status/completionTime")) {
                (None, _) => String::new(),
                (Some(start), None) => {
                    object::human_duration(jiff::Timestamp::now().as_second() - start.as_second())
                }
                (Some(start), Some(end)) => {
                    object::human_duration(end.as_second() - start.as_second())
                }
            };
            let has = |kind: &str| {
                o.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| s(c.get("type")) == kind && s(c.get("status")) == "True")
                    })
            };
            // Upstream's precedence of what a Job's STATUS column says.
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if object::meta_str(o, "deletionTimestamp").is_some() {
                "Terminating"
            } else if has("Suspended") {
                "Suspended"
            } else if has("FailureTarget") {
                "FailureTarget"
            } else if has("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                json!(age(o)),
            ]
        }
        "CronJob" => vec![
            name,
            json!(s(o.pointer("/spec/schedule"))),
            json!(or_none(s(o.pointer("/spec/timeZone")))),
            // Upstream's `printBoolPtr`: a word, not a JSON boolean.
            json!(match o.pointer("/spec/suspend").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            }),
            json!(count(o.pointer("/status/active"))),
            json!(o
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
                .and_then(object::parse_time)
                .map(|t| object::human_duration(jiff::Timestamp::now().as_second() - t.as_second()))
                .unwrap_or_else(|| "<none>".into())),
            json!(age(o)),
        ],
        "Service" => {
            let svc_type = s(o.pointer("/spec/type"));
            let external_ips: Vec<String> = o
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| s(Some(i)))
                .collect();
            // As kubectl's printer: a load balancer's ingress first, then external IPs.
            let ingress: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| s(i.get("ip").or_else(|| i.get("hostname"))))
                .filter(|i| !i.is_empty())
                .collect();
            let external = match svc_type.as_str() {
                "ExternalName" => s(o.pointer("/spec/externalName")),
                "LoadBalancer" if ingress.is_empty() && external_ips.is_empty() => {
                    "<pending>".into()
                }
                "LoadBalancer" => [ingress, external_ips].concat().join(","),
                _ if !external_ips.is_empty() => external_ips.join(","),
                _ => "<none>".into(),
            };
            vec![
                name,
                json!(if svc_type.is_empty() {
                    "ClusterIP".into()
                } else {
                    svc_type
                }),
                json!(or_none(s(o.pointer("/spec/clusterIP")))),
                json!(external),
                json!(service_ports(o)),
                json!(age(o)),
                json!(map_selector(o.pointer("/spec/selector"))),
            ]
        }
        "Node" => node_cells(o),
        "Role" | "ClusterRole" => vec![
            name,
            json!(object::meta_str(o, "creationTimestamp").unwrap_or("")),
        ],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            name,
            json!(format!(
                "{}/{}",
                s(o.pointer("/roleRef/kind")),
                s(o.pointer("/roleRef/name"))
            )),
            json!(age(o)),
            json!(subjects(o, "User")),
            json!(subjects(o, "Group")),
            json!(subjects(o, "ServiceAccount")),
        ],
        "Event" => {
            let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
                .iter()
                .find_map(|f| o.get(*f).and_then(Value::as_str))
                .and_then(object::parse_time)
                .map(|t| object::human_duration(jiff::Timestamp::now().as_second() - t.as_second()))
                .unwrap_or_else(|| "<unknown>".into());
            vec![
                json!(last),
                json!(s(o.get("type"))),
                json!(s(o.get("reason"))),
                json!(format!(
                    "{}/{}",
                    s(o.pointer("/involvedObject/kind")).to_lowercase(),
                    s(o.pointer("/involvedObject/name"))
                )),
                json!(s(o.get("message"))),
            ]
        }
        "Lease" => vec![
            name,
            json!(s(o.pointer("/spec/holderIdentity"))),
            json!(age(o)),
        ],
        "ValidatingAdmissionPolicy" | "MutatingAdmissionPolicy" => {
            let rules = if kind == "MutatingAdmissionPolicy" {
                "mutations"
            } else {
                "validations"
            };
            let param_kind = match o.pointer("/spec/paramKind") {
                Some(k) => format!("{}/{}", s(k.get("apiVersion")), s(k.get("kind"))),
                None => "<unset>".into(),
            };
            vec![
                name,
                json!(count(o.pointer(&format!("/spec/{rules}")))),
                json!(param_kind),
                json!(age(o)),
            ]
        }
        "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicyBinding" => {
            // Upstream's: a cluster-scoped parameter's namespace is not known here.
            let param_ref = match o.pointer("/spec/paramRef") {
                Some(r) if !s(r.get("name")).is_empty() => match s(r.get("namespace")) {
                    ns if ns.is_empty() => format!("*/{}", s(r.get("name"))),
                    ns => format!("{ns}/{}", s(r.get("name"))),
                },
                Some(r) if r.get("selector").is_some() => format_label_selector(r.get("selector")),
                _ => "<unset>".into(),
            };
            vec![
                name,
                json!(s(o.pointer("/spec/policyName"))),
                json!(param_ref),
                json!(age(o)),
            ]
        }
        "Endpoints" => {
            let mut endpoints = Vec::new();
            for subset in o
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for address in subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for port in subset
                        .get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        endpoints.push(format!(
                            "{}:{}",
                            s(address.get("ip")),
                            int(port.get("port"))
                        ));
                    }
                }
            }
            vec![name, json!(or_none(first_three(&endpoints))), json!(age(o))]
        }
        "Ingress" => {
            let hosts: Vec<String> = o
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("host").and_then(Value::as_str).map(String::from))
                .collect();
            let address: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| s(i.get("ip").or_else(|| i.get("hostname"))))
                .collect();
            let tls = o
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            vec![
                name,
                json!(or_none(s(o.pointer("/spec/ingressClassName")))),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    first_three(&hosts)
                }),
                json!(address.join(",")),
                json!(if tls { "80, 443" } else { "80" }),
                json!(age(o)),
            ]
        }
        "IngressClass" => {
            let parameters = o.pointer("/spec/parameters").map(|p| {
                let group = s(p.get("apiGroup"));
                let kind = s(p.get("kind"));
                let name = s(p.get("name"));
                if group.is_empty() {
                    format!("{kind}/{name}")
                } else {
                    format!("{group}/{kind}/{name}")
                }
            });
            vec![
                name,
                json!(s(o.pointer("/spec/controller"))),
                json!(parameters.unwrap_or_else(|| "<none>".into())),
                json!(age(o)),
            ]
        }
        "EndpointSlice" => {
            let list = |field: &str| o.get(field).and_then(Value::as_array).into_iter().flatten();
            let ports: Vec<String> = list("ports").map(|p| s(p.get("port"))).collect();
            let addresses: Vec<String> = list("endpoints")
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .map(|a| s(Some(a)))
                .collect();
            let unset = |text: String| {
                if text.is_empty() {
                    "<unset>".to_string()
                } else {
                    text
                }
            };
            vec![
                name,
                json!(s(o.get("addressType"))),
                json!(unset(ports.join(","))),
                json!(unset(first_three(&addresses))),
                json!(age(o)),
            ]
        }
        "APIService" => {
            let service = match o.pointer("/spec/service") {
                Some(service) if service.is_object() => {
                    format!("{}/{}", s(service.get("namespace")), s(service.get("name")))
                }
                _ => "Local".to_string(),
            };
            let available = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Available"));
            let available = match available {
                None => "Unknown".to_string(),
                Some(c) if s(c.get("status")) == "True" => "True".to_string(),
                Some(c) => format!("{} ({})", s(c.get("status")), s(c.get("reason"))),
            };
            vec![name, json!(service), json!(available), json!(age(o))]
        }
        "PriorityClass" => vec![
            name,
            json!(int(o.get("value"))),
            json!(o
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            json!(age(o)),
            json!(s(o.get("preemptionPolicy"))),
        ],
        _ => vec![
            name,
            json!(object::meta_str(o, "creationTimestamp").unwrap_or("")),
        ],
    }
}

/// The `PartialObjectMetadata` view of an object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Builds a `Table` for `objects` of `kind`.
pub fn table(
    api_version: &str,
    resource: &ResourceInfo,
    objects: &[Value],
    resource_version: Option<String>,
    continue_token: Option<String>,
    remaining: Option<i64>,
    include_object: &str,
) -> Value {
    let (definitions, cells_of): Columns = match &resource.custom {
        Some(custom) => custom_columns(custom),
        None => {
            let kind = resource.builtin_kind().to_string();
            let columns = columns(&kind).unwrap_or_else(|| vec![NAME, col("Created At", "date", "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.")]);
            let definitions = columns
                .iter()
                .map(|c| definition(c.name, c.kind, c.format, c.description, i64::from(c.wide)))
                .collect();
            (definitions, Box::new(move |o| cells(&kind, o)))
        }
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = Map::new();
            let mut cells = cells_of(o);
            cells.truncate(definitions.len());
            row.insert("cells".into(), Value::Array(cells));
            match include_object {
                "None" => {}
                "Object" => {
                    row.insert("object".into(), o.clone());
                }
                _ => {
                    row.insert("object".into(), partial_metadata(o));
                }
            }
            Value::Object(row)
        })
        .collect();
    let mut metadata = Map::new();
    if let Some(rv) = resource_version {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    if let Some(token) = continue_token {
        metadata.insert("continue".into(), json!(token));
    }
    if let Some(n) = remaining {
        metadata.insert("remainingItemCount".into(), json!(n));
    }
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn definition(name: &str, kind: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({
        "name": name,
        "type": kind,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

/// A custom resource's columns: its name, then its `additionalPrinterColumns` (or
/// `Age`, upstream's default), cells read by each column's JSONPath; `date` cells are
/// shown as ages, as upstream's table convertor shows them.
fn custom_columns(custom: &CustomVersion) -> Columns {
    let mut columns: Vec<PrinterColumn> = custom.columns.clone();
    if columns.is_empty() {
        columns.push(PrinterColumn {
            name: AGE_COLUMN.into(),
            kind: "date".into(),
            format: String::new(),
            description: AGE.description.into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        });
    }
    let mut definitions = vec![definition(
        NAME.name,
        NAME.kind,
        NAME.format,
        NAME.description,
        0,
    )];
    definitions.extend(
        columns
            .iter()
            .map(|c| definition(&c.name, &c.kind, &c.format, &c.description, c.priority)),
    );
    let cells = move |o: &Value| {
        let mut row = vec![json!(object::name(o))];
        for column in &columns {
            let found = jsonpath::select(o, &column.json_path);
            let cell = match (found.as_slice(), column.kind.as_str()) {
                ([], _) => Value::Null,
                ([Value::String(t)], "date") => json!(object::age_of(t)),
                ([one], "string") => match one {
                    Value::String(_) => (*one).clone(),
                    other => json!(other.to_string()),
                },
                ([one], _) => (*one).clone(),
                (many, _) => json!(many
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")),
            };
            row.push(cell);
        }
        row
    };
    (definitions, Box::new(cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(kind: &str) -> ResourceInfo {
        crate::resources::builtin()
            .into_iter()
            .find(|r| r.kind == kind)
            .expect("a built-in kind")
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let t = table(
            "meta.k8s.io/v1",
            &kind("Pod"),
            &[pod],
            Some("5".into()),
            None,
            None,
            "Metadata",
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn job_rows_as_upstream_prints_them() {
        let row = |job: Value| {
            let t = table(
                "meta.k8s.io/v1",
                &kind("Job"),
                &[job],
                None,
                None,
                None,
                "None",
            );
            t["rows"][0]["cells"].clone()
        };
        let done = row(json!({"metadata": {"name": "j"},
            "spec": {"completions": 3, "parallelism": 1},
            "status": {"succeeded": 3, "startTime": "2020-01-01T00:00:00Z", "completionTime": "2020-01-01T00:01:05Z",
                "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}}));
        assert_eq!(done[1], "Complete");
        assert_eq!(done[2], "3/3");
        assert_eq!(done[3], "65s");
        let queue = row(
            json!({"metadata": {"name": "q"}, "spec": {"parallelism": 2},
            "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}),
        );
        assert_eq!(queue[1], "FailureTarget");
        assert_eq!(queue[2], "0/1 of 2");
        assert_eq!(queue[3], "");
    }

    #[test]
    fn endpoint_rows_show_three_addresses() {
        let row = |kind: &str, object: Value| {
            let t = table(
                "meta.k8s.io/v1",
                &super::tests::kind(kind),
                &[object],
                None,
                None,
                None,
                "None",
            );
            t["rows"][0]["cells"].clone()
        };
        let slice = row(
            "EndpointSlice",
            json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "m", "port": 9090}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]}),
        );
        assert_eq!(slice[1], "IPv4");
        assert_eq!(slice[2], "8080,9090");
        assert_eq!(slice[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...");
        let placeholder = row(
            "EndpointSlice",
            json!({"metadata": {"name": "p"}, "addressType": "IPv4", "endpoints": []}),
        );
        assert_eq!(
            (placeholder[2].as_str(), placeholder[3].as_str()),
            (Some("<unset>"), Some("<unset>"))
        );
        let endpoints = row(
            "Endpoints",
            json!({"metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]}),
        );
        assert_eq!(endpoints[1], "10.0.0.1:80,10.0.0.2:80");
    }

    #[test]
    fn service_external_ips_as_kubectl_prints_them() {
        let external = |service: Value| {
            let t = table(
                "meta.k8s.io/v1",
                &kind("Service"),
                &[service],
                None,
                None,
                None,
                "None",
            );
            t["rows"][0]["cells"][3].clone()
        };
        let lb = |status: Value, ips: Value| {
            json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "externalIPs": ips},
                "status": {"loadBalancer": status}})
        };
        assert_eq!(external(lb(json!({}), json!([]))), "<pending>");
        assert_eq!(
            external(lb(
                json!({"ingress": [{"ip": "10.77.0.1"}]}),
                json!(["192.0.2.9"])
            )),
            "10.77.0.1,192.0.2.9"
        );
        let cluster = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}});
        assert_eq!(external(cluster), "<none>");
    }

    #[test]
    fn selectors_print_like_kubectl() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(format_label_selector(Some(&sel)), "app=web,tier in (a,b)");
    }
}
