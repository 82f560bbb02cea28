//! Cluster DNS: the Kubernetes DNS-based service discovery specification
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>), served as
//! CoreDNS's `kubernetes` plugin serves it, so pods find Services by name.
//!
//! Three layers, each usable alone:
//!
//! 1. **The view** ([`view`]): Services and EndpointSlices, reduced to what DNS needs,
//!    kept current by two `kube` watchers ([`watch()`]). Nothing calls the API server per
//!    query; a query only takes a read lock on this view.
//! 2. **The lookup** ([`lookup()`]): a pure function from (view, zone, name, type) to an
//!    answer: records, NXDOMAIN or NODATA with the zone's SOA, or "not ours, forward".
//!    All the specification's names live here and are unit-tested over hand-built views.
//! 3. **The server** ([`Dns`]): a `hickory-server` request handler on UDP and TCP that
//!    sends the lookup's answer, or forwards the question to the node's resolvers
//!    ([`forward`]) and relays theirs; SERVFAIL if none answers.
//!
//! Records served under the zone (`cluster.local` unless `--cluster-domain` says
//! otherwise), every one with the `--ttl`:
//!
//! | name | records |
//! | --- | --- |
//! | `<svc>.<ns>.svc` | A/AAAA: cluster IPs; for headless Services the ready endpoints' addresses; CNAME for ExternalName |
//! | `<host>.<svc>.<ns>.svc` | A/AAAA of the headless endpoint whose hostname (or dashed address) is `<host>` |
//! | `_<port>._<proto>.<svc>.<ns>.svc` | SRV: the Service name and port, or per ready endpoint for headless Services (with A glue) |
//! | `<a-b-c-d>.<ns>.pod` | A/AAAA of the address spelled in the label (`pods insecure`) |
//! | `dns-version` | TXT `1.1.0` |
//! | `<reversed ip>.in-addr.arpa` / `ip6.arpa` | PTR to the Service (or headless endpoint) holding that address |
//!
//! Start with [`run`] (what `skiff` calls, configured by [`DnsArgs`]); tests and
//! benchmarks build a [`Dns`] on sockets of their own with [`Dns::serve`].

pub mod bench;
pub mod forward;
pub mod lookup;
pub mod metrics;
pub mod publish;
mod server;
pub mod view;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use forward::Forwarder;
pub use lookup::{lookup, Answer, Outcome, Zone};
pub use metrics::Metrics;
pub use server::Dns;
pub use view::{SharedView, View};
pub use watch::{watch, Synced};

/// How long `run` waits for the first list of Services and EndpointSlices before it
/// serves anyway (CoreDNS waits five seconds too).
const SYNC_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid DNS configuration: {0}")]
    Config(String),
    #[error("binding {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    ResolvConf {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("DNS server: {0}")]
    Serve(String),
}

/// The cluster DNS server's flags.
#[derive(clap::Args, Clone, Debug)]
pub struct DnsArgs {
    /// The cluster's DNS domain: Services are `<svc>.<ns>.svc.<domain>`
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Where the DNS server listens, on both UDP and TCP
    #[arg(long, default_value = "0.0.0.0:53")]
    pub dns_bind_address: SocketAddr,
    /// Seconds clients may cache cluster answers (and misses: the SOA minimum)
    #[arg(long, default_value_t = 5)]
    pub ttl: u32,
    /// Resolvers for names outside the cluster, as IP or IP:PORT (comma-separated); default:
    /// the nameservers of --dns-resolv-conf
    #[arg(long, value_delimiter = ',')]
    pub dns_upstream: Vec<String>,
    /// The resolv.conf whose nameservers answer names outside the cluster
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub dns_resolv_conf: PathBuf,
    /// Seconds to wait for an upstream resolver before trying the next one
    #[arg(long, default_value_t = 2)]
    pub dns_upstream_timeout: u64,
    /// Serve the DNS server's Prometheus metrics on GET /metrics at this address
    #[arg(long)]
    pub dns_metrics_address: Option<SocketAddr>,
}

impl Default for DnsArgs {
    fn default() -> Self {
        DnsArgs {
            cluster_domain: "cluster.local".into(),
            dns_bind_address: ([0, 0, 0, 0], 53).into(),
            ttl: 5,
            dns_upstream: Vec::new(),
            dns_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            dns_upstream_timeout: 2,
            dns_metrics_address: None,
        }
    }
}

impl DnsArgs {
    /// The upstream resolvers the flags name, or those of the resolv.conf.
    pub fn upstreams(&self) -> Result<Vec<SocketAddr>, Error> {
        if self.dns_upstream.is_empty() {
            return forward::resolv_conf_nameservers(&self.dns_resolv_conf).map_err(|source| {
                Error::ResolvConf {
                    path: self.dns_resolv_conf.clone(),
                    source,
                }
            });
        }
        self.dns_upstream
            .iter()
            .map(|upstream| {
                upstream
                    .parse::<SocketAddr>()
                    .or_else(|_| upstream.parse().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| Error::Config(format!("upstream {upstream:?} is not IP[:PORT]")))
            })
            .collect()
    }

    /// A server configured by these flags, over an empty view.
    pub fn build(&self) -> Result<Dns, Error> {
        let zone = Zone::new(&self.cluster_domain, self.ttl)?;
        let upstreams = self.upstreams()?;
        if upstreams.is_empty() {
            tracing::warn!("no upstream resolvers: names outside the cluster will fail");
        }
        let forwarder = Forwarder::new(upstreams, Duration::from_secs(self.dns_upstream_timeout));
        Ok(Dns::new(View::shared(), zone, forwarder))
    }
}

/// Binds UDP and TCP at `address`; with port 0, at one port free for both.
pub async fn bind(
    address: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), Error> {
    let fail = |address, source| Error::Bind { address, source };
    for _ in 0..10 {
        let udp = tokio::net::UdpSocket::bind(address)
            .await
            .map_err(|e| fail(address, e))?;
        let bound = udp.local_addr().map_err(|e| fail(address, e))?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The UDP port chosen for us may be taken for TCP: choose again.
            Err(e) if address.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(fail(bound, e)),
        }
    }
    Err(fail(
        address,
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no port free for both UDP and TCP",
        ),
    ))
}

/// Runs the cluster DNS server until the process ends: watches Services and
/// EndpointSlices, waits (a few seconds at most) for their first list, then serves on
/// `--dns-bind-address`.
pub async fn run(client: kube::Client, args: DnsArgs) -> Result<(), Error> {
    args.build()?.run(client, &args).await
}

impl Dns {
    /// As [`run`], for a server already built (to mount [`Dns::metrics`] elsewhere first).
    pub async fn run(self, client: kube::Client, args: &DnsArgs) -> Result<(), Error> {
        let (udp, tcp) = bind(args.dns_bind_address).await?;
        self.run_on(client, args, udp, tcp).await
    }

    /// As [`Dns::run`], on sockets already bound (see [`bind`]).
    pub async fn run_on(
        self,
        client: kube::Client,
        args: &DnsArgs,
        udp: tokio::net::UdpSocket,
        tcp: tokio::net::TcpListener,
    ) -> Result<(), Error> {
        let address = udp.local_addr().map_err(|source| Error::Bind {
            address: args.dns_bind_address,
            source,
        })?;
        let (watchers, mut synced) = watch(client, self.view().clone());
        let watchers = tokio::spawn(watchers);
        if !synced.wait(SYNC_WAIT).await {
            tracing::warn!("serving DNS before Services and EndpointSlices were listed");
        }
        if let Some(address) = args.dns_metrics_address {
            skiff_metrics::serve("dns", address, self.metrics().router())
                .await
                .map_err(|source| Error::Bind { address, source })?;
        }
        tracing::info!(
            %address,
            zone = %self.zone.domain,
            upstreams = ?self.forwarder.upstreams(),
            "cluster DNS serving"
        );
        let served = self.serve(udp, tcp).await;
        watchers.abort();
        served
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        dns: DnsArgs,
    }

    #[test]
    fn flags_parse_and_default_as_documented() {
        let cli = Cli::try_parse_from(["skiff"]).expect("defaults");
        assert_eq!(cli.dns.cluster_domain, "cluster.local");
        assert_eq!(
            cli.dns.dns_bind_address,
            "0.0.0.0:53".parse().expect("addr")
        );
        assert_eq!(cli.dns.ttl, 5);
        let cli = Cli::try_parse_from([
            "skiff",
            "--cluster-domain=corp.example",
            "--ttl=30",
            "--dns-bind-address=127.0.0.1:5353",
            "--dns-upstream=10.0.0.2,10.0.0.3:5300,fd00::53",
        ])
        .expect("flags");
        assert_eq!(
            cli.dns.upstreams().expect("upstreams"),
            vec![
                "10.0.0.2:53".parse().expect("addr"),
                "10.0.0.3:5300".parse().expect("addr"),
                "[fd00::53]:53".parse().expect("addr"),
            ]
        );
        assert!(Cli::try_parse_from(["skiff", "--dns-upstream=nonsense"])
            .expect("parses as text")
            .dns
            .upstreams()
            .is_err());
    }

    #[tokio::test]
    async fn bench_hook_answers_every_query() {
        let results = bench::in_process(10, 200, 2).await.expect("bench");
        assert_eq!(results.len(), 3);
        for (name, result) in results {
            assert_eq!(result.failures, 0, "{name}");
            assert_eq!(result.queries, 200, "{name}");
        }
    }
}
