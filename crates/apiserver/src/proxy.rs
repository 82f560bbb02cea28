//! Requests the API server passes on to a node's kubelet: `pods/log` and `pods/exec`
//! (upstream's `LogREST` + `LocationStreamer`).
//!
//! The kubelet is reached at the Node's InternalIP (then ExternalIP, then
//! Hostname; upstream's default order starts with Hostname, which Skiff
//! nodes report as a bare node name that need not resolve) and the port in
//! `status.daemonEndpoints.kubeletEndpoint`. The API server presents a
//! client certificate of its own (CN `kube-apiserver-kubelet-client`, O
//! `system:masters`), issued by the cluster CA at start. It verifies the
//! kubelet's serving certificate only when `--kubelet-certificate-authority` is
//! given (against those CAs, for the address dialled), as upstream.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use skiff_pki::{ClientIdentity, ClusterPki};

use crate::handlers::{AppState, Query};
use crate::service_client::AbortOnDrop;
use crate::status::{ApiError, ApiResult, Cause};

/// Upstream's default kubelet port, for nodes that report none.
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Upstream's `HTTPTimeout` for kubelet connections (dial and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a kubelet's error body becomes the error message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// TLS settings for talking to kubelets.
pub struct KubeletClient {
    connector: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    /// Issues the API server's kubelet client certificate from the cluster CA. Kubelets'
    /// serving certificates must lead to the CA certificates in `authority` (upstream's
    /// `--kubelet-certificate-authority`) for the address dialled; without it, as
    /// upstream, any is accepted.
    pub fn new(pki: &ClusterPki, authority: Option<&Path>) -> anyhow::Result<KubeletClient> {
        let (cert_pem, key_pem) = pki
            .issue_client(&ClientIdentity {
                user: "kube-apiserver-kubelet-client",
                groups: &["system:masters"],
            })
            .context("the kubelet client certificate")?;
        let ca_bundle = authority
            .map(|path| {
                std::fs::read(path).with_context(|| {
                    format!("reading --kubelet-certificate-authority {}", path.display())
                })
            })
            .transpose()?;
        let config = crate::service_client::tls_config(&crate::service_client::Trust {
            ca_bundle: ca_bundle.as_deref(),
            insecure: ca_bundle.is_none(),
            client_certificate: Some((&cert_pem, &key_pem)),
        })
        .map_err(|e| anyhow::anyhow!("the kubelet client's TLS settings: {e}"))?;
        Ok(KubeletClient {
            connector: tokio_rustls::TlsConnector::from(config),
        })
    }
}

/// Every container name of a pod: init, regular, ephemeral (upstream's
/// `VisitContainers` order).
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| pod.pointer(&format!("/spec/{field}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// The container a log request is for (upstream's `validateContainer`).
fn choose_container(pod: &Value, name: &str, requested: Option<&str>) -> ApiResult<String> {
    if let Some(container) = requested.filter(|c| !c.is_empty()) {
        if container_names(pod).iter().any(|c| c == container) {
            return Ok(container.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    match containers {
        [only] => Ok(only
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            container_names(pod).join(" ")
        ))),
    }
}

/// The query for the kubelet: upstream's `PodLogOptions`, validated as
/// upstream's `ValidatePodLogOptions` does.
fn kubelet_query(name: &str, query: &Query) -> ApiResult<String> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut causes = Vec::new();
    for flag in ["follow", "previous", "timestamps"] {
        match query.get(flag) {
            Some("true" | "1") => {
                out.append_pair(flag, "true");
            }
            None | Some("" | "false" | "0") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for {flag}: {other}"
                )))
            }
        }
    }
    let int = |field: &str| -> ApiResult<Option<i64>> {
        query
            .get(field)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {field}: {v}")))
            })
            .transpose()
    };
    let since_seconds = int("sinceSeconds")?;
    let tail_lines = int("tailLines")?;
    let limit_bytes = int("limitBytes")?;
    let since_time = query.get("sinceTime").filter(|v| !v.is_empty());
    if let Some(s) = since_seconds {
        if s < 1 {
            causes.push(Cause::invalid(
                "sinceSeconds",
                s.to_string(),
                "must be greater than 0",
            ));
        }
        out.append_pair("sinceSeconds", &s.to_string());
    }
    if let Some(t) = since_time {
        if t.parse::<jiff::Timestamp>().is_err() {
            return Err(ApiError::bad_request(format!(
                "invalid value for sinceTime: {t}"
            )));
        }
        if since_seconds.is_some() {
            causes.push(Cause::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        out.append_pair("sinceTime", t);
    }
    if let Some(t) = tail_lines {
        if t < 0 {
            causes.push(Cause::invalid(
                "tailLines",
                t.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        out.append_pair("tailLines", &t.to_string());
    }
    if let Some(l) = limit_bytes {
        if l < 1 {
            causes.push(Cause::invalid(
                "limitBytes",
                l.to_string(),
                "must be greater than 0",
            ));
        }
        out.append_pair("limitBytes", &l.to_string());
    }
    if let Some(stream) = query.get("stream").filter(|v| !v.is_empty()) {
        out.append_pair("stream", stream);
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("PodLogOptions", "", name, causes));
    }
    Ok(out.finish())
}

/// Where a node's kubelet listens: `host:port`.
fn kubelet_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    let host = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))?
                .get("address")?
                .as_str()
        })?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((host, port))
}

fn plain_text(body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

/// A kubelet's error answer as the API error upstream's
/// `GenericHttpResponseChecker` makes of it.
fn kubelet_error(code: StatusCode, body: &[u8], name: &str) -> ApiError {
    let text = String::from_utf8_lossy(body).to_string();
    let details = json!({"name": name, "kind": "pods/log"});
    let mut error = match code.as_u16() {
        400 => return ApiError::bad_request(text),
        500 => return ApiError::internal(text),
        401 => ApiError::new(
            401,
            "Unauthorized",
            format!("the server has asked for the client to provide credentials ( pods/log {name})"),
        ),
        403 => ApiError::new(403, "Forbidden", text),
        404 => ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ( pods/log {name})"),
        ),
        other => ApiError::new(
            other,
            "Unknown",
            format!(
                "the server responded with the status code {other} but did not return more information ( pods/log {name})"
            ),
        ),
    };
    error.details = Some(Box::new(details));
    error
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the container's log,
/// streamed from the kubelet of the pod's node.
pub async fn pod_log(
    state: &AppState,
    namespace: Option<&str>,
    name: &str,
    query: &Query,
    headers: &http::HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> ApiResult<Response> {
    let pod = state
        .registry
        .get(&*state.registry.core("pods")?, namespace, name)
        .await?;
    let params = kubelet_query(name, query)?;
    let container = choose_container(&pod, name, query.get("container"))?;
    let node_name = node_of(&pod);
    if node_name.is_empty() {
        // Upstream answers an unscheduled pod's log with an empty body.
        return Ok(plain_text(Body::empty()));
    }
    let namespace = namespace.unwrap_or("default");
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    if !params.is_empty() {
        path.push('?');
        path.push_str(&params);
    }
    let (response, connection, url) = kubelet_get(state, node_name, &path, name).await?;
    tracing::debug!(pod = %name, %container, %url, "streaming pod log from the kubelet");
    let stream = crate::service_client::body_stream(response.into_body(), connection);
    // A WebSocket handshake gets the log as messages (upstream's "logs over websocket").
    if let (true, Some(upgrade)) = (skiff_streaming::wsstream::requested(headers), upgrade) {
        use skiff_streaming::wsstream;
        let (protocol, encoding) = wsstream::negotiate(headers);
        let accepted = wsstream::accept(headers, protocol)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        tokio::spawn(async move {
            match upgrade.await {
                Ok(client) => wsstream::send(client, stream, encoding).await,
                Err(e) => tracing::debug!(error = %e, "log over WebSocket: no upgrade"),
            }
        });
        return Ok(accepted.map(Body::from));
    }
    Ok(plain_text(Body::from_stream(stream)))
}

/// `GET path` on a node's kubelet: its successful answer (whose body is read while the
/// returned connection guard lives) and the URL asked, or the kubelet's refusal as an
/// error about `subject`.
async fn kubelet_get(
    state: &AppState,
    node_name: &str,
    path: &str,
    subject: &str,
) -> ApiResult<(http::Response<hyper::body::Incoming>, AbortOnDrop, String)> {
    let KubeletConnection {
        tls,
        authority,
        url,
    } = connect_kubelet(state, node_name, path).await?;
    let transport = |e: &dyn std::fmt::Display| ApiError::internal(format!("Get \"{url}\": {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| transport(&e))?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    }));
    let request = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(ApiError::internal)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = &body[..body.len().min(MAX_ERROR_BODY)];
        return Err(kubelet_error(status, body, subject));
    }
    Ok((response, connection, url))
}

/// `GET /api/v1/nodes/{name}/proxy/{path}`: a GET passed to the node's kubelet (its
/// Summary API, say), answered with the kubelet's body and content type.
pub async fn node_proxy(
    state: &AppState,
    spec: &str,
    path: &str,
    query: &Query,
) -> ApiResult<Response> {
    // `[scheme:]node[:port]`: the kubelet's port (or none) reaches the kubelet; another
    // port is proxied on the node's address, as upstream's node proxy does.
    let node = proxy_target(spec)?;
    let node_name = node.name;
    if !node.port.is_empty() {
        let nodes = state.registry.core("nodes")?;
        let object = state.registry.get(&nodes, None, node_name).await?;
        let (host, kubelet_port) = kubelet_address(&object)
            .ok_or_else(|| ApiError::internal(format!("node {node_name} reports no address")))?;
        if node.port != kubelet_port.to_string() {
            let port: u16 = node
                .port
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid port {:?}", node.port)))?;
            let address = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let request = Outgoing {
                method: &http::Method::GET,
                path,
                query,
                headers: &http::HeaderMap::new(),
                body: Bytes::new(),
            };
            let prefix = format!("/api/v1/nodes/{spec}/proxy");
            return relay_to(address, node.https, prefix, request).await;
        }
    }
    let mut target = path.to_string();
    let params = query.encoded();
    if !params.is_empty() {
        target.push('?');
        target.push_str(&params);
    }
    let (response, _connection, url) = kubelet_get(state, node_name, &target, node_name).await?;
    let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::internal(format!("Get \"{url}\": {e}")))?
        .to_bytes();
    if content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::proxy_links::is_html)
    {
        let links = crate::proxy_links::ProxyLinks {
            prefix: format!("/api/v1/nodes/{spec}/proxy"),
            backend: url
                .split_once("://")
                .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""))
                .to_string(),
        };
        body = Bytes::from(links.rewrite_html(&body));
    }
    let mut answer = Response::new(Body::from(body));
    if let Some(content_type) = content_type {
        answer
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type);
    }
    Ok(answer)
}

/// What a pod or Service proxy request names: `[scheme:]name[:port]`.
struct ProxyTarget<'a> {
    https: bool,
    name: &'a str,
    port: &'a str,
}

fn proxy_target(spec: &str) -> ApiResult<ProxyTarget<'_>> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid proxy target {spec:?}"
            )))
        }
    };
    if !matches!(scheme, "" | "http" | "https") {
        return Err(ApiError::bad_request(format!(
            "invalid scheme {scheme:?}: only http and https are proxied"
        )));
    }
    Ok(ProxyTarget {
        https: scheme == "https",
        name,
        port,
    })
}

/// `/api/v1/namespaces/{ns}/{pods|services}/{[scheme:]name[:port]}/proxy/{path}`: the
/// request (any method) passed to the pod's IP and port, or to a ready endpoint behind
/// the Service's port, the answer streamed back, as upstream's API server proxies them.
#[allow(clippy::too_many_arguments)]
pub async fn workload_proxy(
    state: &AppState,
    plural: &str,
    namespace: Option<&str>,
    spec: &str,
    path: &str,
    method: &http::Method,
    query: &Query,
    headers: &http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let target = proxy_target(spec)?;
    let registry = &state.registry;
    let namespace = namespace.unwrap_or("default");
    let address = if plural == "pods" {
        let pod = registry
            .get(&*registry.core("pods")?, Some(namespace), target.name)
            .await?;
        let ip = pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("pod {} has no IP address yet", target.name),
                )
            })?;
        let port = match target.port {
            // As upstream: the first port any container declares, else HTTP's.
            "" => first_container_port(&pod).unwrap_or(80),
            number if number.parse::<u16>().is_ok() => number.parse().unwrap_or(80),
            name => container_port(&pod, name).ok_or_else(|| {
                ApiError::bad_request(format!("no container port named {name:?}"))
            })?,
        };
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    } else {
        let service = registry
            .get(&*registry.core("services")?, Some(namespace), target.name)
            .await?;
        let ports = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let chosen = ports.iter().find(|p| {
            target.port.is_empty()
                || p.get("name").and_then(Value::as_str) == Some(target.port)
                || p.get("port").and_then(Value::as_i64).map(|n| n.to_string())
                    == Some(target.port.to_string())
        });
        let port = chosen
            .and_then(|p| p.get("port").and_then(Value::as_i64))
            .ok_or_else(|| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!(
                        "no service port {:?} found for service {:?}",
                        target.port, target.name
                    ),
                )
            })?;
        crate::services::resolve_endpoint(registry, namespace, target.name, port)
            .map_err(|e| ApiError::new(503, "ServiceUnavailable", e.to_string()))?
    };
    let prefix = format!("/api/v1/namespaces/{namespace}/{plural}/{spec}/proxy");
    let request = Outgoing {
        method,
        path,
        query,
        headers,
        body,
    };
    relay_to(address, target.https, prefix, request).await
}

/// A proxied request, as the client sent it.
struct Outgoing<'a> {
    method: &'a http::Method,
    path: &'a str,
    query: &'a Query,
    headers: &'a http::HeaderMap,
    body: Bytes,
}

/// Sends `request` to `address` (over TLS with `https`, the backend's certificate not
/// checked, as upstream's proxy transport does) and streams the answer back, the links
/// of an HTML answer rewritten to go through `prefix`.
async fn relay_to(
    address: String,
    https: bool,
    prefix: String,
    request: Outgoing<'_>,
) -> ApiResult<Response> {
    let unreachable = |e: String| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        )
    };
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(host, _)| host)
        .trim_matches(['[', ']'])
        .to_string();
    let (sender, connection) = if https {
        let config = crate::service_client::tls_config(&crate::service_client::Trust {
            ca_bundle: None,
            insecure: true,
            client_certificate: None,
        })
        .map_err(ApiError::internal)?;
        crate::service_client::connect(&address, &host, config).await
    } else {
        crate::service_client::connect_plain(&address).await
    }
    .map_err(unreachable)?;
    let mut target_path = request.path.to_string();
    let params = request.query.encoded();
    if !params.is_empty() {
        target_path.push('?');
        target_path.push_str(&params);
    }
    let relayed = crate::service_client::Relayed {
        method: request.method,
        target: &target_path,
        host: &address,
        headers: request.headers,
        extra: Vec::new(),
        body: request.body,
        links: Some(crate::proxy_links::ProxyLinks {
            prefix,
            backend: address.clone(),
        }),
    };
    crate::service_client::relay(sender, connection, relayed)
        .await
        .map_err(unreachable)
}

/// The first port declared by the pod's containers, in their order.
fn first_container_port(pod: &Value) -> Option<u16> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .find_map(|c| c.pointer("/ports/0/containerPort"))
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
}

/// The number of the container port named `name` in any of the pod's containers.
fn container_port(pod: &Value, name: &str) -> Option<u16> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .and_then(|n| u16::try_from(n).ok())
}

/// `GET path` on a node's kubelet, read as JSON.
pub async fn kubelet_get_json(state: &AppState, node_name: &str, path: &str) -> ApiResult<Value> {
    let (response, _connection, url) = kubelet_get(state, node_name, path, node_name).await?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::internal(format!("Get \"{url}\": {e}")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::internal(format!("Get \"{url}\": invalid JSON: {e}")))
}

/// A TLS connection to a node's kubelet, and where it goes.
struct KubeletConnection {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    authority: String,
    url: String,
}

/// Dials the kubelet of `node_name` (its address from the Node object) for `path`.
async fn connect_kubelet(
    state: &AppState,
    node_name: &str,
    path: &str,
) -> ApiResult<KubeletConnection> {
    let nodes = state.registry.core("nodes")?;
    let node = state.registry.get(&nodes, None, node_name).await?;
    let (host, port) = kubelet_address(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name} reports no address")))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let url = format!("https://{authority}{path}");
    let transport = |e: &dyn std::fmt::Display| ApiError::internal(format!("Get \"{url}\": {e}"));
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| transport(&"dial tcp: i/o timeout"))?
    .map_err(|e| transport(&format!("dial tcp {authority}: {e}")))?;
    let server_name = ServerName::try_from(host.clone()).map_err(|e| transport(&e))?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        state.kubelet.connector.connect(server_name, tcp),
    )
    .await
    .map_err(|_| transport(&"net/http: TLS handshake timeout"))?
    .map_err(|e| transport(&e))?;
    Ok(KubeletConnection {
        tls,
        authority,
        url,
    })
}

/// `GET|POST /api/v1/namespaces/{ns}/pods/{name}/exec` (a command) and `…/attach` (the
/// container's own process, `attach: true`): the client's WebSocket, passed through the
/// kubelet of the pod's node to the container runtime.
pub async fn pod_exec(
    state: &AppState,
    namespace: Option<&str>,
    name: &str,
    query: &Query,
    headers: &http::HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    attach: bool,
) -> ApiResult<Response> {
    let pods = state.registry.core("pods")?;
    let pod = state.registry.get(&pods, namespace, name).await?;
    let commands: Vec<&str> = query.all("command");
    if commands.is_empty() && !attach {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let flag = |name: &str| matches!(query.get(name), Some("true" | "1"));
    if !(flag("stdin") || flag("stdout") || flag("stderr")) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let container = choose_container(&pod, name, query.get("container"))?;
    let node_name = node_of(&pod);
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node_name.is_empty() || matches!(phase, "Succeeded" | "Failed") {
        let action = if attach { "attach to" } else { "exec into" };
        return Err(ApiError::bad_request(format!(
            "cannot {action} a container in a completed pod; current phase is {phase}"
        )));
    }
    let upgrade = upgrade_required(
        upgrade,
        if attach {
            "attach streams"
        } else {
            "exec streams"
        },
    )?;
    let namespace = namespace.unwrap_or("default");
    let params = {
        let mut params = form_urlencoded::Serializer::new(String::new());
        for command in &commands {
            params.append_pair("command", command);
        }
        for stream in ["stdin", "stdout", "stderr", "tty"] {
            if flag(stream) {
                params.append_pair(stream, "true");
            }
        }
        params.finish()
    };
    let kind = if attach { "attach" } else { "exec" };
    let path = format!("/{kind}/{namespace}/{name}/{container}?{params}");
    upgrade_through_kubelet(state, node_name, name, &path, headers, upgrade).await
}

/// `GET|POST /api/v1/namespaces/{ns}/pods/{name}/portforward`: the client's SPDY
/// connection, passed through the kubelet of the pod's node to the container runtime.
pub async fn pod_port_forward(
    state: &AppState,
    namespace: Option<&str>,
    name: &str,
    query: &Query,
    headers: &http::HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> ApiResult<Response> {
    let pods = state.registry.core("pods")?;
    let pod = state.registry.get(&pods, namespace, name).await?;
    for port in query.all("ports") {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid port {port:?}: ports must be between 1 and 65535"
                )))
            }
        }
    }
    let node_name = node_of(&pod);
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let upgrade = upgrade_required(upgrade, "port forwarding streams")?;
    let namespace = namespace.unwrap_or("default");
    let params = {
        let mut params = form_urlencoded::Serializer::new(String::new());
        for port in query.all("ports") {
            params.append_pair("ports", port);
        }
        params.finish()
    };
    let path = format!("/portForward/{namespace}/{name}?{params}");
    upgrade_through_kubelet(state, node_name, name, &path, headers, upgrade).await
}

fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Streaming subresources answer only an upgrade request.
fn upgrade_required(
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    what: &str,
) -> ApiResult<hyper::upgrade::OnUpgrade> {
    upgrade.ok_or_else(|| {
        ApiError::bad_request(format!(
            "Upgrade request required: {what} over a WebSocket (or SPDY) connection"
        ))
    })
}

/// Passes the client's upgrade request to `path` on the node's kubelet and, once the
/// kubelet switches protocols, splices the two connections. A port forward whose SPDY
/// session comes tunnelled in a WebSocket is unwrapped here: the kubelet gets a plain
/// SPDY upgrade, and the session's bytes move between WebSocket messages and it.
async fn upgrade_through_kubelet(
    state: &AppState,
    node_name: &str,
    pod_name: &str,
    path: &str,
    headers: &http::HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
) -> ApiResult<Response> {
    use skiff_streaming::{proxy, tunnel};
    let tunnelled = tunnel::requested(headers);
    if !tunnelled && !proxy::is_upgrade(headers) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let KubeletConnection {
        tls,
        authority,
        url,
    } = connect_kubelet(state, node_name, path).await?;
    let (method, forwarded) = if tunnelled {
        (http::Method::POST, tunnel::spdy_request_headers(headers))
    } else {
        (http::Method::GET, headers.clone())
    };
    let (response, backend) = proxy::handshake(&method, &forwarded, tls, &authority, path)
        .await
        .map_err(|e| ApiError::internal(format!("Get \"{url}\": {e}")))?;
    let Some(backend) = backend else {
        let (parts, body) = response.into_parts();
        return Err(kubelet_error(parts.status, &body, pod_name));
    };
    if !tunnelled {
        proxy::splice(upgrade, backend);
        return Ok(response.map(Body::from));
    }
    let accepted = tunnel::accept(headers).map_err(|e| ApiError::bad_request(e.to_string()))?;
    tokio::spawn(async move {
        match tokio::try_join!(upgrade, backend) {
            Ok((client, backend)) => tunnel::bridge(client, backend).await,
            Err(e) => tracing::debug!(error = %e, "port forward tunnel: a side did not upgrade"),
        }
    });
    Ok(accepted.map(Body::from))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proxy_targets_name_scheme_pod_and_port() {
        let plain = proxy_target("web").unwrap();
        assert_eq!((plain.https, plain.name, plain.port), (false, "web", ""));
        let port = proxy_target("web:8080").unwrap();
        assert_eq!((port.https, port.name, port.port), (false, "web", "8080"));
        let tls = proxy_target("https:web:metrics").unwrap();
        assert_eq!((tls.https, tls.name, tls.port), (true, "web", "metrics"));
        assert!(proxy_target("ftp:web:21").is_err());
        let pod = serde_json::json!({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(container_port(&pod, "http"), Some(8080));
        assert_eq!(container_port(&pod, "dns"), None);
        assert_eq!(first_container_port(&pod), Some(8080));
        let portless = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "ports": [{"containerPort": 9090}, {"containerPort": 9091}]}]}});
        assert_eq!(first_container_port(&portless), Some(9090));
        assert_eq!(
            first_container_port(&serde_json::json!({"spec": {"containers": [{"name": "a"}]}})),
            None
        );
    }

    #[test]
    fn picks_the_container_as_upstream() {
        let pod = json!({"spec": {"initContainers": [{"name": "i"}],
                                  "containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(choose_container(&pod, "p", Some("b")).unwrap(), "b");
        assert_eq!(choose_container(&pod, "p", Some("i")).unwrap(), "i");
        assert_eq!(
            choose_container(&pod, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        assert_eq!(
            choose_container(&pod, "p", Some("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        let one = json!({"spec": {"containers": [{"name": "c"}]}});
        assert_eq!(choose_container(&one, "p", None).unwrap(), "c");
    }

    #[test]
    fn finds_the_kubelet() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"},
                          {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(kubelet_address(&node), Some(("10.0.0.5".into(), 12345)));
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(kubelet_address(&bare), Some(("n1".into(), 10250)));
    }
}
