//! The EndpointSlice controller (upstream's `pkg/controller/endpointslice`): for every
//! Service with a selector, slices of at most `--max-endpoints-per-slice` endpoints that
//! list its pods, one group of slices per address family and per set of resolved ports.
//!
//! A sync changes as little as it can, as upstream's reconciler does: endpoints that did
//! not change stay in their slice, changed ones are rewritten in place, new ones fill the
//! slices that have room before new slices are made, and a slice left empty goes. A
//! Service with no endpoints keeps one empty "placeholder" slice, so that readers can
//! tell "no endpoints" from "not yet synced".
//!
//! The same controller, fed by `v1` Endpoints instead of pods, is upstream's EndpointSlice
//! mirroring controller: Services without a selector whose Endpoints someone writes by
//! hand get slices too (under their own `managed-by`), so that the proxy and DNS, which
//! read only slices, see them.
//!
//! Writes the informer has not shown yet are remembered ([`Written`]): until the cache
//! has caught up with them, the Service is not synced again, so slices are never made
//! twice from a stale cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use super::legacy::SKIP_MIRROR_LABEL;
use super::{
    endpoint_labels, pod_endpoint, pod_ports, pods_of, selector, ResolvedPort, ServicePods,
    SERVICE_NAME_LABEL,
};
use crate::controller::{split_key, Reconcile};
use crate::error::{ignore_not_found, Result};
use crate::informer::InformerFactory;
use crate::owner;
use crate::queue::WorkQueue;

/// Which controller manages a slice; others' slices are left alone.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const MIRRORING_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// The node label whose value an endpoint carries as its `zone` (read when the Service
/// syncs: a node's zone changing later shows at the Service's next sync).
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Upstream's default `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// How long to wait before looking again at a Service whose writes the cache lacks.
const CACHE_CATCH_UP: Duration = Duration::from_millis(200);
/// After this long, a write never seen is forgotten (its watch event was lost for good).
const WRITTEN_TTL: Duration = Duration::from_secs(30);

pub struct EndpointSliceController {
    client: Client,
    services: Store<Service>,
    source: Source,
    slices: Store<EndpointSlice>,
    queue: Arc<WorkQueue>,
    written: Written,
    max_per_slice: usize,
    managed_by: &'static str,
}

/// Where a Service's endpoints come from.
enum Source {
    /// The pods its selector picks (the EndpointSlice controller).
    /// With the nodes, whose zone each endpoint carries.
    Pods(Store<Pod>, Store<Node>),
    /// Its hand-written Endpoints (the mirroring controller).
    Endpoints(Store<Endpoints>),
}

impl EndpointSliceController {
    /// Upstream's EndpointSlice controller: slices from the pods Services select.
    pub fn new(factory: &InformerFactory, max_per_slice: usize) -> Arc<EndpointSliceController> {
        let queue = factory.queue("endpoint_slice");
        let view = ServicePods::watch(factory, &queue);
        let source = Source::Pods(view.pods, factory.informer::<Node>().store());
        Self::with_source(
            factory,
            queue,
            view.services,
            source,
            max_per_slice,
            CONTROLLER_NAME,
        )
    }

    /// Upstream's EndpointSlice mirroring controller: slices from the Endpoints of
    /// Services without a selector.
    pub fn mirroring(
        factory: &InformerFactory,
        max_per_slice: usize,
    ) -> Arc<EndpointSliceController> {
        let queue = factory.queue("endpoint_slice_mirroring");
        let services = factory.informer::<Service>();
        services.enqueue_into(queue.clone());
        let endpoints = factory.informer::<Endpoints>();
        endpoints.enqueue_into(queue.clone());
        let source = Source::Endpoints(endpoints.store());
        Self::with_source(
            factory,
            queue,
            services.store(),
            source,
            max_per_slice,
            MIRRORING_CONTROLLER_NAME,
        )
    }

    fn with_source(
        factory: &InformerFactory,
        queue: Arc<WorkQueue>,
        services: Store<Service>,
        source: Source,
        max_per_slice: usize,
        managed_by: &'static str,
    ) -> Arc<EndpointSliceController> {
        let slice_informer = factory.informer::<EndpointSlice>();
        let slice_queue = queue.clone();
        slice_informer.add_handler(move |old, new| {
            // Someone changing or deleting a slice of ours: put it back as it should be.
            for slice in [old, new].into_iter().flatten() {
                if let (true, Some(service), Some(ns)) = (
                    managed_by_label(slice) == Some(managed_by),
                    slice.labels().get(SERVICE_NAME_LABEL),
                    slice.metadata.namespace.as_deref(),
                ) {
                    slice_queue.add(format!("{ns}/{service}"));
                }
            }
        });
        let account = if managed_by == MIRRORING_CONTROLLER_NAME {
            "endpointslicemirroring-controller"
        } else {
            "endpointslice-controller"
        };
        Arc::new(EndpointSliceController {
            client: factory.client_for(account),
            services,
            source,
            slices: slice_informer.store(),
            queue,
            written: Written::default(),
            max_per_slice: max_per_slice.max(1),
            managed_by,
        })
    }

    /// The endpoints `service` should have, by group; `None` when this controller has
    /// no slices to keep for it.
    fn desired(&self, service: &Service) -> Option<BTreeMap<GroupKey, Vec<Endpoint>>> {
        match &self.source {
            Source::Pods(pods, nodes) => {
                selector(service)?;
                Some(desired_endpoints(service, pods, nodes))
            }
            Source::Endpoints(endpoints) => {
                let spec = service.spec.as_ref()?;
                if spec.selector.as_ref().is_some_and(|s| !s.is_empty())
                    || spec.type_.as_deref() == Some("ExternalName")
                {
                    return None;
                }
                let ns = service.metadata.namespace.as_deref().unwrap_or_default();
                let endpoints = endpoints.get(&ObjectRef::new(&service.name_any()).within(ns))?;
                if endpoints
                    .labels()
                    .get(SKIP_MIRROR_LABEL)
                    .map(String::as_str)
                    == Some("true")
                {
                    return None;
                }
                Some(mirrored_endpoints(&endpoints))
            }
        }
    }

    fn slices_of(&self, ns: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .state()
            .into_iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && managed_by_label(s) == Some(self.managed_by)
                    && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
            })
            .collect()
    }

    async fn apply(&self, key: &str, ns: &str, plan: Plan) -> Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        for slice in plan.delete {
            let name = slice.name_any();
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await)?;
            self.written.record(key, &name, None);
        }
        for slice in plan.update {
            let written = api
                .replace(&slice.name_any(), &PostParams::default(), &slice)
                .await?;
            self.written
                .record(key, &written.name_any(), revision(&written));
        }
        for slice in plan.create {
            let written = api.create(&PostParams::default(), &slice).await?;
            self.written
                .record(key, &written.name_any(), revision(&written));
        }
        Ok(())
    }
}

fn managed_by_label(slice: &EndpointSlice) -> Option<&str> {
    slice.labels().get(MANAGED_BY_LABEL).map(String::as_str)
}

fn revision(slice: &EndpointSlice) -> Option<u64> {
    slice.metadata.resource_version.as_deref()?.parse().ok()
}

impl Reconcile for EndpointSliceController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        if !self.written.caught_up(key, ns, &self.slices) {
            return Ok(Some(CACHE_CATCH_UP));
        }
        let existing = self.slices_of(ns, name);
        let service = self.services.get(&ObjectRef::new(name).within(ns));
        let desired = service.as_ref().and_then(|s| Some((s, self.desired(s)?)));
        let Some((service, desired)) = desired else {
            // Gone (the garbage collector follows the owner references too), turned into
            // an ExternalName Service, its selector removed (or, when mirroring, added),
            // or its Endpoints gone: its slices go.
            let plan = Plan {
                delete: existing,
                ..Plan::default()
            };
            self.apply(key, ns, plan).await?;
            return Ok(None);
        };
        let plan = plan(
            service,
            existing,
            desired,
            self.max_per_slice,
            self.managed_by,
        );
        self.apply(key, ns, plan).await?;
        Ok(None)
    }
}

/// Slices are grouped by address type and resolved ports: every endpoint of a slice
/// shares them.
type GroupKey = (String, Vec<ResolvedPort>);

/// The endpoints the Service should have, by group, each group sorted by address.
fn desired_endpoints(
    service: &Service,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
) -> BTreeMap<GroupKey, Vec<Endpoint>> {
    let families = address_types(service);
    let mut groups: BTreeMap<GroupKey, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods_of(pods, service) {
        let Some(endpoint) = pod_endpoint(service, &pod, true) else {
            continue;
        };
        let mut ports = pod_ports(service, &pod);
        ports.sort();
        for family in &families {
            let Some(ip) = endpoint.ips.iter().find(|ip| family_of(ip) == *family) else {
                continue;
            };
            groups
                .entry((family.to_string(), ports.clone()))
                .or_default()
                .push(Endpoint {
                    addresses: vec![ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(endpoint.ready),
                        serving: Some(endpoint.serving),
                        terminating: Some(endpoint.terminating),
                    }),
                    hostname: endpoint.hostname.clone(),
                    zone: endpoint
                        .node_name
                        .as_deref()
                        .and_then(|n| nodes.get(&ObjectRef::new(n)))
                        .and_then(|n| n.labels().get(ZONE_LABEL).cloned()),
                    node_name: endpoint.node_name.clone(),
                    target_ref: Some(endpoint.target_ref.clone()),
                    ..Default::default()
                });
        }
    }
    for endpoints in groups.values_mut() {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    }
    groups
}

/// The address types of the Service's IP families (IPv4 when none is set yet).
/// The endpoints of hand-written Endpoints, by group: one group per subset's ports.
fn mirrored_endpoints(endpoints: &Endpoints) -> BTreeMap<GroupKey, Vec<Endpoint>> {
    let mut groups: BTreeMap<GroupKey, Vec<Endpoint>> = BTreeMap::new();
    for subset in endpoints.subsets.iter().flatten() {
        let mut ports: Vec<ResolvedPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| ResolvedPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        ports.sort();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        for (address, ready) in ready.chain(not_ready) {
            groups
                .entry((family_of(&address.ip).to_string(), ports.clone()))
                .or_default()
                .push(Endpoint {
                    addresses: vec![address.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        serving: Some(ready),
                        terminating: Some(false),
                    }),
                    hostname: address.hostname.clone(),
                    node_name: address.node_name.clone(),
                    target_ref: address.target_ref.clone(),
                    ..Default::default()
                });
        }
    }
    for endpoints in groups.values_mut() {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        endpoints.dedup_by(|a, b| a.addresses == b.addresses);
    }
    groups
}

fn address_types(service: &Service) -> Vec<&'static str> {
    let families = service.spec.as_ref().and_then(|s| s.ip_families.as_ref());
    let types: Vec<&'static str> = families
        .into_iter()
        .flatten()
        .map(|f| if f == "IPv6" { "IPv6" } else { "IPv4" })
        .collect();
    if types.is_empty() {
        vec!["IPv4"]
    } else {
        types
    }
}

fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn slice_ports(ports: &[ResolvedPort]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|p| EndpointPort {
            // Upstream writes unnamed ports with an empty name.
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

fn endpoints_of(slice: &EndpointSlice) -> &[Endpoint] {
    slice.endpoints.as_deref().unwrap_or_default()
}

fn group_of(slice: &EndpointSlice) -> GroupKey {
    let mut ports: Vec<ResolvedPort> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| ResolvedPort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: p.port.unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    ports.sort();
    (slice.address_type.clone(), ports)
}

/// The writes that bring a Service's slices to what they should be.
#[derive(Default, Debug)]
struct Plan {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<Arc<EndpointSlice>>,
}

/// A slice being planned: its endpoints, and whether it differs from what is stored.
struct Planned {
    slice: EndpointSlice,
    endpoints: Vec<Endpoint>,
    changed: bool,
}

fn plan(
    service: &Service,
    existing: Vec<Arc<EndpointSlice>>,
    desired: BTreeMap<GroupKey, Vec<Endpoint>>,
    max_per_slice: usize,
    managed_by: &str,
) -> Plan {
    let uid = service.metadata.uid.as_deref();
    let (owned, foreign): (Vec<_>, Vec<_>) = existing.into_iter().partition(|s| {
        owner::controller_of(&s.metadata).is_some_and(|r| Some(r.uid.as_str()) == uid)
    });
    // Slices of an older Service of the same name go.
    let mut result = Plan {
        delete: foreign,
        ..Plan::default()
    };
    let labels = endpoint_labels(
        service,
        &[
            (SERVICE_NAME_LABEL, &service.name_any()),
            (MANAGED_BY_LABEL, managed_by),
        ],
    );
    let mut by_group: BTreeMap<GroupKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in owned {
        by_group.entry(group_of(&slice)).or_default().push(slice);
    }
    let mut keys: Vec<GroupKey> = by_group.keys().cloned().collect();
    keys.extend(desired.keys().cloned());
    keys.sort();
    keys.dedup();
    let mut kept: Vec<Planned> = Vec::new();
    let mut deleted: Vec<Arc<EndpointSlice>> = Vec::new();
    for key in keys {
        let slices = by_group.remove(&key).unwrap_or_default();
        let wanted = desired.get(&key).cloned().unwrap_or_default();
        let (planned, gone) = plan_group(service, &key, slices, wanted, max_per_slice);
        kept.extend(planned);
        deleted.extend(gone);
    }
    if kept.is_empty() {
        kept.push(placeholder(service, &mut deleted));
    }
    for mut planned in kept {
        if planned.slice.metadata.labels.as_ref() != Some(&labels) {
            planned.slice.metadata.labels = Some(labels.clone());
            planned.changed = true;
        }
        planned.slice.endpoints = Some(planned.endpoints);
        match (planned.slice.metadata.name.is_some(), planned.changed) {
            (false, _) => result.create.push(planned.slice),
            (true, true) => result.update.push(planned.slice),
            (true, false) => {}
        }
    }
    result.delete.extend(deleted);
    result
}

/// One group's slices: endpoints kept where they are, changed ones rewritten in place,
/// new ones into slices with room, then into new slices. Returns the slices that stay
/// (stored or new) and the ones left empty.
fn plan_group(
    service: &Service,
    key: &GroupKey,
    slices: Vec<Arc<EndpointSlice>>,
    wanted: Vec<Endpoint>,
    max_per_slice: usize,
) -> (Vec<Planned>, Vec<Arc<EndpointSlice>>) {
    let mut wanted: BTreeMap<Vec<String>, Endpoint> = wanted
        .into_iter()
        .map(|e| (e.addresses.clone(), e))
        .collect();
    let mut planned: Vec<Planned> = Vec::new();
    for stored in &slices {
        let before = endpoints_of(stored);
        let endpoints: Vec<Endpoint> = before
            .iter()
            .filter_map(|e| wanted.remove(&e.addresses))
            .collect();
        let changed = endpoints != before;
        planned.push(Planned {
            slice: EndpointSlice::clone(stored),
            endpoints,
            changed,
        });
    }
    // Fill slices being written anyway first, so fewer writes carry the new endpoints.
    planned.sort_by_key(|p| !p.changed);
    let mut leftover = wanted.into_values();
    for p in planned.iter_mut() {
        while p.endpoints.len() < max_per_slice {
            let Some(endpoint) = leftover.next() else {
                break;
            };
            p.endpoints.push(endpoint);
            p.changed = true;
        }
    }
    let leftover: Vec<Endpoint> = leftover.collect();
    for chunk in leftover.chunks(max_per_slice) {
        planned.push(Planned {
            slice: new_slice(service, &key.0, &key.1),
            endpoints: chunk.to_vec(),
            changed: true,
        });
    }
    let (kept, empty): (Vec<Planned>, Vec<Planned>) =
        planned.into_iter().partition(|p| !p.endpoints.is_empty());
    let gone = empty
        .into_iter()
        .filter_map(|p| {
            let name = p.slice.metadata.name.as_deref()?;
            slices
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
                .cloned()
        })
        .collect();
    (kept, gone)
}

/// The empty slice a Service with no endpoints keeps: one of the slices about to be
/// deleted if one already is a placeholder, else a new one.
fn placeholder(service: &Service, deleted: &mut Vec<Arc<EndpointSlice>>) -> Planned {
    let address_type = address_types(service)[0];
    let reusable = deleted.iter().position(|s| {
        endpoints_of(s).is_empty()
            && s.ports.iter().flatten().next().is_none()
            && s.address_type == address_type
    });
    match reusable {
        Some(i) => Planned {
            slice: EndpointSlice::clone(&deleted.remove(i)),
            endpoints: Vec::new(),
            changed: false,
        },
        None => Planned {
            slice: new_slice(service, address_type, &[]),
            endpoints: Vec::new(),
            changed: true,
        },
    }
}

fn new_slice(service: &Service, address_type: &str, ports: &[ResolvedPort]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", service.name_any())),
            namespace: service.metadata.namespace.clone(),
            owner_references: Some(vec![owner::controller_ref(service)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Some(Vec::new()),
        ports: Some(slice_ports(ports)),
    }
}

/// Writes made and not yet seen in the cache, by Service: slice name → the revision
/// written, or `None` for a deletion.
#[derive(Default)]
struct Written {
    inner: Mutex<HashMap<String, (Instant, SliceRevisions)>>,
}

/// Slice name → the revision written, or `None` for a deletion.
type SliceRevisions = HashMap<String, Option<u64>>;

impl Written {
    fn record(&self, service: &str, slice: &str, revision: Option<u64>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner
            .entry(service.to_string())
            .or_insert_with(|| (Instant::now(), HashMap::new()));
        entry.0 = Instant::now();
        entry.1.insert(slice.to_string(), revision);
    }

    /// Whether the cache shows every write made for `service`; forgets those it shows.
    fn caught_up(&self, service: &str, ns: &str, cache: &Store<EndpointSlice>) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some((since, writes)) = inner.get_mut(service) else {
            return true;
        };
        writes.retain(|name, written| {
            let cached = cache.get(&ObjectRef::new(name).within(ns));
            let seen = match (written, cached) {
                (None, cached) => cached.is_none(),
                (Some(_), None) => false,
                (Some(rv), Some(cached)) => revision(&cached).is_some_and(|c| c >= *rv),
            };
            !seen
        });
        if writes.is_empty() || since.elapsed() > WRITTEN_TTL {
            inner.remove(service);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{pod, service};
    use super::*;
    use serde_json::json;

    fn endpoint(ip: &str, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            ..Default::default()
        }
    }

    fn web() -> Service {
        service(
            json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        )
    }

    fn group() -> GroupKey {
        (
            "IPv4".into(),
            vec![ResolvedPort {
                name: Some("http".into()),
                port: 8080,
                protocol: "TCP".into(),
                app_protocol: None,
            }],
        )
    }

    /// Stores the planned creations under names, as the API server would.
    fn stored(plan: &Plan, start: usize) -> Vec<Arc<EndpointSlice>> {
        plan.create
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut s = s.clone();
                s.metadata.name = Some(format!("web-{}", start + i));
                Arc::new(s)
            })
            .collect()
    }

    #[test]
    fn splits_at_the_limit_and_changes_only_what_changed() {
        let svc = web();
        let wanted: Vec<Endpoint> = (1..=5)
            .map(|i| endpoint(&format!("10.0.0.{i}"), true))
            .collect();
        let first = plan(
            &svc,
            vec![],
            BTreeMap::from([(group(), wanted.clone())]),
            2,
            CONTROLLER_NAME,
        );
        assert_eq!(first.create.len(), 3, "5 endpoints at 2 per slice");
        assert!(first.update.is_empty() && first.delete.is_empty());
        let slice = &first.create[0];
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(
            slice.labels().get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            slice.labels().get(MANAGED_BY_LABEL).map(String::as_str),
            Some(CONTROLLER_NAME)
        );
        let ports = slice.ports.clone().unwrap_or_default();
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        let owner = owner::controller_of(&slice.metadata).expect("owner");
        assert_eq!(owner.uid, "svc-uid");

        // Nothing changed: nothing written.
        let existing = stored(&first, 0);
        let again = plan(
            &svc,
            existing.clone(),
            BTreeMap::from([(group(), wanted.clone())]),
            2,
            CONTROLLER_NAME,
        );
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());

        // One endpoint turns unready: only its slice is rewritten.
        let mut changed = wanted.clone();
        changed[2] = endpoint("10.0.0.3", false);
        let one = plan(
            &svc,
            existing.clone(),
            BTreeMap::from([(group(), changed)]),
            2,
            CONTROLLER_NAME,
        );
        assert_eq!(one.update.len(), 1);
        assert!(one.create.is_empty() && one.delete.is_empty());
        assert!(endpoints_of(&one.update[0]).contains(&endpoint("10.0.0.3", false)));

        // Two endpoints go and one comes: the newcomer fills a slice being rewritten.
        let mut moved: Vec<Endpoint> = wanted[2..].to_vec();
        moved.push(endpoint("10.0.0.9", true));
        let shuffled = plan(
            &svc,
            existing,
            BTreeMap::from([(group(), moved)]),
            2,
            CONTROLLER_NAME,
        );
        assert!(shuffled.create.is_empty(), "{shuffled:?}");
        assert_eq!(shuffled.delete.len(), 0);
        assert_eq!(
            shuffled.update.len(),
            1,
            "the emptied slice takes the newcomer"
        );
        assert_eq!(
            endpoints_of(&shuffled.update[0]),
            [endpoint("10.0.0.9", true)]
        );
    }

    #[test]
    fn no_endpoints_leaves_one_placeholder() {
        let svc = web();
        let first = plan(
            &svc,
            vec![],
            BTreeMap::from([(group(), vec![endpoint("10.0.0.1", true)])]),
            100,
            CONTROLLER_NAME,
        );
        let existing = stored(&first, 0);
        let empty = plan(&svc, existing, BTreeMap::new(), 100, CONTROLLER_NAME);
        assert_eq!(empty.delete.len(), 1);
        assert_eq!(empty.create.len(), 1);
        let placeholder = &empty.create[0];
        assert_eq!(placeholder.endpoints, Some(vec![]));
        assert_eq!(placeholder.ports, Some(vec![]));
        // The placeholder, once stored, stays as it is.
        let kept = plan(
            &svc,
            stored(&empty, 1),
            BTreeMap::new(),
            100,
            CONTROLLER_NAME,
        );
        assert!(
            kept.create.is_empty() && kept.update.is_empty() && kept.delete.is_empty(),
            "{kept:?}"
        );
        // Endpoints again: the placeholder goes.
        let back = plan(
            &svc,
            stored(&empty, 1),
            BTreeMap::from([(group(), vec![endpoint("10.0.0.1", true)])]),
            100,
            CONTROLLER_NAME,
        );
        assert_eq!((back.create.len(), back.delete.len()), (1, 1));
    }

    #[test]
    fn slices_of_an_older_service_and_label_changes() {
        let svc = web();
        let first = plan(
            &svc,
            vec![],
            BTreeMap::from([(group(), vec![endpoint("10.0.0.1", true)])]),
            100,
            CONTROLLER_NAME,
        );
        let existing = stored(&first, 0);
        let mut newer = web();
        newer.metadata.uid = Some("other-uid".into());
        let replaced = plan(
            &newer,
            existing.clone(),
            BTreeMap::from([(group(), vec![endpoint("10.0.0.1", true)])]),
            100,
            CONTROLLER_NAME,
        );
        assert_eq!((replaced.create.len(), replaced.delete.len()), (1, 1));

        let mut relabelled = web();
        relabelled.metadata.labels =
            Some(BTreeMap::from([("tier".to_string(), "front".to_string())]));
        let labels = plan(
            &relabelled,
            existing,
            BTreeMap::from([(group(), vec![endpoint("10.0.0.1", true)])]),
            100,
            CONTROLLER_NAME,
        );
        assert_eq!(labels.update.len(), 1);
        assert_eq!(
            labels.update[0].labels().get("tier").map(String::as_str),
            Some("front")
        );
        assert!(!labels.update[0].labels().contains_key("app"));
    }

    #[test]
    fn pods_group_by_resolved_ports() {
        let svc = web();
        let mut other = pod("b", "10.0.0.2", true, json!({}));
        if let Some(spec) = other.spec.as_mut() {
            spec.containers[0].ports = Some(vec![serde_json::from_value(
                json!({"name": "http", "containerPort": 9000}),
            )
            .expect("port")]);
        }
        let a = pod("a", "10.0.0.1", true, json!({}));
        let mut groups: BTreeMap<GroupKey, Vec<Endpoint>> = BTreeMap::new();
        for p in [&a, &other] {
            let e = pod_endpoint(&svc, p, true).expect("endpoint");
            let mut ports = pod_ports(&svc, p);
            ports.sort();
            groups
                .entry(("IPv4".into(), ports))
                .or_default()
                .push(endpoint(&e.ips[0], e.ready));
        }
        let planned = plan(&svc, vec![], groups, 100, CONTROLLER_NAME);
        let mut numbers: Vec<i32> = planned
            .create
            .iter()
            .map(|s| {
                s.ports.clone().unwrap_or_default()[0]
                    .port
                    .unwrap_or_default()
            })
            .collect();
        numbers.sort();
        assert_eq!(numbers, [8080, 9000]);
    }
}
