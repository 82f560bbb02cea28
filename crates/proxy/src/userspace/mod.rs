//! The userspace mode (`--proxy-mode userspace`), the proxy the first Kubernetes had,
//! kept for comparison with the kernel modes: the proxy itself carries every connection.
//!
//! ```text
//!  client ─► cluster IP:port ──(table ip skiff-userspace: redirect to :L)──► proxy, port L
//!        (or node port, external IP)                                          │ round robin,
//!                                                                             │ ClientIP affinity
//!                                                                             ▼
//!                                                               connect/send to an endpoint
//! ```
//!
//! Every Service port has a *portal*, a local listener on a port the kernel picks: one
//! for its cluster IP, and one more for its node port and external IPs when it has those
//! (they may use other endpoints, under `externalTrafficPolicy: Local`). TCP portals
//! ([`tcp`]) splice each accepted connection to an endpoint; UDP portals ([`udp`]) keep a
//! session per client address. [`roundrobin`] chooses the endpoint. [`rules`] renders the
//! table that redirects the Service's addresses to the portals' ports. A sync
//! ([`Userspace::sync`]) opens and closes portals as Services come and go, hands the
//! portals their new endpoints (live: the next connection uses them) and rewrites the
//! table when it changed. Same model and flags as the kernel modes; SCTP is not served.

pub mod roundrobin;
pub mod rules;
mod tcp;
mod udp;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::apply::Apply;
use crate::metrics::{ConnectionLabels, Metrics};
use crate::model::{Endpoint, Model, Protocol, RenderConfig, ServicePort, ServicePortName};
use crate::proxier::{SyncKind, FULL_SYNC_PERIOD};
use crate::Error;

pub use roundrobin::RoundRobin;

/// Upstream's default `--udp-timeout`: how long a UDP session lives without traffic.
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_millis(250);

/// One portal: a Service port's cluster IP, or its external addresses (node port,
/// external and load-balancer IPs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortalKey {
    pub name: ServicePortName,
    pub external: bool,
}

impl PortalKey {
    pub fn cluster(name: &ServicePortName) -> PortalKey {
        PortalKey {
            name: name.clone(),
            external: false,
        }
    }

    pub fn external(name: &ServicePortName) -> PortalKey {
        PortalKey {
            name: name.clone(),
            external: true,
        }
    }
}

impl std::fmt::Display for PortalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = if self.external { "external" } else { "cluster" };
        write!(f, "{} ({scope})", self.name)
    }
}

/// The portals each service port of `model` has, with the endpoints each uses.
fn portals(model: &Model) -> impl Iterator<Item = (PortalKey, &ServicePort, &[Endpoint])> {
    model
        .services
        .values()
        .filter(|sp| sp.name.protocol != Protocol::Sctp)
        .flat_map(|sp| {
            let cluster = (
                PortalKey::cluster(&sp.name),
                sp,
                sp.cluster_endpoints.as_slice(),
            );
            let external = sp.has_external().then(|| {
                (
                    PortalKey::external(&sp.name),
                    sp,
                    sp.external_endpoints.as_slice(),
                )
            });
            std::iter::once(cluster).chain(external)
        })
}

fn affinity(sp: &ServicePort) -> Option<Duration> {
    sp.affinity_timeout.map(|s| Duration::from_secs(s.into()))
}

/// What a portal's tasks share with the proxier.
pub(crate) struct Shared {
    label: String,
    balancer: Mutex<RoundRobin>,
    udp_timeout: Duration,
    metrics: Option<Metrics>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoundRobin> {
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn choose(&self, client: IpAddr, reset: bool) -> Option<Endpoint> {
        self.lock().choose(client, reset, Instant::now())
    }

    fn serves(&self, endpoint: &Endpoint) -> bool {
        self.lock().serves(endpoint)
    }

    fn count(&self, protocol: &str, result: &str) {
        if let Some(m) = &self.metrics {
            m.userspace_connections
                .get_or_create(&ConnectionLabels {
                    protocol: protocol.into(),
                    result: result.into(),
                })
                .inc();
        }
    }
}

struct Portal {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Portal {
    fn drop(&mut self) {
        // Closes the listener; connections already relayed go on to their end.
        self.task.abort();
    }
}

/// The userspace proxier: the portals and the table last written. `A` writes the table
/// (an [`crate::NftCommand`], in a network namespace for tests).
pub struct Userspace<A: Apply> {
    config: RenderConfig,
    udp_timeout: Duration,
    /// Where the portals listen: every address, as upstream's default `--bind-address`
    /// (the redirects rewrite the destination to the incoming interface's address).
    listen: Ipv4Addr,
    /// `None` only while a sync hands it to a blocking thread.
    applier: Option<A>,
    portals: BTreeMap<PortalKey, Portal>,
    applied: Option<String>,
    last_full: Option<Instant>,
    metrics: Option<Metrics>,
}

impl<A: Apply> Userspace<A> {
    pub fn new(config: RenderConfig, applier: A) -> Userspace<A> {
        Userspace {
            config,
            udp_timeout: DEFAULT_UDP_TIMEOUT,
            listen: Ipv4Addr::UNSPECIFIED,
            applier: Some(applier),
            portals: BTreeMap::new(),
            applied: None,
            last_full: None,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_udp_timeout(mut self, timeout: Duration) -> Self {
        self.udp_timeout = timeout;
        self
    }

    /// The local port each portal listens on.
    pub fn ports(&self) -> rules::Ports {
        self.portals
            .iter()
            .map(|(key, portal)| (key.clone(), portal.port))
            .collect()
    }

    /// The table last written, as its transaction.
    pub fn applied(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    /// Brings the portals and the table to what `model` describes. Must run inside a
    /// Tokio runtime (the portals' tasks are spawned on it), in the network namespace
    /// the portals should listen in. A portal whose listener cannot be opened gets no
    /// rules, and fails the sync (which is retried); the others are served.
    pub async fn sync(&mut self, model: &Model) -> Result<SyncKind, Error> {
        let start = Instant::now();
        let wanted: BTreeMap<PortalKey, (&ServicePort, &[Endpoint])> = portals(model)
            .map(|(key, sp, endpoints)| (key, (sp, endpoints)))
            .collect();
        self.portals.retain(|key, _| wanted.contains_key(key));
        let now = Instant::now();
        let mut failure = None;
        for (key, (sp, endpoints)) in &wanted {
            if let Some(portal) = self.portals.get(key) {
                let mut balancer = portal.shared.lock();
                balancer.update(endpoints, affinity(sp));
                balancer.forget_expired(now);
                continue;
            }
            let shared = Arc::new(Shared {
                label: key.to_string(),
                balancer: Mutex::new(RoundRobin::new(endpoints, affinity(sp))),
                udp_timeout: self.udp_timeout,
                metrics: self.metrics.clone(),
            });
            match open(key, self.listen, shared).await {
                Ok(portal) => {
                    tracing::debug!(portal = %key, port = portal.port, "portal opened");
                    self.portals.insert(key.clone(), portal);
                }
                Err(error) => {
                    tracing::warn!(%error, "portal not opened");
                    failure.get_or_insert(error);
                }
            }
        }

        if let Some(m) = &self.metrics {
            m.userspace_portals.set(self.portals.len() as i64);
        }
        let desired = rules::render(model, &self.ports(), &self.config);
        let rewrite = self
            .last_full
            .is_none_or(|t| t.elapsed() >= FULL_SYNC_PERIOD);
        let kind = match &self.applied {
            None => SyncKind::Full,
            Some(old) if *old != desired => SyncKind::Partial,
            Some(_) if rewrite => SyncKind::Full,
            Some(_) => SyncKind::Noop,
        };
        let result = match kind {
            SyncKind::Noop => Ok(()),
            _ => self.apply(desired.clone()).await,
        };
        if let Some(m) = &self.metrics {
            m.record_sync(kind.label(), result.is_ok(), start);
        }
        match result {
            Ok(()) => {
                if kind == SyncKind::Full {
                    self.last_full = Some(Instant::now());
                }
                if let Some(m) = &self.metrics {
                    m.rules.set(rules::rule_count(&desired) as i64);
                    m.services.set(model.services.len() as i64);
                }
                self.applied = Some(desired);
            }
            Err(error) => {
                self.applied = None;
                return Err(error);
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(kind),
        }
    }

    /// Runs the table's transaction off the async workers (nft blocks).
    async fn apply(&mut self, transaction: String) -> Result<(), Error> {
        let Some(mut applier) = self.applier.take() else {
            return Err(Error::SyncTask(
                "the userspace proxier lost its applier".into(),
            ));
        };
        let (applier, result) = tokio::task::spawn_blocking(move || {
            let result = applier.apply(&transaction);
            (applier, result)
        })
        .await
        .map_err(|e| Error::SyncTask(e.to_string()))?;
        self.applier = Some(applier);
        result
    }
}

/// Opens `key`'s listener on `listen` and starts serving it.
async fn open(key: &PortalKey, listen: Ipv4Addr, shared: Arc<Shared>) -> Result<Portal, Error> {
    let listen_error = |source| Error::Listen {
        portal: key.to_string(),
        source,
    };
    let (port, task) = match key.name.protocol {
        Protocol::Udp => {
            let socket = UdpSocket::bind((listen, 0)).await.map_err(listen_error)?;
            udp::prepare(&socket).map_err(listen_error)?;
            let port = socket.local_addr().map_err(listen_error)?.port();
            (port, tokio::spawn(udp::serve(socket, shared.clone())))
        }
        _ => {
            let listener = TcpListener::bind((listen, 0)).await.map_err(listen_error)?;
            let port = listener.local_addr().map_err(listen_error)?.port();
            (port, tokio::spawn(tcp::serve(listener, shared.clone())))
        }
    };
    Ok(Portal { port, shared, task })
}

/// Listener ports numbered from 40000 in the model's order, standing in for the ones
/// the kernel would give: for [`crate::full_sync`]'s pure rendering (benchmarks, docs).
pub fn placeholder_ports(model: &Model) -> rules::Ports {
    portals(model)
        .zip(40000u16..)
        .map(|((key, _, _), port)| (key, port))
        .collect()
}
