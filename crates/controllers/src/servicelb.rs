//! The service load-balancer controller: gives every `type: LoadBalancer` Service an
//! address from a configured pool (`--service-lb-pool`), as k3s's ServiceLB and MetalLB's
//! address allocation do where no cloud provider answers for LoadBalancer Services.
//!
//! The address goes to `status.loadBalancer.ingress` (`ipMode: VIP`) through the
//! `services/status` subresource, where the service proxy, `kubectl get svc` and clients
//! look for it. A Service naming a `spec.loadBalancerClass` belongs to another
//! implementation and is left alone. The address asked for in `spec.loadBalancerIP` is
//! given when it is in the pool and free; otherwise the lowest free one.
//!
//! The allocator's state is in memory, one [`Allocator`] behind a mutex for every worker,
//! so no address goes to two Services. It is rebuilt from the Services' own status before
//! the first allocation, so addresses survive controller restarts and leader changes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use serde_json::json;

use crate::controller::{key_of, split_key, Reconcile};
use crate::error::{ignore_not_found, Result};
use crate::events::Events;
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

/// How often a Service that could not get an address is looked at again, besides when an
/// address is freed (which queues it at once).
const RETRY_PENDING: Duration = Duration::from_secs(60);

/// The addresses the controller may give out: IPv4 ranges, inclusive, sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    ranges: Vec<(u32, u32)>,
}

impl Pool {
    /// Parses `--service-lb-pool`: comma-separated IPv4 CIDRs (`192.168.1.240/28`, every
    /// address in it, as MetalLB counts them) or `first-last` ranges; empty is no pool.
    pub fn parse(text: &str) -> Result<Pool, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            ranges.push(parse_range(part)?);
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                // Overlapping or adjacent ranges become one, so "lowest free" walks once.
                Some(previous) if u64::from(first) <= u64::from(previous.1) + 1 => {
                    previous.1 = previous.1.max(last);
                }
                _ => merged.push((first, last)),
            }
        }
        Ok(Pool { ranges: merged })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.ranges.iter().any(|(f, l)| (*f..=*l).contains(&ip))
    }

    /// How many addresses the pool holds.
    pub fn size(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(f, l)| u64::from(*l) - u64::from(*f) + 1)
            .sum()
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(a, b)| format!("{}-{}", Ipv4Addr::from(*a), Ipv4Addr::from(*b)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Pool {
    type Err = String;
    fn from_str(text: &str) -> Result<Pool, String> {
        Pool::parse(text)
    }
}

fn parse_range(part: &str) -> Result<(u32, u32), String> {
    let ip = |text: &str| {
        Ipv4Addr::from_str(text.trim())
            .map(u32::from)
            .map_err(|_| format!("invalid IPv4 address {text:?} in pool entry {part:?}"))
    };
    if let Some((addr, prefix)) = part.split_once('/') {
        let prefix: u32 = prefix
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("invalid prefix length in CIDR {part:?}"))?;
        let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
        let first = ip(addr)? & mask;
        return Ok((first, first | !mask));
    }
    if let Some((first, last)) = part.split_once('-') {
        let (first, last) = (ip(first)?, ip(last)?);
        if first > last {
            return Err(format!("range {part:?} ends before it starts"));
        }
        return Ok((first, last));
    }
    Err(format!(
        "invalid pool entry {part:?}: use a CIDR (10.0.0.0/24) or a range (10.0.0.10-10.0.0.20)"
    ))
}

/// Why no address could be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationError {
    /// `spec.loadBalancerIP` is not an address of the pool.
    NotInPool(String),
    /// `spec.loadBalancerIP` is another Service's.
    Taken(Ipv4Addr, String),
    /// Every address of the pool is in use.
    Exhausted(u64),
}

impl fmt::Display for AllocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocationError::NotInPool(ip) => write!(
                f,
                "requested loadBalancerIP {ip} is not in the service load-balancer pool"
            ),
            AllocationError::Taken(ip, owner) => write!(
                f,
                "requested loadBalancerIP {ip} is already allocated to service {owner}"
            ),
            AllocationError::Exhausted(size) => write!(
                f,
                "no address left in the service load-balancer pool (all {size} in use)"
            ),
        }
    }
}

/// Which Service (by key) holds which address of the pool.
#[derive(Debug, Default)]
pub struct Allocator {
    pool: Pool,
    owners: BTreeMap<u32, String>,
    by_service: HashMap<String, Ipv4Addr>,
}

impl Allocator {
    pub fn new(pool: Pool) -> Allocator {
        Allocator {
            pool,
            ..Default::default()
        }
    }

    /// The address `key` holds.
    pub fn assigned(&self, key: &str) -> Option<Ipv4Addr> {
        self.by_service.get(key).copied()
    }

    /// Records that `key` holds `ip` (rebuilding from status), if the address is the
    /// pool's and nobody else's; whether it now does.
    pub fn claim(&mut self, key: &str, ip: Ipv4Addr) -> bool {
        if !self.pool.contains(ip) {
            return false;
        }
        match self.owners.get(&u32::from(ip)) {
            Some(owner) => owner == key,
            None => {
                self.release(key);
                self.owners.insert(u32::from(ip), key.to_string());
                self.by_service.insert(key.to_string(), ip);
                true
            }
        }
    }

    /// An address for `key`: the one it holds when it asked for nothing else, else the one
    /// it asked for (`requested`, which must be the pool's and free), else `hint` (the
    /// address its status shows) when free, else the lowest free one. On failure `key`
    /// keeps what it held.
    pub fn allocate(
        &mut self,
        key: &str,
        requested: Option<&str>,
        hint: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, AllocationError> {
        let held = self.assigned(key);
        if let Some(requested) = requested {
            let ip = Ipv4Addr::from_str(requested)
                .ok()
                .filter(|ip| self.pool.contains(*ip))
                .ok_or_else(|| AllocationError::NotInPool(requested.to_string()))?;
            if held == Some(ip) {
                return Ok(ip);
            }
            if let Some(owner) = self.owners.get(&u32::from(ip)) {
                return Err(AllocationError::Taken(ip, owner.clone()));
            }
            self.claim(key, ip);
            return Ok(ip);
        }
        if let Some(ip) = held {
            return Ok(ip);
        }
        if let Some(ip) = hint.filter(|ip| self.claim(key, *ip)) {
            return Ok(ip);
        }
        let ip = self
            .lowest_free()
            .ok_or(AllocationError::Exhausted(self.pool.size()))?;
        self.claim(key, ip);
        Ok(ip)
    }

    /// Frees what `key` holds; the address it held.
    pub fn release(&mut self, key: &str) -> Option<Ipv4Addr> {
        let ip = self.by_service.remove(key)?;
        self.owners.remove(&u32::from(ip));
        Some(ip)
    }

    /// Walks the used addresses of each range (in order) to the first gap, so a big pool
    /// costs as much as its used addresses, not its size.
    fn lowest_free(&self) -> Option<Ipv4Addr> {
        for &(first, last) in &self.pool.ranges {
            let mut candidate = u64::from(first);
            for used in self
                .owners
                .range(first..=last)
                .map(|(ip, _)| u64::from(*ip))
            {
                if used != candidate {
                    break;
                }
                candidate += 1;
            }
            if candidate <= u64::from(last) {
                return u32::try_from(candidate).ok().map(Ipv4Addr::from);
            }
        }
        None
    }
}

/// The allocator and whether it was rebuilt from the Services' status yet.
struct State {
    allocator: Allocator,
    initialised: bool,
}

pub struct ServiceLbController {
    client: Client,
    services: Store<Service>,
    state: Mutex<State>,
    events: Events,
    queue: Arc<WorkQueue>,
}

/// Whether this controller gives the Service an address: a LoadBalancer naming no class.
pub fn wants_address(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer")
            && s.load_balancer_class.as_deref().is_none_or(str::is_empty)
    })
}

/// The IPv4 addresses in the Service's `status.loadBalancer.ingress`.
fn ingress_ips(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| Ipv4Addr::from_str(ip).ok()))
        .collect()
}

/// Whether the status already says exactly `[{ip, ipMode: VIP}]`.
fn status_shows(service: &Service, ip: Ipv4Addr) -> bool {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    let ip = ip.to_string();
    matches!(ingress, [only] if only.ip.as_deref() == Some(ip.as_str())
        && only.hostname.is_none()
        && only.ports.is_none()
        && only.ip_mode.as_deref().unwrap_or("VIP") == "VIP")
}

fn has_ingress(service: &Service) -> bool {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

impl ServiceLbController {
    pub fn new(factory: &InformerFactory, pool: Pool) -> Arc<ServiceLbController> {
        let queue = factory.queue("service-lb");
        let informer = factory.informer::<Service>();
        informer.enqueue_into(queue.clone());
        tracing::info!(%pool, addresses = pool.size(), "service load-balancer pool");
        Arc::new(ServiceLbController {
            client: factory.client_for("service-controller"),
            services: informer.store(),
            state: Mutex::new(State {
                allocator: Allocator::new(pool),
                initialised: false,
            }),
            events: Events::new(
                factory.client_for("service-controller"),
                "service-lb-controller",
            ),
            queue,
        })
    }

    /// Runs `act` on the allocator, first rebuilding it from the addresses Services
    /// already show (the cache is full: workers start after the informers synced).
    fn with_allocator<T>(&self, act: impl FnOnce(&mut Allocator) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.initialised {
            let mut services = self.services.state();
            // Oldest first, so that of two Services showing one address the first keeps it.
            services.sort_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            });
            for service in services.iter().filter(|s| wants_address(s)) {
                if let Some(ip) = ingress_ips(service).first() {
                    state.allocator.claim(&key_of(service.as_ref()), *ip);
                }
            }
            state.initialised = true;
        }
        act(&mut state.allocator)
    }

    /// Frees `key`'s address and queues the Services waiting for one.
    fn release(&self, key: &str) -> Option<Ipv4Addr> {
        let freed = self.with_allocator(|a| a.release(key))?;
        tracing::info!(service = key, ip = %freed, "load-balancer address freed");
        self.queue_waiting();
        Some(freed)
    }

    /// Queues the Services waiting for an address: one was just freed.
    fn queue_waiting(&self) {
        for service in self.services.state() {
            let waiting = key_of(service.as_ref());
            if wants_address(&service) && self.with_allocator(|a| a.assigned(&waiting)).is_none() {
                self.queue.add(waiting);
            }
        }
    }

    async fn write_ingress(&self, ns: &str, name: &str, ingress: serde_json::Value) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        ignore_not_found(
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
    }
}

impl Reconcile for ServiceLbController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(service) = self.services.get(&ObjectRef::new(name).within(ns)) else {
            self.release(key);
            return Ok(None);
        };
        if !wants_address(&service) {
            let freed = self.release(key);
            // Clear what this controller wrote: the address it held, or any address of a
            // Service no longer a LoadBalancer (one that changed while the controller was
            // down). A class's Service otherwise keeps what its own implementation wrote.
            let is_lb =
                service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            let ours = freed.is_some_and(|ip| ingress_ips(&service).contains(&ip));
            if has_ingress(&service) && (ours || !is_lb) {
                self.write_ingress(ns, name, serde_json::Value::Null)
                    .await?;
            }
            return Ok(None);
        }
        let requested = service
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.as_deref())
            .filter(|ip| !ip.is_empty());
        let hint = ingress_ips(&service).first().copied();
        let (held, allocated) =
            self.with_allocator(|a| (a.assigned(key), a.allocate(key, requested, hint)));
        let ip = match allocated {
            Ok(ip) => ip,
            Err(why) => {
                self.events
                    .warning(service.as_ref(), "AllocationFailed", why.to_string())
                    .await;
                // Freed addresses queue waiting Services at once; this is the fallback.
                return Ok(Some(RETRY_PENDING));
            }
        };
        if held.is_some_and(|held| held != ip) {
            // Moved to the address it asked for: the old one is free for the waiting.
            self.queue_waiting();
        }
        if !status_shows(&service, ip) {
            tracing::info!(service = key, %ip, "load-balancer address assigned");
            self.write_ingress(ns, name, json!([{"ip": ip.to_string(), "ipMode": "VIP"}]))
                .await?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("test address")
    }

    #[test]
    fn parses_cidrs_and_ranges() {
        let pool = Pool::parse("10.0.0.0/30, 10.0.1.5-10.0.1.6").expect("pool");
        assert_eq!(pool.size(), 6);
        assert!(pool.contains(ip("10.0.0.0")) && pool.contains(ip("10.0.0.3")));
        assert!(!pool.contains(ip("10.0.0.4")));
        assert!(pool.contains(ip("10.0.1.6")) && !pool.contains(ip("10.0.1.7")));
        assert_eq!(pool.to_string(), "10.0.0.0-10.0.0.3,10.0.1.5-10.0.1.6");
        // A host address in a CIDR is masked to its network; /32 is one address.
        assert_eq!(
            Pool::parse("10.0.0.9/29").expect("pool").to_string(),
            "10.0.0.8-10.0.0.15"
        );
        assert_eq!(Pool::parse("1.2.3.4/32").expect("pool").size(), 1);
        assert_eq!(Pool::parse("0.0.0.0/0").expect("pool").size(), 1 << 32);
    }

    #[test]
    fn the_flag() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: crate::ControllerManagerArgs,
        }
        let parse = |argv: &[&str]| Cli::try_parse_from([&["cm"], argv].concat());
        let none = parse(&[]).expect("no flag");
        assert!(none.args.service_lb_pool.is_empty());
        let some = parse(&["--service-lb-pool", "10.0.0.0/31,10.0.0.5-10.0.0.5"]).expect("flag");
        assert_eq!(some.args.service_lb_pool.size(), 3);
        assert!(parse(&["--service-lb-pool", "10.0.0.0/40"]).is_err());
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let pool = Pool::parse("10.0.0.4-10.0.0.9,10.0.0.0/30,10.0.0.8/31").expect("pool");
        assert_eq!(pool.to_string(), "10.0.0.0-10.0.0.9");
        assert_eq!(pool.size(), 10);
    }

    #[test]
    fn empty_pool_and_bad_entries() {
        assert!(Pool::parse("").expect("empty").is_empty());
        assert!(Pool::parse(" , ").expect("empty").is_empty());
        for bad in [
            "10.0.0.0/33",
            "10.0.0/24",
            "10.0.0.9-10.0.0.1",
            "fd00::/64",
            "10.0.0.1",
            "x-y",
        ] {
            assert!(Pool::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn gives_lowest_free_and_keeps_what_is_held() {
        let mut a = Allocator::new(Pool::parse("10.0.0.1-10.0.0.2,10.0.0.10/32").expect("pool"));
        assert_eq!(a.allocate("ns/a", None, None), Ok(ip("10.0.0.1")));
        assert_eq!(a.allocate("ns/b", None, None), Ok(ip("10.0.0.2")));
        // Asked again, a Service keeps its address.
        assert_eq!(a.allocate("ns/a", None, None), Ok(ip("10.0.0.1")));
        // The next range once the first is used up.
        assert_eq!(a.allocate("ns/c", None, None), Ok(ip("10.0.0.10")));
        assert_eq!(
            a.allocate("ns/d", None, None),
            Err(AllocationError::Exhausted(3))
        );
        assert_eq!(a.release("ns/b"), Some(ip("10.0.0.2")));
        assert_eq!(a.allocate("ns/d", None, None), Ok(ip("10.0.0.2")));
        assert_eq!(a.release("ns/gone"), None);
    }

    #[test]
    fn requested_addresses() {
        let mut a = Allocator::new(Pool::parse("10.0.0.0/29").expect("pool"));
        assert_eq!(
            a.allocate("ns/a", Some("10.0.0.5"), None),
            Ok(ip("10.0.0.5"))
        );
        assert_eq!(
            a.allocate("ns/b", Some("10.0.0.5"), None),
            Err(AllocationError::Taken(ip("10.0.0.5"), "ns/a".into()))
        );
        assert_eq!(
            a.allocate("ns/b", Some("192.168.0.1"), None),
            Err(AllocationError::NotInPool("192.168.0.1".into()))
        );
        assert!(a.allocate("ns/b", Some("nonsense"), None).is_err());
        assert_eq!(a.assigned("ns/b"), None);
        // Moving to another requested address frees the old one.
        assert_eq!(
            a.allocate("ns/a", Some("10.0.0.6"), None),
            Ok(ip("10.0.0.6"))
        );
        assert_eq!(
            a.allocate("ns/b", Some("10.0.0.5"), None),
            Ok(ip("10.0.0.5"))
        );
        // A failed move keeps the address held.
        assert!(a.allocate("ns/a", Some("10.0.0.5"), None).is_err());
        assert_eq!(a.assigned("ns/a"), Some(ip("10.0.0.6")));
        // Lowest free skips the requested ones.
        assert_eq!(a.allocate("ns/c", None, None), Ok(ip("10.0.0.0")));
    }

    #[test]
    fn rebuilds_from_status_without_double_allocation() {
        let mut a = Allocator::new(Pool::parse("10.0.0.0/30").expect("pool"));
        assert!(a.claim("ns/a", ip("10.0.0.2")));
        assert!(a.claim("ns/a", ip("10.0.0.2")));
        // Another Service showing the same address, or one outside the pool, gets nothing.
        assert!(!a.claim("ns/b", ip("10.0.0.2")));
        assert!(!a.claim("ns/b", ip("10.9.9.9")));
        assert_eq!(
            a.allocate("ns/b", None, Some(ip("10.0.0.2"))),
            Ok(ip("10.0.0.0"))
        );
        // A free status address is kept rather than a lower one.
        assert_eq!(
            a.allocate("ns/c", None, Some(ip("10.0.0.3"))),
            Ok(ip("10.0.0.3"))
        );
        assert_eq!(a.allocate("ns/d", None, None), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn which_services_get_an_address() {
        let service = |spec: serde_json::Value| -> Service {
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec}))
                .expect("service")
        };
        assert!(wants_address(&service(json!({"type": "LoadBalancer"}))));
        assert!(!wants_address(&service(json!({"type": "ClusterIP"}))));
        assert!(!wants_address(&service(json!({}))));
        assert!(!wants_address(&service(
            json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"})
        )));
    }
}
