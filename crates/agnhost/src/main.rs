//! `agnhost`: the network servers of the test image, for the ported conformance tests.
//!
//! Upstream's e2e tests run `registry.k8s.io/e2e-test-images/agnhost` and talk to its
//! subcommands; this binary answers as those subcommands do, for the ones Skiff's
//! tests use: `netexec` (HTTP and UDP servers, and `/dial` to make a pod reach others),
//! `serve-hostname`, `porter` (fixed texts on the ports the environment names),
//! `nettest`'s state server, `dns-suffix`, `dns-server-list` and `grpc-health-checking`
//! (the gRPC health service, for gRPC probes).
//! Its one dependency is rustls (porter's TLS ports), and it is linked statically, so
//! that the image needs nothing but it (and busybox, for shells).

mod dns;
mod flags;
mod grpc_health;
mod http;
mod json;
mod netexec;
mod nettest;
mod porter;
mod serve_hostname;
mod signals;

use std::process::ExitCode;

const USAGE: &str = "\
agnhost: network servers for Skiff's end-to-end tests (a subset of upstream's agnhost)

Usage: agnhost <subcommand> [flags]

Subcommands:
  netexec          HTTP server (/, /clientip, /dial, /echo, /exit, /healthz, /hostname,
                   /hostName, /redirect, /shell, /shutdown) and UDP server (hostname,
                   echo <msg>, clientip)
                   flags: --http-port=8080 --udp-port=8081 (-1: none)
                          --udp-listen-addresses=IP,IP
  serve-hostname   serves the hostname over HTTP (default), or raw over TCP or UDP
                   flags: --port=9376 --http=true --tcp --udp --close
  nettest          state server: POST /write {\"Source\": name} counts a contact,
                   GET /read returns the counts as JSON (no peer discovery)
                   flags: --port=8080
  dns-suffix       prints the search list of /etc/resolv.conf, comma-separated
  dns-server-list  prints the nameservers of /etc/resolv.conf, comma-separated
  porter           for each env var SERVE_PORT_<port>=<text> (or SERVE_TCP_PORT_), serves
                   the text over HTTP on that port, any method and path; for
                   SERVE_UDP_PORT_<port>, answers each datagram with it; for
                   SERVE_TLS_PORT_<port>, serves it over HTTPS with CERT_FILE and
                   KEY_FILE (default /localhost.crt, /localhost.key) (no SCTP)
                   flags: --json-response (answers JSON: Method, Body)
  grpc-health-checking
                   the gRPC health service (grpc.health.v1.Health/Check): SERVING for
                   --delay-unhealthy-sec seconds (-1: always), then NOT_SERVING; another
                   service than --service is NOT_FOUND; GET /make-serving and
                   /make-not-serving on the HTTP port set the answer
                   flags: --port=5000 --http-port=8080 --service= --delay-unhealthy-sec=-1
  pause            waits until stopped (the image's default command)
  help             this text
";

fn main() -> ExitCode {
    signals::exit_on_terminate();
    let mut args = std::env::args().skip(1);
    let subcommand = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let outcome = match subcommand.as_str() {
        "netexec" => flags::Flags::parse(&rest, &[]).and_then(netexec::run),
        "porter" => flags::Flags::parse(&rest, porter::BOOLEAN_FLAGS).and_then(porter::run),
        "serve-hostname" => {
            flags::Flags::parse(&rest, serve_hostname::BOOLEAN_FLAGS).and_then(serve_hostname::run)
        }
        "nettest" => flags::Flags::parse(&rest, &[]).and_then(nettest::run),
        "grpc-health-checking" => flags::Flags::parse(&rest, &[]).and_then(grpc_health::run),
        "dns-suffix" => dns::print_suffixes(),
        "dns-server-list" => dns::print_servers(),
        // The image's default command: a process that only waits to be stopped.
        "pause" => loop {
            std::thread::park();
        },
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "" => Err("a subcommand is required".to_string()),
        other => Err(format!("unknown subcommand {other:?}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("agnhost: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The host name the servers report (the pod's name, in a pod).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// A timestamped line on stderr: the container log tests read.
pub fn log(line: &str) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{}.{:03} {line}",
        since_epoch.as_secs(),
        since_epoch.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    /// Polls `check` for up to five seconds.
    pub fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(std::time::Instant::now() < deadline, "gave up waiting");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
