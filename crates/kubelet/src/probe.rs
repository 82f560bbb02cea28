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

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::cri::Cri;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

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

/// Runs the probe once: true on success.
pub async fn run_once(probe: &Probe, t: &Target) -> bool {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match t
            .cri
            .exec_sync(&t.container_id, cmd, timeout.as_secs() as i64)
            .await
        {
            Ok(r) => r.exit_code == 0,
            Err(e) => {
                tracing::debug!(container = %t.container_id, error = %e, "exec probe failed");
                false
            }
        };
    }
    if let Some(h) = &probe.http_get {
        let Some(port) = resolve_port(&h.port, &t.container) else {
            return false;
        };
        let host = h
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| t.pod_ip.clone());
        let path = h
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|hh| (hh.name.clone(), hh.value.clone()))
            .collect();
        if h.scheme.as_deref() == Some("HTTPS") {
            tracing::warn!("HTTPS probes are not supported yet; treating as success");
            return true;
        }
        return tokio::time::timeout(timeout, http_get(&host, port, &path, &headers))
            .await
            .map(|r| r.is_some_and(|code| (200..400).contains(&code)))
            .unwrap_or(false);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, &t.container) else {
            return false;
        };
        let host = tcp
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| t.pod_ip.clone());
        return matches!(
            tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        );
    }
    if probe.grpc.is_some() {
        tracing::warn!("gRPC probes are not supported yet; treating as success");
        return true;
    }
    true
}

/// A minimal HTTP/1.1 GET (probes need only the status code); upstream's
/// prober sends `User-Agent: kube-probe/<major.minor>`.
async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n");
    for (k, v) in headers {
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
            let ok = run_once(&probe, &target).await;
            if ok {
                successes += 1;
                failures = 0;
            } else {
                failures += 1;
                successes = 0;
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
        assert_eq!(http_get("127.0.0.1", port, "/ok", &[]).await, Some(200));
        assert_eq!(http_get("127.0.0.1", port, "/bad", &[]).await, Some(500));
    }
}
