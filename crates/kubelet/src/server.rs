//! The kubelet's HTTPS server (upstream's `:10250`): today `GET
//! /containerLogs/{namespace}/{pod}/{container}`, which the API server's
//! `pods/log` proxies to.
//!
//! Authentication is by client certificate, checked against the cluster CA
//! (the one in the kubelet's kubeconfig). Authorization is a fixed rule: a
//! certificate with O=`system:masters` or CN=`kube-apiserver-kubelet-client`
//! may read logs. Upstream's kubelet asks the API server instead, with a
//! SubjectAccessReview for `nodes/proxy` (verb `get`); until Skiff's kubelet
//! does the same, nobody else gets in. The serving certificate is
//! self-signed, made at start: upstream's API server does not verify kubelet
//! serving certificates unless `--kubelet-certificate-authority` is given.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use kube::api::Api;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use skiff_runtime::proto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Refusal, User};
use crate::cri::Cri;
use crate::logs::{self, LogOptions, LogReader, OptionsError};

type Body = BoxBody<Bytes, Infallible>;

/// How often a followed log is polled for growth (upstream waits on fsnotify
/// with a one-second timeout; polling is simpler and close enough).
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How often a followed container is checked for having exited.
const FOLLOW_STATUS_CHECK: Duration = Duration::from_secs(1);

/// What requests need.
pub struct ServerState {
    pub client: kube::Client,
    pub cri: Cri,
    pub node_name: String,
    pub pods: Arc<crate::pods::PodSet>,
    pub stats: Arc<crate::stats::Stats>,
    pub metrics: Arc<crate::metrics::KubeletMetrics>,
    /// What `/logs/` serves: the node's log directory (upstream's `/var/log`).
    pub log_dir: std::path::PathBuf,
    pub auth: Arc<crate::auth::KubeletAuth>,
}

/// TLS settings: the serving certificate the cluster issues (`serving`, with
/// `--rotate-server-certificates`) or else a fresh self-signed one for `names` (host
/// names and IPs); client certificates verified against `client_ca_pem` when there is
/// one. Without a CA nobody can authenticate, so every request gets 401, as upstream's
/// kubelet without `--client-ca-file` does for certificate users.
pub fn tls_config(
    names: &[String],
    client_ca_pem: Option<&[u8]>,
    serving: Option<Arc<crate::serving_cert::ServingCertificate>>,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(pem) {
                roots.add(ca.map_err(|e| anyhow::anyhow!("client CA: {e}"))?)?;
            }
            // Unauthenticated connections are let through TLS so that they
            // get upstream's 401 rather than a failed handshake.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = match serving {
        Some(serving) => builder.with_cert_resolver(serving),
        None => {
            let (certs, key) = self_signed(names)?;
            builder.with_single_cert(certs, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A self-signed serving certificate for `names`, named as upstream's kubelet names its
/// own: `<host>@<unix time>`.
fn self_signed(
    names: &[String],
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let cn = format!(
        "{}@{}",
        names.first().map(String::as_str).unwrap_or("kubelet"),
        jiff::Timestamp::now().as_second()
    );
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("serving key: {e}"))?;
    Ok((vec![cert.der().clone()], key))
}

/// The CA to verify clients with: the kubeconfig's `certificate-authority-data`
/// (or `certificate-authority` file) of its current context's cluster.
pub fn client_ca_from_kubeconfig(path: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let kc = match path {
        Some(p) => kube::config::Kubeconfig::read_from(p)?,
        None => kube::config::Kubeconfig::read()?,
    };
    let cluster_name = kc
        .current_context
        .as_ref()
        .and_then(|current| kc.contexts.iter().find(|c| &c.name == current))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| cluster_name.as_ref().is_none_or(|n| &c.name == n))
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| anyhow::anyhow!("kubeconfig names no cluster"))?;
    if let Some(data) = &cluster.certificate_authority_data {
        return Ok(base64::engine::general_purpose::STANDARD.decode(data.trim())?);
    }
    if let Some(file) = &cluster.certificate_authority {
        return Ok(std::fs::read(file)?);
    }
    anyhow::bail!("kubeconfig has no certificate authority")
}

/// Accepts connections until dropped.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, state: Arc<ServerState>) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet server: accepting connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move { serve_connection(acceptor, tcp, peer, state).await });
    }
}

/// Who a verified client certificate names: its common name, in its organizations.
fn peer_of(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(User {
        name: user,
        groups,
        ..Default::default()
    })
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "kubelet server: TLS handshake failed");
            return;
        }
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| peer_of(cert.as_ref()));
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let state = state.clone();
        let identity = identity.clone();
        async move { Ok::<_, Infallible>(handle(&state, identity.as_ref(), request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "kubelet server: connection ended with an error");
    }
}

fn text(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A 200 answer with `body` of `content_type`.
fn ok_as(content_type: &'static str, body: String) -> Response<Body> {
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn json_response(body: String) -> Response<Body> {
    ok_as("application/json", body)
}

fn metrics_response(body: String) -> Response<Body> {
    ok_as(skiff_metrics::MEDIA_TYPE, body)
}

/// `/pods`: the pods this kubelet runs, static pods as their manifests give them, as a
/// `PodList` (upstream's `GetPods`).
fn node_pods(state: &ServerState) -> Response<Body> {
    let pods = state.pods.all();
    let items: Vec<&k8s_openapi::api::core::v1::Pod> = pods.iter().map(AsRef::as_ref).collect();
    json_response(
        serde_json::json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": items,
        })
        .to_string(),
    )
}

/// Who the request comes from: its client certificate's subject, else the owner of its
/// bearer token.
async fn authenticate(
    state: &ServerState,
    peer: Option<&User>,
    request: &Request<hyper::body::Incoming>,
) -> Result<User, Response<Body>> {
    if let Some(peer) = peer {
        return Ok(peer.clone());
    }
    let unauthorized = || text(StatusCode::UNAUTHORIZED, "Unauthorized");
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    match state.auth.authenticate_token(token).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(unauthorized()),
        Err(error) => {
            tracing::warn!(%error, "cannot authenticate a bearer token");
            Err(unauthorized())
        }
    }
}

async fn handle(
    state: &ServerState,
    peer: Option<&User>,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let user = match authenticate(state, peer, &request).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let path = request.uri().path().to_string();
    match state.auth.authorize(&user, request.method(), &path).await {
        Ok(()) => {}
        Err(Refusal::Forbidden(message)) => return text(StatusCode::FORBIDDEN, message),
        Err(Refusal::Error(message)) => return text(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["containerLogs", namespace, pod, container]) => {
            let query: Vec<(String, String)> =
                form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            container_logs(state, namespace, pod, container, &query).await
        }
        (&Method::GET, ["stats", "summary"]) => match state.stats.summary().await {
            Ok(summary) => json_response(summary.to_string()),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        (&Method::GET, ["metrics", "resource"]) => {
            let summary = state.stats.summary().await.ok();
            metrics_response(crate::resource_metrics::render(summary.as_ref()))
        }
        (&Method::GET | &Method::HEAD, ["healthz"]) => text(StatusCode::OK, "ok"),
        (&Method::GET, ["pods"]) => node_pods(state),
        (&Method::GET, ["metrics"]) => metrics_response(state.metrics.render(&state.cri).await),
        (&Method::GET | &Method::HEAD, ["logs", ..]) => {
            let head = request.method() == Method::HEAD;
            node_logs(&state.log_dir, &path, head).await
        }
        (&Method::GET, ["containerLogs", ..]) => {
            text(StatusCode::BAD_REQUEST, "missing container name")
        }
        (&Method::GET | &Method::POST, ["exec", namespace, pod, container]) => {
            let (namespace, pod, container) = (
                namespace.to_string(),
                pod.to_string(),
                container.to_string(),
            );
            exec(state, &namespace, &pod, &container, request, false).await
        }
        (&Method::GET | &Method::POST, ["attach", namespace, pod, container]) => {
            let (namespace, pod, container) = (
                namespace.to_string(),
                pod.to_string(),
                container.to_string(),
            );
            exec(state, &namespace, &pod, &container, request, true).await
        }
        (&Method::GET | &Method::POST, ["portForward", namespace, pod, rest @ ..])
            if rest.len() <= 1 =>
        {
            let (namespace, pod, uid) = (
                namespace.to_string(),
                pod.to_string(),
                rest.first().map(|uid| uid.to_string()),
            );
            port_forward(state, &namespace, &pod, uid.as_deref(), request).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// `/logs/{path}`: the node's log directory as upstream's kubelet serves it (a file
/// server): a directory as an HTML listing of its entries (sorted, directories with a
/// trailing slash), a file as its bytes; a directory asked for without its trailing
/// slash is redirected to it, and `..` never leaves the directory.
async fn node_logs(log_dir: &std::path::Path, path: &str, head: bool) -> Response<Body> {
    let not_found = || text(StatusCode::NOT_FOUND, "404 page not found");
    let Some(relative) = path.strip_prefix("/logs") else {
        return not_found();
    };
    let relative = percent_decode(relative);
    let mut target = log_dir.to_path_buf();
    for segment in relative.split('/') {
        match segment {
            "" | "." => {}
            ".." => return not_found(),
            name => target.push(name),
        }
    }
    let Ok(metadata) = tokio::fs::metadata(&target).await else {
        return not_found();
    };
    if metadata.is_dir() {
        if !path.ends_with('/') {
            let mut response = text(StatusCode::MOVED_PERMANENTLY, "");
            let location = format!("{}/", path.rsplit('/').next().unwrap_or("logs"));
            if let Ok(location) = http::HeaderValue::from_str(&location) {
                response
                    .headers_mut()
                    .insert(http::header::LOCATION, location);
            }
            return response;
        }
        let listing = match directory_listing(&target).await {
            Ok(listing) => listing,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let mut response = text(StatusCode::OK, if head { String::new() } else { listing });
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return response;
    }
    let file = match tokio::fs::File::open(&target).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return text(StatusCode::FORBIDDEN, "403 Forbidden")
        }
        Err(_) => return not_found(),
    };
    let body: Body = if head {
        Full::new(Bytes::new()).boxed()
    } else {
        // Streamed in chunks: node logs can be large.
        let chunks = futures::stream::unfold(Some(file), |file| async move {
            use tokio::io::AsyncReadExt;
            let mut file = file?;
            let mut buffer = vec![0u8; 64 * 1024];
            match file.read(&mut buffer).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(buffer))),
                        Some(file),
                    ))
                }
            }
        });
        BodyExt::boxed(StreamBody::new(chunks))
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(length) = http::HeaderValue::from_str(&metadata.len().to_string()) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, length);
    }
    response
}

/// A directory's entries as the HTML a file server lists them in.
async fn directory_listing(dir: &std::path::Path) -> std::io::Result<String> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    let mut listing = String::from(
        "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
    );
    for name in names {
        let escaped = html_escape(&name);
        listing.push_str(&format!("<a href=\"{escaped}\">{escaped}</a>\n"));
    }
    listing.push_str("</pre>\n");
    Ok(listing)
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `%XX` escapes in a URL path decoded (invalid ones kept as they are).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/exec/{namespace}/{pod}/{container}?command=…` (or `/attach/…`, to the container's
/// own process): asks the runtime for a streaming URL (CRI `Exec` or `Attach`) and
/// proxies the client's WebSocket to it.
async fn exec(
    state: &ServerState,
    namespace: &str,
    pod_name: &str,
    container: &str,
    request: Request<hyper::body::Incoming>,
    attach: bool,
) -> Response<Body> {
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let flag = |name: &str| {
        query
            .iter()
            .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true"))
    };
    let cmd: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if cmd.is_empty() && !attach {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 command",
        );
    }
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), namespace);
    let pod = match pods.get_opt(pod_name).await {
        Ok(Some(pod)) => pod,
        Ok(None) => return text(StatusCode::NOT_FOUND, format!("pod {pod_name:?} not found")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let statuses = every_status(pod.status.clone().unwrap_or_default());
    let id = match pick_container(pod_name, container, &statuses, false) {
        Ok(id) => id,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let streaming = if attach {
        state
            .cri
            .attach(proto::AttachRequest {
                container_id: id,
                tty: flag("tty"),
                stdin: flag("stdin"),
                stdout: flag("stdout"),
                stderr: flag("stderr"),
            })
            .await
    } else {
        state
            .cri
            .exec(proto::ExecRequest {
                container_id: id,
                cmd,
                tty: flag("tty"),
                stdin: flag("stdin"),
                stdout: flag("stdout"),
                stderr: flag("stderr"),
            })
            .await
    };
    let url = match streaming {
        Ok(url) => url,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    to_runtime(&url, request).await
}

/// `/portForward/{namespace}/{pod}[/{uid}]`: asks the runtime for a streaming URL into
/// the pod's sandbox (CRI `PortForward`) and proxies the client's SPDY connection to it.
async fn port_forward(
    state: &ServerState,
    namespace: &str,
    pod_name: &str,
    uid: Option<&str>,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), namespace);
    let pod = match pods.get_opt(pod_name).await {
        Ok(Some(pod)) => pod,
        Ok(None) => return text(StatusCode::NOT_FOUND, format!("pod {pod_name:?} not found")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if uid.is_some_and(|uid| Some(uid) != pod.metadata.uid.as_deref()) {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "pod {pod_name:?} with uid {uid:?} not found",
                uid = uid.unwrap_or_default()
            ),
        );
    }
    // A static pod's sandbox carries its own UID, not its mirror's.
    let runtime_uid = crate::static_pods::runtime_uid(&pod);
    let sandboxes = match state.cri.sandboxes(Some(runtime_uid)).await {
        Ok(sandboxes) => sandboxes,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let ready = sandboxes
        .into_iter()
        .filter(|s| s.state == proto::PodSandboxState::SandboxReady as i32)
        .max_by_key(|s| s.metadata.as_ref().map_or(0, |m| m.attempt));
    let Some(sandbox) = ready else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} has no running sandbox on this node"),
        );
    };
    let url = match state.cri.port_forward(&sandbox.id).await {
        Ok(url) => url,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    to_runtime(&url, request).await
}

/// Passes the client's upgrade request on to the runtime's streaming server at `url`.
async fn to_runtime(url: &str, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let Some((authority, path)) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("runtime gave an unusable streaming URL {url:?}"),
        );
    };
    let connection = match tokio::net::TcpStream::connect(authority).await {
        Ok(connection) => connection,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("dialing the runtime's streaming server {authority}: {e}"),
            )
        }
    };
    match skiff_streaming::proxy::upgrade(request, connection, authority, &format!("/{path}")).await
    {
        Ok(response) => response.map(|body| Full::new(body).boxed()),
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The statuses of all the pod's containers: app, init (sidecars among them) and
/// ephemeral, any of which may be exec'd into, attached to or read.
fn every_status(status: PodStatus) -> Vec<ContainerStatus> {
    status
        .container_statuses
        .into_iter()
        .flatten()
        .chain(status.init_container_statuses.into_iter().flatten())
        .chain(status.ephemeral_container_statuses.into_iter().flatten())
        .collect()
}

fn container_id(status: &str) -> &str {
    status.split_once("://").map_or(status, |(_, id)| id)
}

/// Which container's log to read, from the pod's status (upstream's
/// `validateContainerLogStatus`, word for word in its errors).
fn pick_container(
    pod_name: &str,
    name: &str,
    statuses: &[ContainerStatus],
    previous: bool,
) -> Result<String, String> {
    let Some(status) = statuses.iter().find(|s| s.name == name) else {
        return Err(format!(
            "container {name:?} in pod {pod_name:?} is not available"
        ));
    };
    let last_terminated = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.clone())
        .filter(|id| !id.is_empty());
    let state = status.state.clone().unwrap_or_default();
    let id = if previous {
        last_terminated.ok_or_else(|| {
            format!("previous terminated container {name:?} in pod {pod_name:?} not found")
        })?
    } else if state.running.is_some() {
        status.container_id.clone().unwrap_or_default()
    } else if let Some(terminated) = &state.terminated {
        match terminated.container_id.clone().filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => last_terminated
                .ok_or_else(|| format!("container {name:?} in pod {pod_name:?} is terminated"))?,
        }
    } else if let Some(id) = last_terminated {
        id
    } else if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        return Err(match reason.as_str() {
            "ErrImagePull" => format!(
                "container {name:?} in pod {pod_name:?} is waiting to start: image can't be pulled"
            ),
            "ImagePullBackOff" => format!(
                "container {name:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image"
            ),
            _ => format!("container {name:?} in pod {pod_name:?} is waiting to start: {reason}"),
        });
    } else {
        return Err(format!(
            "container {name:?} in pod {pod_name:?} is waiting to start - no logs yet"
        ));
    };
    if id.is_empty() {
        return Err(format!(
            "container {name:?} in pod {pod_name:?} is waiting to start - no logs yet"
        ));
    }
    Ok(container_id(&id).to_string())
}

async fn container_logs(
    state: &ServerState,
    namespace: &str,
    pod_name: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let opts = match LogOptions::from_query(query, jiff::Timestamp::now()) {
        Ok(opts) => opts,
        Err(OptionsError::Decode) => {
            return text(
                StatusCode::BAD_REQUEST,
                r#"{"message": "Unable to decode query."}"#,
            )
        }
        Err(OptionsError::Invalid) => {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"message": "Invalid request."}"#,
            )
        }
    };
    // The pod as the API has it; only pods bound to this node are ours.
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), namespace);
    let pod = match pods.get_opt(pod_name).await {
        Ok(Some(pod))
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(state.node_name.as_str()) =>
        {
            pod
        }
        Ok(_) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod {pod_name:?} does not exist"),
            )
        }
        Err(e) => {
            tracing::warn!(pod = %pod_name, error = %e, "container logs: reading the pod");
            return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let in_spec = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == container)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == container);
    if !in_spec {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod_name:?}"),
        );
    }
    let statuses = every_status(pod.status.clone().unwrap_or_default());
    let id = match pick_container(pod_name, container, &statuses, opts.previous) {
        Ok(id) => id,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let log_path = match state.cri.container_status(&id).await {
        Ok(s) if !s.log_path.is_empty() => std::path::PathBuf::from(s.log_path),
        Ok(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod_name:?} has no log"),
            )
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("failed to get container status {id:?}: {e}"),
            )
        }
    };
    tracing::debug!(pod = %pod_name, %container, path = %log_path.display(), follow = opts.follow, "serving container logs");
    if !opts.follow {
        return match logs::read_all(&log_path, opts) {
            Ok(out) => stream_response(Full::new(Bytes::from(out)).boxed()),
            Err(e) => text(
                StatusCode::BAD_REQUEST,
                format!("failed to open log file {:?}: {e}", log_path.display()),
            ),
        };
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(follow(
        state.cri.clone(),
        id,
        LogReader::new(&log_path, opts),
        tx,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    stream_response(BodyExt::boxed(StreamBody::new(stream)))
}

fn stream_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

async fn is_running(cri: &Cri, id: &str) -> bool {
    match cri.container_status(id).await {
        Ok(s) => s.state == proto::ContainerState::ContainerRunning as i32,
        Err(_) => false,
    }
}

/// Streams a log as it grows until the container stops running, the client
/// goes away (the receiver is dropped), or `limitBytes` is used up.
async fn follow(cri: Cri, id: String, mut reader: LogReader, tx: mpsc::Sender<Bytes>) {
    let mut last_check = tokio::time::Instant::now();
    let mut running = true;
    loop {
        let chunk = if running {
            reader.read_new()
        } else {
            reader.finish()
        };
        match chunk {
            Ok(chunk) if !chunk.is_empty() => {
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "following log ended");
                return;
            }
        }
        if !running || reader.exhausted() {
            return;
        }
        if last_check.elapsed() >= FOLLOW_STATUS_CHECK {
            last_check = tokio::time::Instant::now();
            // One more pass reads what the container wrote before it exited.
            running = is_running(&cri, &id).await;
            if !running {
                continue;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };

    fn status(state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            container_id: Some("skiff://now".into()),
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }

    fn terminated(id: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(id.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn body_of(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn serves_the_node_log_directory() {
        let dir = std::env::temp_dir().join(format!("skiff-node-logs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pods/ns_p")).unwrap();
        std::fs::write(dir.join("syslog"), "line one\nline two\n").unwrap();
        std::fs::write(dir.join("a&b.log"), "amp").unwrap();
        let listing = node_logs(&dir, "/logs/", false).await;
        assert_eq!(listing.status(), StatusCode::OK);
        assert_eq!(
            listing.headers()[http::header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let listing = body_of(listing).await;
        let a = listing
            .find(r#"<a href="a&amp;b.log">a&amp;b.log</a>"#)
            .unwrap();
        let pods = listing.find(r#"<a href="pods/">pods/</a>"#).unwrap();
        let syslog = listing.find(r#"<a href="syslog">syslog</a>"#).unwrap();
        assert!(a < pods && pods < syslog, "{listing}");
        let file = node_logs(&dir, "/logs/syslog", false).await;
        assert_eq!(file.status(), StatusCode::OK);
        assert_eq!(body_of(file).await, "line one\nline two\n");
        assert_eq!(
            body_of(node_logs(&dir, "/logs/a%26b.log", false).await).await,
            "amp"
        );
        let sub = body_of(node_logs(&dir, "/logs/pods/", false).await).await;
        assert!(sub.contains(r#"<a href="ns_p/">ns_p/</a>"#), "{sub}");
        let redirect = node_logs(&dir, "/logs/pods", false).await;
        assert_eq!(redirect.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(redirect.headers()[http::header::LOCATION], "pods/");
        assert_eq!(
            node_logs(&dir, "/logs", false).await.headers()[http::header::LOCATION],
            "logs/"
        );
        for missing in [
            "/logs/nothing",
            "/logs/../etc/passwd",
            "/logs/pods/%2e%2e/syslog",
        ] {
            assert_eq!(
                node_logs(&dir, missing, false).await.status(),
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
        let head = node_logs(&dir, "/logs/syslog", true).await;
        assert_eq!(head.headers()[http::header::CONTENT_LENGTH], "18");
        assert_eq!(body_of(head).await, "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn picks_containers_as_upstream() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        let s = [status(running.clone(), Some(terminated("skiff://old")))];
        assert_eq!(pick_container("p", "c", &s, false).unwrap(), "now");
        assert_eq!(pick_container("p", "c", &s, true).unwrap(), "old");
        let s = [status(running, None)];
        assert_eq!(
            pick_container("p", "c", &s, true).unwrap_err(),
            r#"previous terminated container "c" in pod "p" not found"#
        );
        assert_eq!(
            pick_container("p", "x", &s, false).unwrap_err(),
            r#"container "x" in pod "p" is not available"#
        );
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pick_container("p", "c", &[status(waiting.clone(), None)], false).unwrap_err(),
            r#"container "c" in pod "p" is waiting to start: ContainerCreating"#
        );
        // Crash-looping: the last run's log.
        let s = [status(waiting, Some(terminated("skiff://old")))];
        assert_eq!(pick_container("p", "c", &s, false).unwrap(), "old");
    }
}
