//! The scheduler as a user meets it: a real control plane, hollow nodes
//! (`skiff hollow-nodes`) in small fleets, pods and Deployments written with the real
//! kubectl, placements and messages read back with it. Each scenario has a fleet of its
//! own (label `pool=<scenario>`) and pins its pods to it with a node selector, so that
//! the scenarios can share one cluster; the messages therefore count every node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{eventually, Server, Supervised};

const WITHIN: Duration = Duration::from_secs(60);

/// Starts a fleet of `count` hollow nodes labelled `pool=<pool>` and named `<pool>-<i>`,
/// and waits until they are Ready.
fn fleet(server: &Server, pool: &str, count: usize, extra: &[&str]) -> Supervised {
    named_fleet(server, &format!("{pool}-"), pool, count, extra)
}

/// [`fleet`] with node names `<name_prefix><i>`.
fn named_fleet(
    server: &Server,
    name_prefix: &str,
    pool: &str,
    count: usize,
    extra: &[&str],
) -> Supervised {
    let prefix = format!("--name-prefix={name_prefix}");
    let labels = format!("--labels=pool={pool}");
    let count_flag = format!("--count={count}");
    let mut args = vec![prefix.as_str(), labels.as_str(), count_flag.as_str()];
    args.extend_from_slice(extra);
    let process = server.start_hollow_nodes(&args);
    let selector = format!("pool={pool}");
    eventually(&format!("{count} {pool} nodes Ready"), WITHIN, || {
        let nodes = server.json(&["nodes", "-l", &selector]);
        let ready = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name.starts_with(name_prefix))
            })
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready == count).then_some(())
    });
    process
}

/// A pod for `pool` asking for `cpu`, with `extra` merged into its spec.
fn pod(name: &str, pool: &str, cpu: &str, extra: Value) -> Value {
    let mut spec = json!({
        "nodeSelector": {"pool": pool},
        "containers": [{"name": "app", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}]
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec})
}

/// A Deployment of `replicas` pods for `pool`, with `extra` merged into the pod spec.
fn deployment(name: &str, pool: &str, replicas: u32, extra: Value) -> Value {
    let template = pod(name, pool, "100m", extra);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template["metadata"].clone(), "spec": template["spec"].clone()}
        }
    })
}

/// `kubectl get events` in `ns` with a field selector, as printed.
fn events_about(server: &Server, ns: &str, selector: &str) -> String {
    server.ok(&["get", "events", "-n", ns, "--field-selector", selector])
}

fn apply(server: &Server, ns: &str, object: &Value) {
    server.ok_with_input(&["apply", "-n", ns, "-f", "-"], &object.to_string());
}

/// The node the pod is bound to, once it is.
fn node_of(server: &Server, ns: &str, pod: &str) -> String {
    eventually(&format!("{pod} bound"), WITHIN, || {
        let pod = server.json(&["pod", "-n", ns, pod]);
        pod["spec"]["nodeName"].as_str().map(str::to_string)
    })
}

/// The nodes of the pods labelled `app=<app>` by pod name, once `count` are bound.
fn placements(server: &Server, ns: &str, app: &str, count: usize) -> BTreeMap<String, String> {
    eventually(&format!("{count} {app} pods bound"), WITHIN, || {
        let pods = server.json(&["pods", "-n", ns, "-l", &format!("app={app}")]);
        let bound: BTreeMap<String, String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_string(),
                    p["spec"]["nodeName"].as_str()?.to_string(),
                ))
            })
            .collect();
        (bound.len() == count).then_some(bound)
    })
}

/// The `PodScheduled=False` message of a pending pod, once the scheduler wrote one.
fn unschedulable(server: &Server, ns: &str, pod: &str) -> String {
    eventually(&format!("{pod} Unschedulable"), WITHIN, || {
        let pod = server.json(&["pod", "-n", ns, pod]);
        let condition = pod["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")?
            .clone();
        assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
        condition["message"].as_str().map(str::to_string)
    })
}

#[test]
fn pods_land_where_they_fit_and_wait_where_nothing_does() {
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("sched");

    // Requests fit: one 1.5-CPU pod per 2-CPU node, the third waits with upstream's
    // message, and is bound as soon as a node that fits joins.
    let _fit = fleet(&server, "fit", 2, &["--cpu=2"]);
    for name in ["big-0", "big-1", "big-2"] {
        apply(&server, &ns, &pod(name, "fit", "1500m", json!({})));
    }
    let first: BTreeSet<String> = ["big-0", "big-1"]
        .iter()
        .map(|p| node_of(&server, &ns, p))
        .collect();
    assert_eq!(first, BTreeSet::from(["fit-0".into(), "fit-1".into()]));
    let message = unschedulable(&server, &ns, "big-2");
    assert!(
        message.starts_with("0/2 nodes are available: "),
        "{message}"
    );
    assert!(message.contains("2 Insufficient cpu"), "{message}");
    assert!(message.contains("preemption: "), "{message}");
    let _late = named_fleet(&server, "fit-late-", "fit", 1, &["--cpu=2"]);
    assert_eq!(node_of(&server, &ns, "big-2"), "fit-late-0");

    // A cordoned node receives nothing; a tainted one only pods that tolerate it.
    let _guarded = fleet(&server, "guarded", 3, &[]);
    server.ok(&["cordon", "guarded-0"]);
    server.ok(&["taint", "node", "guarded-1", "dedicated=db:NoSchedule"]);
    // The node lifecycle controller marks cordoning with upstream's taint.
    skiff_e2e::eventually(
        "the cordoned node tainted unschedulable",
        Duration::from_secs(20),
        || {
            let taints = server.ok(&["get", "node", "guarded-0", "-o", "jsonpath={.spec.taints}"]);
            taints
                .contains(r#""key":"node.kubernetes.io/unschedulable""#)
                .then_some(())
        },
    );
    apply(&server, &ns, &deployment("plain", "guarded", 4, json!({})));
    let plain = placements(&server, &ns, "plain", 4);
    assert!(plain.values().all(|n| n == "guarded-2"), "{plain:?}");
    let tolerant = json!({
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["guarded-2"]}
            ]}]
        }}}
    });
    apply(&server, &ns, &pod("db", "guarded", "100m", tolerant));
    assert_eq!(node_of(&server, &ns, "db"), "guarded-1");
    let avoid_the_free_node = json!({
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["guarded-2"]}
            ]}]
        }}}
    });
    apply(
        &server,
        &ns,
        &pod("intolerant", "guarded", "100m", avoid_the_free_node),
    );
    let message = unschedulable(&server, &ns, "intolerant");
    assert!(
        message.contains("1 node(s) were unschedulable"),
        "{message}"
    );
    assert!(
        message.contains("1 node(s) had untolerated taint(s)"),
        "{message}"
    );

    // Required anti-affinity spreads a Deployment one pod per node; a fourth waits.
    let _spread = fleet(&server, "spread", 3, &[]);
    let one_per_node = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "solo"}},
        "topologyKey": "kubernetes.io/hostname"
    }]}}});
    apply(&server, &ns, &deployment("solo", "spread", 3, one_per_node));
    let solo = placements(&server, &ns, "solo", 3);
    assert_eq!(solo.values().collect::<BTreeSet<_>>().len(), 3, "{solo:?}");
    server.ok(&["scale", "deployment", "solo", "-n", &ns, "--replicas=4"]);
    let pending = eventually("a fourth solo pod", WITHIN, || {
        let pods = server.json(&["pods", "-n", &ns, "-l", "app=solo"]);
        pods["items"]
            .as_array()?
            .iter()
            .find(|p| p["spec"]["nodeName"].is_null())
            .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
    });
    let message = unschedulable(&server, &ns, &pending);
    assert!(
        message.contains("3 node(s) didn't match pod anti-affinity rules"),
        "{message}"
    );

    // Topology spread evens a Deployment out over three zones.
    let _zones = fleet(&server, "zoned", 6, &["--zones=3"]);
    let even = json!({"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "even"}}
    }]});
    apply(&server, &ns, &deployment("even", "zoned", 6, even));
    let even = placements(&server, &ns, "even", 6);
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for node in even.values() {
        let node = server.json(&["node", node]);
        let zone = node["metadata"]["labels"]["topology.kubernetes.io/zone"].clone();
        *per_zone
            .entry(zone.as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_zone:?}"
    );

    // LeastAllocated (the default) spreads pods placed one at a time; a MostAllocated
    // profile (a second scheduler) packs them onto one node.
    let _pack = fleet(&server, "pack", 3, &["--cpu=8"]);
    let config = server.data_dir.path().join("bin-packer.yaml");
    std::fs::write(
        &config,
        "kind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: bin-packer\n  plugins:\n    score:\n      disabled: [{name: NodeResourcesBalancedAllocation}]\n      enabled: [{name: NodeResourcesFit, weight: 10}]\n  pluginConfig:\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {type: MostAllocated}}\n",
    )
    .expect("writing the scheduler configuration");
    let _packer = server.start_component(&[
        "scheduler",
        "--leader-elect=false",
        &format!("--config={}", config.display()),
    ]);
    let placed = |prefix: &str, extra: Value| -> BTreeSet<String> {
        (0..3)
            .map(|i| {
                let name = format!("{prefix}-{i}");
                apply(&server, &ns, &pod(&name, "pack", "1", extra.clone()));
                node_of(&server, &ns, &name)
            })
            .collect()
    };
    assert_eq!(placed("spread", json!({})).len(), 3);
    assert_eq!(
        placed("packed", json!({"schedulerName": "bin-packer"})).len(),
        1
    );

    // A high-priority pod preempts a low-priority one on a full node.
    let _full = fleet(&server, "full", 1, &["--cpu=2"]);
    for (name, value) in [("low", 10), ("high", 1000)] {
        server.ok(&["create", "priorityclass", name, &format!("--value={value}")]);
    }
    apply(
        &server,
        &ns,
        &pod(
            "victim",
            "full",
            "1500m",
            json!({"priorityClassName": "low"}),
        ),
    );
    assert_eq!(node_of(&server, &ns, "victim"), "full-0");
    apply(
        &server,
        &ns,
        &pod("vip", "full", "1500m", json!({"priorityClassName": "high"})),
    );
    assert_eq!(node_of(&server, &ns, "vip"), "full-0");
    eventually("the victim gone", WITHIN, || {
        let out = server.kubectl(&["get", "pod", "-n", &ns, "victim"]);
        (!out.status.success()).then_some(())
    });
    let events = events_about(&server, &ns, "involvedObject.name=victim");
    assert!(events.contains("Preempted"), "{events}");
}

// Upstream's `sig-scheduling` conformance tests, on hollow nodes. Each starts its own
// control plane: they count and fill every node of the cluster, as upstream's do.

/// Upstream's e2e framework's extended resource, advertised on nodes by a status patch.
const EXTENDED: &str = "scheduling.k8s.io/foo";

/// Advertises `amount` of `resource` on `node`, as `e2enode.AddExtendedResource` does.
fn add_extended_resource(server: &Server, node: &str, resource: &str, amount: &str) {
    let escaped = resource.replace('/', "~1");
    let patch = json!([
        {"op": "add", "path": format!("/status/capacity/{escaped}"), "value": amount},
        {"op": "add", "path": format!("/status/allocatable/{escaped}"), "value": amount},
    ]);
    server.ok(&[
        "patch",
        "node",
        node,
        "--subresource=status",
        "--type=json",
        "-p",
        &patch.to_string(),
    ]);
}

/// Creates the priority classes `(name, value)`.
fn priority_classes(server: &Server, classes: &[(&str, i32)]) {
    for (name, value) in classes {
        server.ok(&["create", "priorityclass", name, &format!("--value={value}")]);
    }
}

/// Whether the pod is gone or being deleted (upstream's "preempted").
fn preempted(server: &Server, ns: &str, pod: &str) -> bool {
    let out = server.kubectl(&["get", "pod", "-n", ns, pod, "-o", "json"]);
    if !out.status.success() {
        return String::from_utf8_lossy(&out.stderr).contains("NotFound");
    }
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// A pod asking for `requests` (also its limits), pinned by node affinity on
/// `metadata.name`, as upstream's preemption tests pin theirs.
fn pinned_pod(name: &str, node: &str, priority: &str, requests: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "priorityClassName": priority,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node]}
                ]}]
            }}},
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": requests.clone(), "limits": requests}}]
        }
    })
}

/// The phase of a pod, once it has one of `phases`.
fn wait_phase(server: &Server, ns: &str, pod: &str, phases: &[&str]) -> String {
    eventually(&format!("{pod} in {phases:?}"), WITHIN, || {
        let pod = server.json(&["pod", "-n", ns, pod]);
        let phase = pod["status"]["phase"].as_str()?;
        phases.contains(&phase).then(|| phase.to_string())
    })
}

/// "Scheduler, resource limits": one pod per node takes 70% of its CPU; one more asking
/// for half a node's CPU then fits nowhere and is reported so.
#[test]
fn scheduler_resource_limits() {
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("limits");
    let _nodes = fleet(&server, "worker", 2, &["--cpu=4"]);
    for node in ["worker-0", "worker-1"] {
        server.ok(&["label", "node", node, &format!("node={node}")]);
        let filler = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("filler-pod-{node}")},
            "spec": {
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "node", "operator": "In", "values": [node]}
                    ]}]
                }}},
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                "resources": {"requests": {"cpu": "2800m"}, "limits": {"cpu": "2800m"}}}]
            }
        });
        apply(&server, &ns, &filler);
    }
    for node in ["worker-0", "worker-1"] {
        assert_eq!(node_of(&server, &ns, &format!("filler-pod-{node}")), node);
    }
    let additional = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "additional-pod"},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                 "resources": {"requests": {"cpu": "2000m"}, "limits": {"cpu": "2000m"}}}]}
    });
    apply(&server, &ns, &additional);
    let message = unschedulable(&server, &ns, "additional-pod");
    assert!(
        message.starts_with("0/2 nodes are available: 2 Insufficient cpu."),
        "{message}"
    );
    let events = events_about(
        &server,
        &ns,
        "involvedObject.name=additional-pod,reason=FailedScheduling",
    );
    assert!(events.contains("Insufficient cpu"), "{events}");
}

/// "Scheduler, node selector matching" and "not matching".
#[test]
fn scheduler_node_selectors() {
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("selector");
    let _nodes = fleet(&server, "worker", 2, &[]);
    let restricted = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "restricted-pod"},
        "spec": {"nodeSelector": {"label": "nonempty"},
                 "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}
    });
    apply(&server, &ns, &restricted);
    let message = unschedulable(&server, &ns, "restricted-pod");
    assert!(
        message.starts_with(
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        ),
        "{message}"
    );
    let label = format!("kubernetes.io/e2e-{}", skiff_e2e::free_port());
    server.ok(&["label", "node", "worker-1", &format!("{label}=42")]);
    let chosen = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "with-labels"},
        "spec": {"nodeSelector": {label.as_str(): "42"},
                 "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}
    });
    apply(&server, &ns, &chosen);
    assert_eq!(
        wait_phase(&server, &ns, "with-labels", &["Running"]),
        "Running"
    );
    assert_eq!(node_of(&server, &ns, "with-labels"), "worker-1");
}

/// Upstream's preemption set-up: a control plane with two hollow nodes, the priority
/// classes, and two pods on each node using 4 of its 5 units of an extended resource,
/// the very first with low priority, the rest medium. Returns the server, the
/// namespace, the fleet and the pods' names, once all run.
fn preemption_cluster(classes: &[(&str, i32)]) -> (Server, String, Supervised, Vec<String>) {
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("preemption");
    let fleet = fleet(&server, "worker", 2, &[]);
    priority_classes(&server, classes);
    let pods = fill_with_victims(&server, &ns, &["worker-0", "worker-1"]);
    (server, ns, fleet, pods)
}

fn fill_with_victims(server: &Server, ns: &str, nodes: &[&str]) -> Vec<String> {
    let mut pods = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        add_extended_resource(server, node, EXTENDED, "5");
        for j in 0..2 {
            let priority = if pods.is_empty() {
                "low-priority"
            } else {
                "medium-priority"
            };
            let name = format!("pod{i}-{j}-{priority}");
            apply(
                server,
                ns,
                &pinned_pod(&name, node, priority, json!({EXTENDED: "2"})),
            );
            pods.push(name);
        }
    }
    for pod in &pods {
        wait_phase(server, ns, pod, &["Running"]);
    }
    pods
}

/// "Basic preemption" and "DisruptionTarget condition on preempted pod": a high-priority
/// pod with the low-priority pod's needs evicts exactly that pod, which is marked with a
/// `DisruptionTarget` condition (seen while a finalizer holds it) before it goes.
#[test]
fn scheduler_basic_preemption() {
    let (server, ns, _fleet, pods) = preemption_cluster(&[
        ("low-priority", 1),
        ("medium-priority", 100),
        ("high-priority", 1000),
    ]);
    server.ok(&[
        "patch",
        "pod",
        "-n",
        &ns,
        &pods[0],
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/test-finalizer"]}}"#,
    ]);
    let preemptor = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "preemptor-pod"},
        "spec": {"priorityClassName": "high-priority",
                 "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                 "resources": {"requests": {EXTENDED: "2"}, "limits": {EXTENDED: "2"}}}]}
    });
    apply(&server, &ns, &preemptor);
    let condition = eventually("the victim's DisruptionTarget condition", WITHIN, || {
        let victim = server.json(&["pod", "-n", &ns, &pods[0]]);
        victim["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .cloned()
    });
    assert_eq!(condition["status"], "True", "{condition}");
    assert_eq!(condition["reason"], "PreemptionByScheduler", "{condition}");
    assert!(preempted(&server, &ns, &pods[0]));
    server.ok(&[
        "patch",
        "pod",
        "-n",
        &ns,
        &pods[0],
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert_eq!(
        wait_phase(&server, &ns, "preemptor-pod", &["Running"]),
        "Running"
    );
    assert_eq!(node_of(&server, &ns, "preemptor-pod"), "worker-0");
    for pod in &pods[1..] {
        assert!(!preempted(&server, &ns, pod), "{pod} was preempted too");
    }
}

/// "Preemption by critical pod": a `system-cluster-critical` pod in `kube-system`
/// evicts the low-priority pod.
#[test]
fn scheduler_preemption_by_critical_pod() {
    let (server, ns, _fleet, pods) =
        preemption_cluster(&[("low-priority", 1), ("medium-priority", 100)]);
    let critical = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "critical-pod"},
        "spec": {"priorityClassName": "system-cluster-critical",
                 "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                 "resources": {"requests": {EXTENDED: "2"}, "limits": {EXTENDED: "2"}}}]}
    });
    apply(&server, "kube-system", &critical);
    assert_eq!(
        wait_phase(&server, "kube-system", "critical-pod", &["Running"]),
        "Running"
    );
    assert!(
        preempted(&server, &ns, &pods[0]),
        "the low-priority pod stays"
    );
    for pod in &pods[1..] {
        assert!(!preempted(&server, &ns, pod), "{pod} was preempted too");
    }
}

/// "Preemption execution path (ReplicaSets)": three ReplicaSets of rising priority take
/// 950 of a node's 1000 units; a fourth-priority pod asking for 500 evicts the two
/// lowest, whose ReplicaSets recreate them once each, and nothing more happens.
#[test]
fn scheduler_preemption_execution_path() {
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("path");
    let _node = fleet(&server, "worker", 1, &[]);
    let fake_cpu = "example.com/fakecpu";
    add_extended_resource(&server, "worker-0", fake_cpu, "1000");
    priority_classes(&server, &[("p1", 1), ("p2", 2), ("p3", 3), ("p4", 4)]);
    let pod_spec = |priority: &str, amount: &str| {
        json!({
            "priorityClassName": priority,
            "nodeSelector": {"kubernetes.io/hostname": "worker-0"},
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {fake_cpu: amount}, "limits": {fake_cpu: amount}}}]
        })
    };
    for (n, amount) in [(1, "200"), (2, "300"), (3, "450")] {
        let name = format!("pod{n}");
        let replica_set = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("rs-{name}")},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"name": name}},
                "template": {"metadata": {"labels": {"name": name}},
                             "spec": pod_spec(&format!("p{n}"), amount)}
            }
        });
        apply(&server, &ns, &replica_set);
        eventually(&format!("rs-{name} available"), WITHIN, || {
            let rs = server.json(&["replicaset", "-n", &ns, &format!("rs-{name}")]);
            (rs["status"]["availableReplicas"] == 1).then_some(())
        });
    }
    let preemptor = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pod4", "labels": {"name": "pod4"}},
        "spec": pod_spec("p4", "500")
    });
    apply(&server, &ns, &preemptor);
    assert_eq!(node_of(&server, &ns, "pod4"), "worker-0");
    // Pods each ReplicaSet created, from its `SuccessfulCreate` events.
    let created = || -> Vec<u64> {
        (1..=3)
            .map(|n| {
                let events = server.json(&[
                    "events",
                    "-n",
                    &ns,
                    "--field-selector",
                    &format!("involvedObject.name=rs-pod{n},reason=SuccessfulCreate"),
                ]);
                events["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e["count"].as_u64().unwrap_or(1))
                    .sum()
            })
            .collect()
    };
    eventually("rs-pod1 and rs-pod2 recreated once each", WITHIN, || {
        (created() == [2, 2, 1]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(created(), [2, 2, 1], "pods over-preempted");
    assert_eq!(wait_phase(&server, &ns, "pod4", &["Running"]), "Running");
}
