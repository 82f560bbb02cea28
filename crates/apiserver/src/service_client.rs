//! HTTPS from the API server to the servers it calls out to: admission webhooks and the
//! extension API servers it aggregates. One connection per call, verified against the
//! caller's CA bundle (Skiff trusts no system roots), optionally with a client
//! certificate; the connection's task ends when its answer's body is dropped.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};

/// The sending half of one HTTP/1.1 connection.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Ends a connection's task when dropped, so that a streamed answer does not outlive the
/// reader that went away.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How the server at the other end is trusted, and what this side presents.
pub struct Trust<'a> {
    /// PEM certificates the server's chain must lead to; none trusts no server.
    pub ca_bundle: Option<&'a [u8]>,
    /// Accept any server certificate (upstream's `insecureSkipTLSVerify`).
    pub insecure: bool,
    /// A client certificate and key (PEM).
    pub client_certificate: Option<(&'a str, &'a str)>,
}

/// The TLS settings `trust` describes, speaking HTTP/1.1.
pub fn tls_config(trust: &Trust<'_>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if trust.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(skiff_pki::insecure::AnyServerCertificate::new())
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(trust.ca_bundle.unwrap_or_default()) {
            let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match trust.client_certificate {
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Dials `address` (`ip:port`), verifies the server as `host` and returns the connection,
/// whose task runs until the guard is dropped. Errors read as Go's dialer words them
/// (`dial tcp …`, `tls: …`), for the caller to prefix with the request.
pub async fn connect(
    address: &str,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(Sender, AbortOnDrop), String> {
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|e| format!("server name {host}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("dial tcp {address}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    handshake(tls).await
}

/// Dials `address` (`ip:port`) in plain HTTP (a pod's or Service's port, proxied).
pub async fn connect_plain(address: &str) -> Result<(Sender, AbortOnDrop), String> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("dial tcp {address}: {e}"))?;
    handshake(tcp).await
}

async fn handshake<S>(stream: S) -> Result<(Sender, AbortOnDrop), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let guard = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "outgoing connection ended with an error");
        }
    }));
    Ok((sender, guard))
}

/// Headers a proxy passes on: not those that describe one connection (RFC 9110
/// §7.6.1), nor the ones it sets itself, nor this server's credentials and the
/// identities only it may assert.
pub fn passed_on(name: &http::HeaderName) -> bool {
    let name = name.as_str();
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
    ) && !name.starts_with("impersonate-")
        && !name.starts_with("x-remote-")
}

/// A request to pass on: where it goes and what it carries.
pub struct Relayed<'a> {
    pub method: &'a http::Method,
    /// Path and query at the other end.
    pub target: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// The client's headers (only those [`passed_on`] go).
    pub headers: &'a http::HeaderMap,
    /// Headers of the proxy's own.
    pub extra: Vec<(String, String)>,
    pub body: Bytes,
    /// For the pod, Service and node proxies: links in the answer pointed back through
    /// the proxy.
    pub links: Option<crate::proxy_links::ProxyLinks>,
}

/// Sends `request` over the connection and returns the answer as it comes, its body
/// streamed (so watches and long responses pass through).
pub async fn relay(
    mut sender: Sender,
    connection: AbortOnDrop,
    request: Relayed<'_>,
) -> Result<http::Response<axum::body::Body>, String> {
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(request.target)
        .header(http::header::HOST, request.host);
    for (name, value) in request.headers.iter().filter(|(name, _)| passed_on(name)) {
        builder = builder.header(name, value);
    }
    for (name, value) in request.extra {
        let value = http::HeaderValue::from_str(&value)
            .map_err(|_| format!("{name} cannot hold {value:?}"))?;
        builder = builder.header(name, value);
    }
    let outgoing = builder
        .body(Full::new(request.body))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| e.to_string())?;
    let (mut parts, incoming) = response.into_parts();
    // The rewriter, when the body is a page to rewrite.
    let page_links = request
        .links
        .as_ref()
        .filter(|links| rewrite_links(links, &mut parts.headers));
    let mut answer = http::Response::builder().status(parts.status);
    for (name, value) in parts.headers.iter().filter(|(name, _)| passed_on(name)) {
        answer = answer.header(name, value);
    }
    let body = match page_links {
        Some(links) => {
            let page = incoming
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let encoding = parts
                .headers
                .get(http::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let page = links
                .rewrite_encoded_html(&page, encoding)
                .map_or(page, Bytes::from);
            axum::body::Body::from(page)
        }
        None => axum::body::Body::from_stream(body_stream(incoming, connection)),
    };
    answer.body(body).map_err(|e| e.to_string())
}

/// Rewrites an answer's `Location` through the proxy, as upstream does for any answer;
/// returns whether its body is an HTML page to rewrite too (upstream passes every
/// other answer through, and so does a redirect). A rewritten page's length changes.
fn rewrite_links(links: &crate::proxy_links::ProxyLinks, headers: &mut http::HeaderMap) -> bool {
    if let Some(location) = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(value) = links
            .rewrite_url(location)
            .and_then(|url| http::HeaderValue::from_str(&url).ok())
        {
            headers.insert(http::header::LOCATION, value);
        }
        return false;
    }
    let html = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::proxy_links::is_html);
    if html {
        headers.remove(http::header::CONTENT_LENGTH);
    }
    html
}

/// Sends `request` and reads the whole answer: its status and body.
pub async fn exchange(
    sender: &mut Sender,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Bytes), String> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// A response body as a stream of its data frames, holding `guard` (the connection)
/// until the stream ends or is dropped.
pub fn body_stream(
    body: hyper::body::Incoming,
    guard: AbortOnDrop,
) -> impl futures::Stream<Item = Result<Bytes, hyper::Error>> + Send {
    futures::stream::unfold((body, guard), |(mut body, guard)| async move {
        loop {
            match body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), (body, guard)));
                    }
                }
                Err(e) => return Some((Err(e), (body, guard))),
            }
        }
    })
}
