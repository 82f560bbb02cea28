//! `agnhost porter`: for every environment variable `SERVE_PORT_<port>=<text>` (or
//! `SERVE_TCP_PORT_<port>`), an HTTP server on that port answering any method on any
//! path with the text; for `SERVE_UDP_PORT_<port>`, the text sent back for every
//! datagram. With `--json-response`, the HTTP answer is `{"Method":…,"Body":…}`.
//!
//! `SERVE_TLS_PORT_<port>` serves the same over HTTPS, with the certificate and key the
//! image carries (`/localhost.crt`, `/localhost.key`, as upstream's does) or those
//! `CERT_FILE` and `KEY_FILE` name.
//!
//! Not here: `SERVE_SCTP_PORT_<port>` (no SCTP in this kernel); it is reported on stderr
//! and skipped.

use std::net::UdpSocket;
use std::sync::Arc;

use crate::flags::Flags;
use crate::http::{self, Request, Response};
use crate::json;

pub const BOOLEAN_FLAGS: &[&str] = &["json-response"];

/// What one environment variable asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Server {
    Http { port: u16, text: String },
    Https { port: u16, text: String },
    Udp { port: u16, text: String },
    Unsupported { variable: String },
}

/// The servers the environment asks for, in its order; variables that name no port
/// (or a port that is not a number) are not ours and are ignored, as upstream's
/// would fail to listen on them.
pub fn servers(environment: impl IntoIterator<Item = (String, String)>) -> Vec<Server> {
    let mut servers = Vec::new();
    for (key, text) in environment {
        let (kind, port) = if let Some(port) = key.strip_prefix("SERVE_PORT_") {
            ("http", port)
        } else if let Some(port) = key.strip_prefix("SERVE_TCP_PORT_") {
            ("http", port)
        } else if let Some(port) = key.strip_prefix("SERVE_UDP_PORT_") {
            ("udp", port)
        } else if let Some(port) = key.strip_prefix("SERVE_TLS_PORT_") {
            ("https", port)
        } else if key.starts_with("SERVE_SCTP_PORT_") {
            servers.push(Server::Unsupported { variable: key });
            continue;
        } else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            crate::log(&format!("{key}: {port:?} is not a port; skipped"));
            continue;
        };
        servers.push(match kind {
            "http" => Server::Http { port, text },
            "https" => Server::Https { port, text },
            _ => Server::Udp { port, text },
        });
    }
    servers
}

/// The answer to any request: the text, or with `--json-response` the method and
/// the text as JSON. Markup is labelled HTML, as Go's content sniffing labels it.
pub fn answer(request: &Request, text: &str, json_response: bool) -> Response {
    if json_response {
        let mut response = Response::ok(json::object([
            ("Method", json::Value::Text(&request.method)),
            ("Body", json::Value::Text(text)),
        ]));
        response.content_type = "application/json";
        return response;
    }
    let mut response = Response::ok(text);
    if text.trim_start().starts_with('<') {
        response.content_type = "text/html; charset=utf-8";
    }
    response
}

/// The TLS settings for `SERVE_TLS_PORT_` servers: the certificate chain and key at
/// `CERT_FILE` and `KEY_FILE` (by default the image's `/localhost.crt` and
/// `/localhost.key`).
fn tls_config() -> Result<Arc<rustls::ServerConfig>, String> {
    let cert_file = std::env::var("CERT_FILE").unwrap_or_else(|_| "/localhost.crt".into());
    let key_file = std::env::var("KEY_FILE").unwrap_or_else(|_| "/localhost.key".into());
    tls_config_from(&cert_file, &key_file)
}

fn tls_config_from(cert_file: &str, key_file: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading {cert_file}: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("reading {key_file}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{cert_file} and {key_file}: {e}"))?;
    Ok(Arc::new(config))
}

/// Starts the HTTP (or, with `tls`, HTTPS) server answering with `text` on `port`.
fn spawn_http(
    port: u16,
    text: String,
    json_response: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::thread::JoinHandle<()> {
    let text = Arc::new(text);
    let handler: http::Handler = Arc::new(move |request| answer(request, &text, json_response));
    std::thread::spawn(move || {
        let served = match tls {
            Some(config) => http::serve_tls(port, handler, config),
            None => http::serve(port, handler),
        };
        if let Err(e) = served {
            crate::log(&format!("server on port {port} failed: {e}"));
        }
    })
}

pub fn run(flags: Flags) -> Result<(), String> {
    let json_response = flags.bool("json-response", false)?;
    let mut threads = Vec::new();
    let mut tls = None;
    for server in servers(std::env::vars()) {
        match server {
            Server::Http { port, text } => {
                threads.push(spawn_http(port, text, json_response, None))
            }
            Server::Https { port, text } => {
                if tls.is_none() {
                    match tls_config() {
                        Ok(config) => tls = Some(config),
                        Err(e) => {
                            crate::log(&format!("TLS server on port {port}: {e}; skipped"));
                            continue;
                        }
                    }
                }
                threads.push(spawn_http(port, text, json_response, tls.clone()));
            }
            Server::Udp { port, text } => threads.push(std::thread::spawn(move || {
                if let Err(e) = serve_udp(port, &text) {
                    crate::log(&format!("UDP server on port {port} failed: {e}"));
                }
            })),
            Server::Unsupported { variable } => {
                crate::log(&format!(
                    "{variable}: not supported by this agnhost; skipped"
                ));
            }
        }
    }
    // As upstream: the process stays up whether or not its servers do.
    loop {
        std::thread::park();
    }
}

fn serve_udp(port: u16, text: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", port))?;
    crate::log(&format!("Started UDP server on port {port}"));
    let mut buffer = [0u8; 16];
    loop {
        let (_, client) = socket.recv_from(&mut buffer)?;
        socket.send_to(text.as_bytes(), client)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_the_ports_and_texts_from_the_environment() {
        let found = servers(env(&[
            ("PATH", "/bin"),
            ("SERVE_PORT_80", "<a href=\"/rewriteme\">test</a>"),
            ("SERVE_TCP_PORT_160", "foo=bar"),
            ("SERVE_UDP_PORT_161", "udp"),
            ("SERVE_TLS_PORT_443", "tls baz"),
            ("SERVE_SCTP_PORT_444", "sctp"),
            ("SERVE_PORT_http", "not a port"),
            ("SERVE_PORT_70000", "too big"),
        ]));
        assert_eq!(
            found,
            vec![
                Server::Http {
                    port: 80,
                    text: "<a href=\"/rewriteme\">test</a>".into()
                },
                Server::Http {
                    port: 160,
                    text: "foo=bar".into()
                },
                Server::Udp {
                    port: 161,
                    text: "udp".into()
                },
                Server::Https {
                    port: 443,
                    text: "tls baz".into()
                },
                Server::Unsupported {
                    variable: "SERVE_SCTP_PORT_444".into()
                },
            ]
        );
    }

    fn request(method: &str) -> Request {
        Request {
            method: method.into(),
            path: "/some/path".into(),
            query: Default::default(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            body: String::new(),
        }
    }

    #[test]
    fn answers_the_text_or_the_method_and_text_as_json() {
        let plain = answer(&request("PUT"), "foo", false);
        assert_eq!((plain.status, plain.body.as_str()), (200, "foo"));
        assert!(plain.content_type.starts_with("text/plain"));
        let html = answer(&request("GET"), "<a href=\"/x\">test</a>", false);
        assert!(html.content_type.starts_with("text/html"));
        let json = answer(&request("PATCH"), "say \"hi\"", true);
        assert_eq!(json.body, r#"{"Method":"PATCH","Body":"say \"hi\""}"#);
        assert_eq!(json.content_type, "application/json");
    }

    #[test]
    fn serves_any_method_and_path_over_http() {
        // A free port: bound, noted, released, then served.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let handler: http::Handler = Arc::new(|request| answer(request, "bar", true));
        std::thread::spawn(move || http::serve(port, handler));
        for method in ["GET", "POST", "DELETE", "OPTIONS", "HEAD"] {
            let reply = crate::tests::eventually(|| {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
                write!(
                    stream,
                    "{method} /any/where?x=1 HTTP/1.1\r\nHost: here\r\nContent-Length: 2\r\n\r\nhi"
                )
                .ok()?;
                let mut reply = String::new();
                stream.read_to_string(&mut reply).ok()?;
                Some(reply)
            });
            assert!(
                reply.starts_with("HTTP/1.1 200 OK\r\n"),
                "{method}: {reply}"
            );
            let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            if method == "HEAD" {
                assert_eq!(body, "", "HEAD has no body");
            } else {
                assert_eq!(body, format!(r#"{{"Method":"{method}","Body":"bar"}}"#));
            }
        }
    }

    #[test]
    fn serves_the_text_over_https_with_the_given_certificate() {
        let dir = std::env::temp_dir().join(format!("agnhost-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cert, key) = (dir.join("localhost.crt"), dir.join("localhost.key"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(made.status.success(), "{made:?}");
        let config = tls_config_from(cert.to_str().expect("path"), key.to_str().expect("path"))
            .expect("TLS settings");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let handler: http::Handler = Arc::new(|request| answer(request, "tls baz", false));
        std::thread::spawn(move || http::serve_tls(port, handler, config));
        // curl verifies the server against the certificate it was given.
        let body = crate::tests::eventually(|| {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
                .arg(&cert)
                .arg(format!("https://127.0.0.1:{port}/any"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        });
        assert_eq!(body, "tls baz");
        assert!(tls_config_from("/nonexistent.crt", "/nonexistent.key")
            .is_err_and(|e| e.contains("/nonexistent.crt")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn answers_udp_datagrams_with_the_text() {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        std::thread::spawn(move || serve_udp(port, "udp text"));
        let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        client
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        let reply = crate::tests::eventually(|| {
            client.send_to(b"hello", ("127.0.0.1", port)).ok()?;
            let mut buffer = [0u8; 64];
            let (n, _) = client.recv_from(&mut buffer).ok()?;
            Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
        });
        assert_eq!(reply, "udp text");
    }
}
