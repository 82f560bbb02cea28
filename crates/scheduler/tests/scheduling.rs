//! The scheduler against a real `skiff server`: nodes are plain API objects (no kubelet),
//! the scheduler runs in this process, and the tests read back `spec.nodeName`, the
//! `PodScheduled` condition and events, as a user would.
//!
//! Each test starts its own server: nodes are cluster-scoped, so tests sharing one would
//! see each other's nodes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};
use skiff_e2e::Server;
use skiff_scheduler::config::FileConfig;
use skiff_scheduler::metrics::Outcome;
use skiff_scheduler::{leader, Scheduler, SchedulerArgs};

use skiff_e2e::add_simulated_node as add_node;

async fn add_pod(client: &Client, ns: &str, name: &str, spec: Value) {
    add_labelled_pod(client, ns, name, json!({}), spec).await
}

async fn add_labelled_pod(client: &Client, ns: &str, name: &str, labels: Value, spec: Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    }
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
            .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

fn cpu_pod(cpu: &str) -> Value {
    json!({"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]})
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn node_of(client: &Client, ns: &str, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{name} to be bound"), || async {
        pods.get(name)
            .await
            .ok()
            .and_then(|p| p.spec.and_then(|s| s.node_name))
    })
    .await
}

async fn unschedulable_message(client: &Client, ns: &str, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{name}'s PodScheduled=False"), || async {
        let pod = pods.get(name).await.ok()?;
        let c = pod
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False" && c.reason.as_deref() == Some("Unschedulable")).then_some(c.message?)
    })
    .await
}

async fn events_for(client: &Client, ns: &str, pod: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
        .collect()
}

fn start_scheduler(client: &Client, config: Option<&str>) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    let profiles = match config {
        Some(text) => FileConfig::parse(text).expect("config"),
        None => FileConfig::default(),
    }
    .profiles("default-scheduler")
    .expect("profiles");
    tokio::spawn(async move {
        let scheduler = Scheduler::new(client, profiles);
        if let Err(e) = scheduler.run().await {
            panic!("scheduler stopped: {e:#}");
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_allocated_spreads_and_events_are_written() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("spread");
    for n in ["n1", "n2", "n3"] {
        add_node(&client, n, "4", json!({}), json!({})).await;
    }
    let _scheduler = start_scheduler(&client, None);
    for i in 0..6 {
        add_pod(&client, &ns, &format!("p{i}"), cpu_pod("1")).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(node_of(&client, &ns, &format!("p{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );

    let node = node_of(&client, &ns, "p0").await;
    let scheduled = eventually("the Scheduled event", || async {
        let events = events_for(&client, &ns, "p0", "Scheduled").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    let e = &scheduled[0];
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(e.reporting_controller.as_deref(), Some("default-scheduler"));
    assert_eq!(
        e.note.as_deref(),
        Some(format!("Successfully assigned {ns}/p0 to {node}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_with_upstreams_message_until_a_fitting_node_joins() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("pending");
    add_node(&client, "small-1", "2", json!({}), json!({})).await;
    add_node(&client, "small-2", "2", json!({}), json!({})).await;
    add_node(
        &client,
        "tainted",
        "16",
        json!({}),
        json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
    )
    .await;
    let _scheduler = start_scheduler(&client, None);
    add_pod(&client, &ns, "big", cpu_pod("8")).await;
    let message = unschedulable_message(&client, &ns, "big").await;
    assert_eq!(
        message,
        "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
         2 No preemption victims found for incoming pod."
    );
    let failed = eventually("the FailedScheduling event", || async {
        let events = events_for(&client, &ns, "big", "FailedScheduling").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(failed[0].type_.as_deref(), Some("Warning"));
    assert_eq!(failed[0].note.as_deref(), Some(message.as_str()));

    // A node that fits arrives: the queue moves the pod back and it is bound.
    add_node(&client, "big-node", "16", json!({}), json!({})).await;
    assert_eq!(node_of(&client, &ns, "big").await, "big-node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_affinity_taints_and_cordons() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("constraints");
    add_node(&client, "zone-a", "4", json!({"zone": "a"}), json!({})).await;
    add_node(
        &client,
        "zone-b",
        "4",
        json!({"zone": "b", "disk": "ssd"}),
        json!({}),
    )
    .await;
    add_node(
        &client,
        "gpu",
        "4",
        json!({"zone": "a", "gpu": "true"}),
        json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
    )
    .await;
    add_node(
        &client,
        "cordoned",
        "64",
        json!({"zone": "a"}),
        json!({"unschedulable": true}),
    )
    .await;
    let _scheduler = start_scheduler(&client, None);

    add_pod(
        &client,
        &ns,
        "selector",
        json!({"nodeSelector": {"zone": "b"}}),
    )
    .await;
    add_pod(
        &client,
        &ns,
        "required",
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}}}),
    )
    .await;
    add_pod(
        &client,
        &ns,
        "tolerant",
        json!({
            "nodeSelector": {"gpu": "true"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
        }),
    )
    .await;
    add_pod(
        &client,
        &ns,
        "preferred",
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}}),
    )
    .await;
    add_pod(
        &client,
        &ns,
        "intolerant",
        json!({"nodeSelector": {"gpu": "true"}}),
    )
    .await;

    assert_eq!(node_of(&client, &ns, "selector").await, "zone-b");
    assert_eq!(node_of(&client, &ns, "required").await, "zone-b");
    assert_eq!(node_of(&client, &ns, "tolerant").await, "gpu");
    assert_eq!(node_of(&client, &ns, "preferred").await, "zone-a");
    assert_eq!(
        unschedulable_message(&client, &ns, "intolerant").await,
        "0/4 nodes are available: 1 node(s) had untolerated taint(s), \
         1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_allocated_profile_packs_pods() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("pack");
    for n in ["n1", "n2", "n3"] {
        add_node(&client, n, "8", json!({}), json!({})).await;
    }
    let _scheduler = start_scheduler(
        &client,
        Some(
            r#"
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: bin-packer
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
      enabled: [{name: NodeResourcesFit, weight: 10}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
"#,
        ),
    );
    let mut nodes = Vec::new();
    for i in 0..4 {
        let mut spec = cpu_pod("1");
        spec["schedulerName"] = json!("bin-packer");
        add_pod(&client, &ns, &format!("p{i}"), spec).await;
        // One at a time, so the packing does not depend on ties between empty nodes.
        nodes.push(node_of(&client, &ns, &format!("p{i}")).await);
    }
    assert!(nodes.iter().all(|n| *n == nodes[0]), "{nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_schedules() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("leader");
    add_node(&client, "n1", "64", json!({}), json!({})).await;
    let args = SchedulerArgs::default();
    let mut schedulers = Vec::new();
    for id in ["one", "two"] {
        let profiles = FileConfig::default()
            .profiles("default-scheduler")
            .expect("profiles");
        let scheduler = Scheduler::new(client.clone(), profiles);
        let lease = leader::LeaseConfig::new(
            &args.leader_elect_resource_namespace,
            &args.leader_elect_resource_name,
            id.to_string(),
        );
        let running = scheduler.clone();
        let c = client.clone();
        tokio::spawn(async move { leader::run_as_leader(c, lease, running.run()).await });
        schedulers.push(scheduler);
    }
    for i in 0..5 {
        add_pod(&client, &ns, &format!("p{i}"), cpu_pod("100m")).await;
    }
    for i in 0..5 {
        node_of(&client, &ns, &format!("p{i}")).await;
        let scheduled = eventually("the Scheduled event", || async {
            let events = events_for(&client, &ns, &format!("p{i}"), "Scheduled").await;
            (!events.is_empty()).then_some(events)
        })
        .await;
        assert_eq!(scheduled.len(), 1);
    }
    let counts: Vec<u64> = schedulers
        .iter()
        .map(|s: &Arc<Scheduler>| s.metrics.attempts(Outcome::Scheduled, "default-scheduler"))
        .collect();
    assert!(counts == [5, 0] || counts == [0, 5], "{counts:?}");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    let lease = leases.get("kube-scheduler").await.expect("lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_eq!(holder, if counts[0] == 5 { "one" } else { "two" });
}

/// Upstream's "Basic preemption" and "DisruptionTarget condition on preempted pod": a
/// higher-priority pod that fits nowhere evicts the lower-priority pod in its way, which
/// is marked before it is deleted, and takes its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pods_preempt_lower_ones() {
    use kube::api::DeleteParams;

    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("preempt");
    add_node(&client, "only", "1", json!({}), json!({})).await;
    add_priority_classes(&client, &[("low", 10), ("high", 1000)]).await;
    let _scheduler = start_scheduler(&client, None);
    let with_class = |class: &str, cpu: &str| {
        let mut spec = cpu_pod(cpu);
        spec["priorityClassName"] = json!(class);
        spec
    };
    add_pod(&client, &ns, "victim", with_class("low", "800m")).await;
    assert_eq!(node_of(&client, &ns, "victim").await, "only");

    add_pod(&client, &ns, "preemptor", with_class("high", "500m")).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // The victim is marked and deleted (gracefully: this test plays its kubelet).
    let victim = eventually("the victim being deleted", || async {
        let pod = pods.get("victim").await.ok()?;
        pod.metadata.deletion_timestamp.is_some().then_some(pod)
    })
    .await;
    let condition = victim
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "DisruptionTarget"))
        .expect("DisruptionTarget condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_deref()),
        ("True", Some("PreemptionByScheduler"))
    );
    let nominated = pods
        .get_status("preemptor")
        .await
        .ok()
        .and_then(|p| p.status?.nominated_node_name);
    pods.delete("victim", &DeleteParams::default().grace_period(0))
        .await
        .expect("finish the victim");
    assert_eq!(node_of(&client, &ns, "preemptor").await, "only");
    // Nominated before any victim was deleted.
    assert_eq!(nominated.as_deref(), Some("only"));
    let preempted = eventually("the Preempted event", || async {
        let events = events_for(&client, &ns, "victim", "Preempted").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert!(preempted[0]
        .note
        .as_deref()
        .is_some_and(|n| n.starts_with("Preempted by pod ") && n.ends_with(" on node only")));
}

/// Creates PriorityClasses (name, value).
async fn add_priority_classes(client: &Client, classes: &[(&str, i32)]) {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let api: Api<PriorityClass> = Api::all(client.clone());
    for (name, value) in classes {
        let class: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))
                .expect("class");
        api.create(&PostParams::default(), &class)
            .await
            .expect("priority class");
    }
}

/// Three nodes, one per zone, labelled as the kubelet labels them.
async fn three_zones(client: &Client) {
    for (node, zone) in [
        ("node-a", "zone-a"),
        ("node-b", "zone-b"),
        ("node-c", "zone-c"),
    ] {
        add_node(
            client,
            node,
            "4",
            json!({"kubernetes.io/hostname": node, "topology.kubernetes.io/zone": zone}),
            json!({}),
        )
        .await;
    }
}

/// Upstream's pod anti-affinity spreading: a Deployment whose pods refuse to share a
/// host puts one replica on each node; the replica left over stays Pending with
/// upstream's message (the whole control plane runs: Deployment and ReplicaSet
/// controllers, the scheduler inside `skiff server`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_anti_affinity_spreads_a_deployment_one_per_node() {
    let server = Server::start_control_plane(&[]);
    let client = server.client().await;
    let ns = server.namespace("anti");
    three_zones(&client).await;
    create_deployment(&client, &ns, json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox"}],
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}},
                         "topologyKey": "kubernetes.io/hostname"}]}}
                }
            }
        }
    })).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let (bound, pending) = eventually("three replicas bound and one pending", || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let (bound, pending): (Vec<Pod>, Vec<Pod>) = list
            .items
            .into_iter()
            .partition(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some());
        (bound.len() == 3 && pending.len() == 1).then_some((bound, pending))
    })
    .await;
    let mut nodes: Vec<String> = bound
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b", "node-c"]);
    let name = pending[0].metadata.name.clone().expect("name");
    assert_eq!(
        unschedulable_message(&client, &ns, &name).await,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
}

/// Upstream's "validates that InterPodAffinity is respected if matching" and the
/// first-pod exception: required affinity puts pods in the zone of the pod they follow;
/// one with nothing to follow is Pending with upstream's message until a pod it follows
/// appears, or an existing pod is relabelled to match, when it is re-queued and bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_affinity_colocates_and_waits_for_its_pods() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("affinity");
    three_zones(&client).await;
    let _scheduler = start_scheduler(&client, None);
    let follow = |app: &str, key: &str| {
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
    };
    add_labelled_pod(
        &client,
        &ns,
        "cache",
        json!({"app": "cache"}),
        json!({"nodeSelector": {"kubernetes.io/hostname": "node-b"}}),
    )
    .await;
    assert_eq!(node_of(&client, &ns, "cache").await, "node-b");
    for i in 0..3 {
        add_pod(
            &client,
            &ns,
            &format!("near-{i}"),
            follow("cache", "topology.kubernetes.io/zone"),
        )
        .await;
    }
    for i in 0..3 {
        assert_eq!(node_of(&client, &ns, &format!("near-{i}")).await, "node-b");
    }

    // Nothing matches "queue" yet: Pending, with the reason upstream gives.
    add_pod(
        &client,
        &ns,
        "waiting",
        follow("queue", "kubernetes.io/hostname"),
    )
    .await;
    assert_eq!(
        unschedulable_message(&client, &ns, "waiting").await,
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // A matching pod appears on node-c: the waiting pod follows it there.
    add_labelled_pod(
        &client,
        &ns,
        "queue",
        json!({"app": "queue"}),
        json!({"nodeSelector": {"kubernetes.io/hostname": "node-c"}}),
    )
    .await;
    assert_eq!(node_of(&client, &ns, "waiting").await, "node-c");

    // Relabelling a bound pod also re-queues a pod that follows that label.
    add_pod(
        &client,
        &ns,
        "relabel-wait",
        follow("late", "kubernetes.io/hostname"),
    )
    .await;
    unschedulable_message(&client, &ns, "relabel-wait").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.patch(
        "near-0",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"app": "late"}}})),
    )
    .await
    .expect("relabel");
    assert_eq!(node_of(&client, &ns, "relabel-wait").await, "node-b");

    // A group's first pod, whose term selects itself, may start anywhere; the rest join it.
    add_labelled_pod(
        &client,
        &ns,
        "group-0",
        json!({"app": "group"}),
        follow("group", "topology.kubernetes.io/zone"),
    )
    .await;
    let first = node_of(&client, &ns, "group-0").await;
    add_labelled_pod(
        &client,
        &ns,
        "group-1",
        json!({"app": "group"}),
        follow("group", "topology.kubernetes.io/zone"),
    )
    .await;
    assert_eq!(node_of(&client, &ns, "group-1").await, first);
}

/// Preemption honours PodDisruptionBudgets as upstream: of two nodes where evicting one
/// pod makes room, the one whose victim no budget protects is chosen, even though the
/// protected victim has the lower priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_prefers_the_node_where_no_budget_breaks() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("pdb");
    add_named_nodes(&client, &["a", "b"], "1").await;
    add_priority_classes(&client, &[("low", 10), ("mid", 20), ("high", 1000)]).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "guard"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}
    }))
    .expect("pdb");
    pdbs.create(&PostParams::default(), &pdb)
        .await
        .expect("create pdb");
    // No disruption controller runs here: state the budget as it would.
    pdbs.patch_status(
        "guard",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"status": {"disruptionsAllowed": 0, "currentHealthy": 1,
            "desiredHealthy": 1, "expectedPods": 1, "observedGeneration": 1}}),
        ),
    )
    .await
    .expect("pdb status");
    let _scheduler = start_scheduler(&client, None);
    let with_class = |class: &str, node: &str| {
        let mut spec = cpu_pod("800m");
        spec["priorityClassName"] = json!(class);
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        spec
    };
    add_labelled_pod(
        &client,
        &ns,
        "guarded",
        json!({"app": "guarded"}),
        with_class("low", "a"),
    )
    .await;
    add_labelled_pod(
        &client,
        &ns,
        "other",
        json!({"app": "other"}),
        with_class("mid", "b"),
    )
    .await;
    assert_eq!(node_of(&client, &ns, "guarded").await, "a");
    assert_eq!(node_of(&client, &ns, "other").await, "b");

    let mut spec = cpu_pod("500m");
    spec["priorityClassName"] = json!("high");
    add_pod(&client, &ns, "preemptor", spec).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually("the unprotected pod being deleted", || async {
        let pod = pods.get("other").await.ok()?;
        pod.metadata.deletion_timestamp.is_some().then_some(())
    })
    .await;
    let nominated = pods
        .get_status("preemptor")
        .await
        .ok()
        .and_then(|p| p.status?.nominated_node_name);
    assert_eq!(nominated.as_deref(), Some("b"));
    let guarded = pods.get("guarded").await.expect("guarded pod");
    assert!(guarded.metadata.deletion_timestamp.is_none());
    pods.delete("other", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .expect("finish the victim");
    assert_eq!(node_of(&client, &ns, "preemptor").await, "b");
}

/// A `namespaceSelector` in an affinity term reads namespace labels: a pod that follows
/// pods in namespaces labelled `team=data` waits while the one such pod's namespace lacks
/// the label, and is re-queued and bound when the namespace is labelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_selectors_follow_namespace_labels() {
    use k8s_openapi::api::core::v1::Namespace;
    let server = Server::start(&[]);
    let client = server.client().await;
    let ns = server.namespace("follower");
    let data = server.namespace("data");
    three_zones(&client).await;
    let _scheduler = start_scheduler(&client, None);
    add_labelled_pod(
        &client,
        &data,
        "db",
        json!({"app": "db"}),
        json!({"nodeSelector": {"kubernetes.io/hostname": "node-a"}}),
    )
    .await;
    assert_eq!(node_of(&client, &data, "db").await, "node-a");
    add_pod(
        &client,
        &ns,
        "app",
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}},
             "namespaceSelector": {"matchLabels": {"team": "data"}},
             "topologyKey": "kubernetes.io/hostname"}]}}}),
    )
    .await;
    unschedulable_message(&client, &ns, "app").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &data,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": "data"}}})),
        )
        .await
        .expect("label the namespace");
    assert_eq!(node_of(&client, &ns, "app").await, "node-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_spreading_evens_out_a_deployment_that_packing_would_stack() {
    let server = Server::start_control_plane(&[]);
    let client = server.client().await;
    let ns = server.namespace("spread");
    add_named_nodes(&client, &["n1", "n2", "n3"], "8").await;
    // Bin-packing alone would stack the replicas on one node (most_allocated_profile_packs_pods);
    // the system default constraint (at most 3 apart per node, among the pods the
    // Deployment's ReplicaSet selects) outweighs it.
    let _scheduler = start_scheduler(
        &client,
        Some(
            r#"
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: bin-packer
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
"#,
        ),
    );
    create_deployment(
        &client,
        &ns,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 6,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "schedulerName": "bin-packer",
                        "containers": [{"name": "c", "image": "busybox",
                                        "resources": {"requests": {"cpu": "100m"}}}]
                    }
                }
            }
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let per_node = eventually("six replicas bound", || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let nodes: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (nodes.len() == 6).then(|| {
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            for n in nodes {
                *per_node.entry(n).or_default() += 1;
            }
            per_node
        })
    })
    .await;
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );
}

async fn create_deployment(client: &Client, ns: &str, deployment: Value) {
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(deployment).expect("deployment");
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
}

/// Nodes labelled with their hostnames, as kubelets label them.
async fn add_named_nodes(client: &Client, names: &[&str], cpu: &str) {
    for node in names {
        add_node(
            client,
            node,
            cpu,
            json!({"kubernetes.io/hostname": node}),
            json!({}),
        )
        .await;
    }
}
