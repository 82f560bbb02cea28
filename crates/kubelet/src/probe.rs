//! Liveness, readiness and startup probes: one task per probe of a running
//! container, keyed by container ID so a restarted container starts afresh.
//!
//! Results follow upstream's prober: readiness starts as failure, liveness
//! as success, and neither runs before the startup probe (if any) has
//! succeeded. A result changes only after `successThreshold` successes or
//! `failureThreshold` failures in a row. The pod worker is woken on every
//! change; it kills a container whose liveness or startup probe failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::cri::Cri;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    /// As upstream's messages name the probe (`Liveness probe failed: …`).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// Told of every failed probe run, with what failed (the kubelet makes it an event).
pub type OnFailure = Arc<dyn Fn(Kind, String) + Send + Sync>;

/// Probe results of one container, shared with the pod worker.
#[derive(Debug)]
pub struct Results {
    pub ready: AtomicBool,
    pub started: AtomicBool,
    /// Set once when liveness or startup failed: the container must restart.
    pub failed: AtomicBool,
}

impl Results {
    pub fn new(c: &Container) -> Results {
        Results {
            ready: AtomicBool::new(c.readiness_probe.is_none()),
            started: AtomicBool::new(c.startup_probe.is_none()),
            failed: AtomicBool::new(false),
        }
    }
}

/// What a probe runs against.
#[derive(Clone)]
pub struct Target {
    pub cri: Cri,
    pub container_id: String,
    pub container: Container,
    pub pod_ip: String,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

/// Resolves a probe port: a number, or the name of a container port.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => name.parse::<u16>().ok().or_else(|| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }),
    }
}

/// Runs the probe once: `Err` with what failed, in upstream's prober's words where it
/// has them (an exec probe's output, an HTTP status, a dial error).
pub async fn run_once(probe: &Probe, t: &Target) -> Result<(), String> {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match t
            .cri
            .exec_sync(&t.container_id, cmd, timeout.as_secs() as i64)
            .await
        {
            Ok(r) if r.exit_code == 0 => Ok(()),
            Ok(r) => Err(String::from_utf8_lossy(&[r.stdout, r.stderr].concat())
                .trim_end()
                .to_string()),
            Err(e) => {
                tracing::debug!(container = %t.container_id, error = %e, "exec probe failed");
                Err(e.to_string())
            }
        };
    }
    if let Some(h) = &probe.http_get {
        let Some(request) = HttpGet::new(h, &t.container, &t.pod_ip, "kube-probe/1.37") else {
            return Err("the probe's port names no port of the container".into());
        };
        return match tokio::time::timeout(timeout, request.send()).await {
            Ok(Some(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Some(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(None) => Err(format!("Get \"{}\": connection failed", request.url())),
            Err(_) => Err(format!(
                "Get \"{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                request.url()
            )),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, &t.container) else {
            return Err("the probe's port names no port of the container".into());
        };
        let host = tcp
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| t.pod_ip.clone());
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        return match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: connect: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(g) = &probe.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return Err(format!("invalid port {}", g.port));
        };
        let service = g.service.clone().unwrap_or_default();
        return if grpc_serving(&t.pod_ip, port, &service, timeout).await {
            Ok(())
        } else {
            Err(format!(
                "service unhealthy or unreachable within {}s: {}:{port}",
                timeout.as_secs(),
                t.pod_ip
            ))
        };
    }
    Ok(())
}

/// An `httpGet` action (of a probe or a lifecycle hook), resolved against its container.
pub struct HttpGet {
    https: bool,
    host: String,
    port: u16,
    path: String,
    headers: Vec<(String, String)>,
    user_agent: &'static str,
}

impl HttpGet {
    /// `None` when the port names no port of the container.
    pub fn new(
        h: &HTTPGetAction,
        c: &Container,
        pod_ip: &str,
        user_agent: &'static str,
    ) -> Option<HttpGet> {
        Some(HttpGet {
            https: h.scheme.as_deref() == Some("HTTPS"),
            host: h
                .host
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: resolve_port(&h.port, c)?,
            path: h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|hh| (hh.name.clone(), hh.value.clone()))
                .collect(),
            user_agent,
        })
    }

    /// Sends the request; the response's status code. HTTPS, as upstream's prober,
    /// does not verify the server's certificate.
    pub async fn send(&self) -> Option<u16> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .ok()?;
        if !self.https {
            return self.exchange(stream).await;
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).ok()?;
        let tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
            .connect(name, stream)
            .await
            .ok()?;
        self.exchange(tls).await
    }

    /// The URL asked, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }

    /// A minimal HTTP/1.1 GET: only the status code matters.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(&self, mut s: S) -> Option<u16> {
        let host_header = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n",
            self.path, self.user_agent
        );
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 1024];
        let mut n = 0;
        while n < buf.len() {
            let r = s.read(&mut buf[n..]).await.ok()?;
            if r == 0 {
                break;
            }
            n += r;
            if buf[..n].contains(&b'\n') {
                break;
            }
        }
        parse_status_line(&String::from_utf8_lossy(&buf[..n]))
    }
}

/// A TLS client that accepts any certificate, as upstream's prober and hook runner
/// (`InsecureSkipVerify`): probes ask whether the server answers, not who it is.
fn insecure_tls() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(skiff_pki::insecure::AnyServerCertificate::new())
                .with_no_client_auth();
            Some(Arc::new(config))
        })
        .clone()
}

/// The standard gRPC health check (`grpc.health.v1.Health/Check`), as upstream's gRPC
/// probe sends it: healthy only when the answer is SERVING.
async fn grpc_serving(host: &str, port: u16, service: &str, timeout: Duration) -> bool {
    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        service: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckResponse {
        #[prost(int32, tag = "1")]
        status: i32,
    }
    const SERVING: i32 = 1;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let check = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
            .ok()?
            .user_agent("kube-probe/1.37")
            .ok()?;
        let mut client = tonic::client::Grpc::new(endpoint.connect().await.ok()?);
        client.ready().await.ok()?;
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let request = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        let response = client.unary(request, path, codec).await.ok()?;
        Some(response.into_inner().status == SERVING)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

pub fn parse_status_line(s: &str) -> Option<u16> {
    let line = s.lines().next()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Starts the task of one probe; it ends when the result is final (startup
/// success, liveness/startup failure) or when aborted by the worker.
pub fn spawn(
    kind: Kind,
    probe: Probe,
    target: Target,
    results: Arc<Results>,
    wake: Arc<Notify>,
    on_failure: OnFailure,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
        let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
        tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
        let (mut successes, mut failures) = (0, 0);
        loop {
            if kind != Kind::Startup && !results.started.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            match run_once(&probe, &target).await {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                }
                Err(output) => {
                    failures += 1;
                    successes = 0;
                    on_failure(kind, output);
                }
            }
            match kind {
                Kind::Readiness => {
                    let was = results.ready.load(Ordering::SeqCst);
                    if !was && successes >= success_threshold {
                        results.ready.store(true, Ordering::SeqCst);
                        wake.notify_one();
                    } else if was && failures >= failure_threshold {
                        results.ready.store(false, Ordering::SeqCst);
                        wake.notify_one();
                    }
                }
                Kind::Startup if successes >= success_threshold => {
                    results.started.store(true, Ordering::SeqCst);
                    wake.notify_one();
                    return;
                }
                Kind::Liveness | Kind::Startup if failures >= failure_threshold => {
                    tracing::info!(container = %target.container.name, ?kind, "probe failed; container will be restarted");
                    results.failed.store(true, Ordering::SeqCst);
                    wake.notify_one();
                    return;
                }
                _ => {}
            }
            tokio::time::sleep(period).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn named_ports_and_status_lines() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Some(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Some(80));
        assert_eq!(resolve_port(&IntOrString::String("nope".into()), &c), None);
        assert_eq!(parse_status_line("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line("garbage"), None);
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "500 Oops"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let get = |path: &str| HttpGet {
            https: false,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            headers: Vec::new(),
            user_agent: "kube-probe/1.37",
        };
        assert_eq!(get("/ok").send().await, Some(200));
        assert_eq!(get("/bad").send().await, Some(500));
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_standard_health_service() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("sick", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream_of(listener)),
        );
        let second = Duration::from_secs(1);
        assert!(grpc_serving("127.0.0.1", port, "", second).await);
        assert!(!grpc_serving("127.0.0.1", port, "sick", second).await);
        assert!(!grpc_serving("127.0.0.1", port, "unknown", second).await);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(!grpc_serving("127.0.0.1", closed, "", second).await);
    }

    fn tokio_stream_of(
        listener: tokio::net::TcpListener,
    ) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(s, _)| s);
            Some((accepted, listener))
        })
    }

    #[tokio::test]
    async fn https_probes_skip_certificate_checks() {
        let cert = rcgen::generate_simple_self_signed(vec!["somewhere.example".into()])
            .expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 512];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        let get = HttpGet {
            https: true,
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            headers: Vec::new(),
            user_agent: "kube-probe/1.37",
        };
        assert_eq!(get.send().await, Some(204));
    }
}
