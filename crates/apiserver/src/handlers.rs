//! HTTP handlers: turn a request path into a resource operation and its result into the
//! response upstream would send.
//!
//! Paths have Kubernetes' shape, which a router's patterns express poorly
//! (`/api/v1/namespaces/x` is an object, `/api/v1/namespaces/x/pods` a collection), so
//! one handler parses them into a [`ResourcePath`] and dispatches on method and shape.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::authz::rbac::{self, Authorizer};
use crate::authz::{review, Attributes};
use crate::convert;
use crate::discovery;
use crate::encoding::{self, Format};
use crate::object;
use crate::openapi;
use crate::patch::PatchType;
use crate::registry::{DeleteOptions, ListOptions, ListPage, Patch, Registry};
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, Cause};
use crate::table;
use crate::watch::{self, WatchRequest};

pub struct AppState {
    pub registry: Arc<Registry>,
    /// `host:port` clients reach this server at, for `/api`'s address list.
    pub server_address: String,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub signer: Arc<crate::tokens::TokenSigner>,
    /// How `pods/log` reaches kubelets.
    pub kubelet: Arc<crate::proxy::KubeletClient>,
    /// Who a token is (for `TokenReview`): the same authenticator requests pass.
    pub authenticator: Arc<crate::server::Authenticator>,
    /// The OpenAPI documents of the catalogue as it stands.
    pub openapi: Arc<openapi::Documents>,
    /// Where remote APIServices' requests go.
    pub aggregator: Arc<crate::aggregator::Aggregator>,
}

/// A request path that names resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/api/v1/watch/...` form.
    pub legacy_watch: bool,
    /// For the `proxy` subresource: the path after it (`/stats/summary`; `/` for
    /// `proxy/`; `None` for `proxy` itself, which upstream redirects to `proxy/`).
    pub proxy_path: Option<String>,
    /// The request's path, as sent.
    pub path: String,
}

impl ResourcePath {
    /// Parses `/api/v1/...` and `/apis/<group>/<version>/...`; `None` for other paths.
    pub fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, mut rest) = match segments.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            _ => return None,
        };
        let legacy_watch = rest.first() == Some(&"watch");
        if legacy_watch {
            rest = &rest[1..];
        }
        let (namespace, rest): (Option<&str>, &[&str]) = match rest {
            ["namespaces", ns, tail @ ..]
                if !tail.is_empty() && !matches!(tail, ["status" | "finalize"]) =>
            {
                (Some(*ns), tail)
            }
            other => (None, other),
        };
        let (resource, name, subresource, proxy_path) = match rest {
            [resource] => (*resource, None, None, None),
            [resource, name] => (*resource, Some(*name), None, None),
            [resource, name, sub] => {
                let proxied_root = *sub == "proxy" && path.ends_with('/');
                (
                    *resource,
                    Some(*name),
                    Some(*sub),
                    proxied_root.then(|| "/".to_string()),
                )
            }
            [resource, name, "proxy", tail @ ..] => (
                *resource,
                Some(*name),
                Some("proxy"),
                // A trailing slash is kept, as upstream's proxy keeps it: `logs/` is
                // the kubelet's listing, `logs` a redirect to it.
                Some(match tail.join("/") {
                    joined if !joined.is_empty() && path.ends_with('/') => format!("/{joined}/"),
                    joined => format!("/{joined}"),
                }),
            ),
            _ => return None,
        };
        if resource.is_empty() || name == Some("") {
            return None;
        }
        Some(ResourcePath {
            group: group.to_string(),
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            resource: resource.to_string(),
            name: name.map(str::to_string),
            subresource: subresource.map(str::to_string),
            legacy_watch,
            proxy_path,
            path: path.to_string(),
        })
    }
}

/// The query parameters of a request.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(uri: &Uri) -> Self {
        Query(
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`command=sh&command=-c`).
    /// The parameters encoded again, to pass on.
    pub fn encoded(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.0 {
            out.append_pair(key, value);
        }
        out.finish()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun value: {other}; the only valid value is All"
            ))),
        }
    }

    /// The field manager a write is recorded under (`fieldManager`, else from the
    /// User-Agent).
    /// `options` names the request's options kind (`CreateOptions`, `UpdateOptions`) for
    /// the error a bad `fieldManager` gets.
    fn manager(&self, headers: &HeaderMap, options: &str) -> ApiResult<String> {
        let causes = crate::managedfields::check_manager(self.get("fieldManager").unwrap_or(""));
        if !causes.is_empty() {
            return Err(ApiError::invalid(options, "meta.k8s.io", "", causes));
        }
        Ok(self.unchecked_manager(headers))
    }

    fn unchecked_manager(&self, headers: &HeaderMap) -> String {
        let user_agent = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        crate::managedfields::manager_name(self.get("fieldManager"), user_agent)
    }

    /// A PATCH's manager and `force`, checked as upstream checks `PatchOptions`.
    fn patch_options(
        &self,
        patch_type: PatchType,
        headers: &HeaderMap,
    ) -> ApiResult<(String, bool)> {
        let force =
            match self.get("force") {
                None | Some("") => None,
                Some(value) => Some(value.parse::<bool>().map_err(|_| {
                    ApiError::bad_request(format!("invalid value for force: {value}"))
                })?),
            };
        let mut causes =
            crate::managedfields::check_manager(self.get("fieldManager").unwrap_or(""));
        if patch_type == PatchType::Apply {
            if self.get("fieldManager").is_none_or(str::is_empty) {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: is required for apply patch".into(),
                    field: "fieldManager".into(),
                });
            }
        } else if force.is_some() {
            causes.push(Cause::forbidden(
                "force",
                "may not be specified for non-apply patch",
            ));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("PatchOptions", "meta.k8s.io", "", causes));
        }
        Ok((self.unchecked_manager(headers), force.unwrap_or(false)))
    }

    fn int(&self, name: &str) -> ApiResult<Option<i64>> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v}")))
            })
            .transpose()
    }

    fn list_options(&self) -> ApiResult<ListOptions> {
        Ok(ListOptions {
            label_selector: LabelSelector::parse(self.get("labelSelector").unwrap_or(""))?,
            field_selector: FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))?,
            limit: self.int("limit")?.unwrap_or(0).max(0) as usize,
            continue_token: self
                .get("continue")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            resource_version: self.get("resourceVersion").map(str::to_string),
            resource_version_match: self
                .get("resourceVersionMatch")
                .filter(|m| !m.is_empty())
                .map(str::to_string),
        })
    }
}

/// The single entry point for everything under `/api` and `/apis`, plus discovery.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<UserInfo>>,
    upgrade: Option<Extension<hyper::upgrade::OnUpgrade>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let path = uri.path().to_string();
    let query = Query::parse(&uri);
    let user = match user.map(|Extension(u)| impersonate(&state, u, &headers)) {
        Some(Ok(user)) => user,
        Some(Err(e)) => return e.into_response(),
        // Only the public paths let anonymous requests through authentication.
        None if crate::auth::is_public(&path) => UserInfo::anonymous(),
        None => return ApiError::unauthorized().into_response(),
    };
    let target = ResourcePath::parse(&path);
    let (response, resource) = match (state.aggregator.remote_for(&path), target) {
        (Some(remote), target) => {
            let resource = target
                .as_ref()
                .map(|t| t.resource.clone())
                .unwrap_or_default();
            let response = forward_to_remote(
                &state, &user, &remote, target, &method, &uri, &query, &headers, body,
            )
            .await
            .unwrap_or_else(IntoResponse::into_response);
            (response, resource)
        }
        (None, Some(target)) => {
            let resource = target.resource.clone();
            let upgrade = upgrade.map(|Extension(upgrade)| upgrade);
            let response = crate::warnings::acting_as(
                user.clone(),
                handle_resource(
                    &state, &user, &method, target, &query, &headers, body, upgrade,
                ),
            )
            .await
            .unwrap_or_else(IntoResponse::into_response);
            (response, resource)
        }
        (None, None) => {
            let request = Attributes {
                verb: method.as_str().to_lowercase(),
                path: path.clone(),
                ..Default::default()
            };
            let response = match authorize(&state, &user, &request) {
                Ok(()) => handle_discovery(&state, &method, &path, &query, &headers),
                Err(e) => Err(e),
            };
            (
                response.unwrap_or_else(IntoResponse::into_response),
                String::new(),
            )
        }
    };
    state.metrics.observe(
        method.as_str(),
        &resource,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// What authorization decides a request for a resource path on.
fn resource_attributes(method: &Method, target: &ResourcePath, query: &Query) -> Attributes {
    let watching = target.legacy_watch || query.flag("watch");
    Attributes {
        verb: verb_of(method, target, watching).to_string(),
        api_group: target.group.clone(),
        resource: target.resource.clone(),
        subresource: target.subresource.clone().unwrap_or_default(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
        resource_request: true,
        field_selector: query.get("fieldSelector").unwrap_or_default().to_string(),
        ..Default::default()
    }
}

/// A request for a group version a remote APIService serves: authorized here as any
/// request (a resource request when the path names one), then passed on.
#[allow(clippy::too_many_arguments)]
async fn forward_to_remote(
    state: &AppState,
    user: &UserInfo,
    remote: &crate::aggregator::Remote,
    target: Option<ResourcePath>,
    method: &Method,
    uri: &Uri,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let request = match target {
        Some(target) => resource_attributes(method, &target, query),
        None => Attributes {
            verb: method.as_str().to_lowercase(),
            path: uri.path().to_string(),
            ..Default::default()
        },
    };
    authorize(state, user, &request)?;
    crate::aggregator::proxy::forward(&state.aggregator, remote, user, method, uri, headers, body)
        .await
}

pub(crate) fn authorize(state: &AppState, user: &UserInfo, request: &Attributes) -> ApiResult<()> {
    let authorizer = Authorizer {
        cache: &state.registry.cache,
    };
    let decision = authorizer.decide(user, request);
    match &decision {
        Ok(()) => crate::audit::note_decision(true, ""),
        Err(reason) => crate::audit::note_decision(false, reason.as_deref().unwrap_or_default()),
    }
    decision.map_err(|reason| ApiError::forbidden_because(request, user, reason.as_deref()))
}

/// Applies `Impersonate-User`/`-Group`/`-Uid` headers, each checked with the
/// `impersonate` verb as upstream checks them.
fn impersonate(state: &AppState, user: UserInfo, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let header = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let Some(name) = header("impersonate-user").into_iter().next() else {
        if header("impersonate-group").is_empty() {
            return Ok(user);
        }
        return Err(ApiError::bad_request(
            "requested [Impersonate-Group] without impersonating a user",
        ));
    };
    let groups = header("impersonate-group");
    let mut checks = Vec::new();
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((namespace, sa)) => {
            checks.push(("serviceaccounts", namespace.to_string(), sa.to_string()))
        }
        None => checks.push(("users", String::new(), name.clone())),
    }
    checks.extend(groups.iter().map(|g| ("groups", String::new(), g.clone())));
    for uid in header("impersonate-uid") {
        checks.push(("uids", String::new(), uid));
    }
    for (resource, namespace, target) in checks {
        let request = Attributes {
            verb: "impersonate".into(),
            api_group: if resource == "uids" {
                "authentication.k8s.io".into()
            } else {
                String::new()
            },
            resource: resource.into(),
            namespace,
            name: target,
            resource_request: true,
            ..Default::default()
        };
        authorize(state, &user, &request)?;
    }
    let mut groups = groups;
    if name.starts_with("system:serviceaccount:") {
        groups.push("system:serviceaccounts".into());
        if let Some(namespace) = name.split(':').nth(2) {
            groups.push(format!("system:serviceaccounts:{namespace}"));
        }
    }
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name,
        uid: header("impersonate-uid")
            .into_iter()
            .next()
            .unwrap_or_default(),
        groups,
    })
}

/// The RBAC verb of a resource request.
pub(crate) fn verb_of(method: &Method, target: &ResourcePath, watching: bool) -> &'static str {
    // Streaming into a pod needs `create`, whether the WebSocket handshake came as a
    // GET or (SPDY) as a POST, as upstream requires since WebSockets became the default.
    if matches!(
        target.subresource.as_deref(),
        Some("exec" | "attach" | "portforward")
    ) {
        return "create";
    }
    match (method.as_str(), target.name.is_some()) {
        ("GET" | "HEAD", _) if watching => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn handle_discovery(
    state: &AppState,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if method != Method::GET {
        return Err(ApiError::no_route());
    }
    let catalogue = &state.registry.catalogue;
    let aggregated = encoding::wants_aggregated_discovery(headers);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let value = match segments.as_slice() {
        ["version"] => discovery::version(),
        ["api"] if aggregated => {
            return Ok(aggregated_response(discovery::aggregated(
                catalogue,
                true,
                &[],
            )))
        }
        ["apis"] if aggregated => {
            let remote = state.aggregator.remote_groups(catalogue);
            return Ok(aggregated_response(discovery::aggregated(
                catalogue, false, &remote,
            )));
        }
        ["api"] => discovery::api_versions(&state.server_address),
        ["apis"] => {
            discovery::api_group_list(catalogue, &state.aggregator.remote_groups(catalogue))
        }
        ["api", version] => {
            discovery::api_resource_list(catalogue, "", version).ok_or_else(ApiError::no_route)?
        }
        ["apis", group] => {
            discovery::api_group(catalogue, &state.aggregator.remote_groups(catalogue), group)
                .ok_or_else(ApiError::no_route)?
        }
        ["apis", group, version] => discovery::api_resource_list(catalogue, group, version)
            .ok_or_else(ApiError::no_route)?,
        ["openapi", "v2"] => return Ok(openapi::serve_v2(&state.openapi.get(catalogue), headers)),
        ["openapi", "v3"] => {
            let api = state.openapi.get(catalogue);
            return Ok(openapi::serve(
                &api.v3_index,
                encoding::JSON,
                None,
                path,
                headers,
            ));
        }
        ["openapi", "v3", rest @ ..] => {
            // kubectl asks for JSON; the protobuf form of these documents is not served.
            let api = state.openapi.get(catalogue);
            let document = api.v3.get(&rest.join("/")).ok_or_else(ApiError::no_route)?;
            return Ok(openapi::serve(
                document,
                encoding::JSON,
                query.get("hash"),
                path,
                headers,
            ));
        }
        _ => return Err(ApiError::no_route()),
    };
    Ok(encoding::respond(StatusCode::OK, Format::Json, &value))
}

fn aggregated_response(value: Value) -> Response {
    let mut response = encoding::respond(StatusCode::OK, Format::Json, &value);
    if let Ok(content_type) = http::HeaderValue::from_str(discovery::AGGREGATED_CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type);
    }
    response
}

/// A GET or HEAD of `…/proxy` without a path: upstream's proxy answers `301` to `…/proxy/`
/// (the query kept), so that relative links in the page resolve below the proxy.
fn redirect_to_proxied_root(path: &str, query: &Query) -> Response {
    let params = query.encoded();
    let location = if params.is_empty() {
        format!("{path}/")
    } else {
        format!("{path}/?{params}")
    };
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(location) = http::HeaderValue::from_str(&location) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    response
}

fn lookup(state: &AppState, target: &ResourcePath) -> ApiResult<Arc<ResourceInfo>> {
    let resource = state
        .registry
        .catalogue
        .get(&target.group, &target.version, &target.resource)
        .ok_or_else(ApiError::no_route)?;
    if target.namespace.is_some() && !resource.namespaced {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = &target.subresource {
        if !resource.has_subresource(sub) {
            return Err(ApiError::no_route());
        }
    }
    Ok(resource)
}

#[allow(clippy::too_many_arguments)]
async fn handle_resource(
    state: &AppState,
    user: &UserInfo,
    method: &Method,
    target: ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> ApiResult<Response> {
    let resource = lookup(state, &target)?;
    let watching = target.legacy_watch || query.flag("watch");
    authorize(state, user, &resource_attributes(method, &target, query))?;
    if let Some(warning) = resource
        .custom
        .as_ref()
        .and_then(|c| c.deprecation.as_ref())
    {
        crate::warnings::add(warning.clone());
    }
    let registry = state.registry.as_ref();
    let namespace = target.namespace.as_deref();
    let sub = target.subresource.as_deref();
    if resource.create_only && (*method != Method::POST || target.name.is_some()) {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    if resource.metrics {
        if *method != Method::GET || watching || sub.is_some() {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        let selector = query.list_options()?.label_selector;
        let value = crate::metrics_api::serve(
            state,
            &resource,
            namespace,
            target.name.as_deref(),
            selector,
        )
        .await?;
        return Ok(encoding::respond(StatusCode::OK, Format::Json, &value));
    }
    let protobuf_ok = skiff_protobuf::supports(&resource.api_version(), &resource.kind);
    match (method.clone(), target.name.as_deref()) {
        (Method::GET | Method::HEAD, Some(_))
            if sub == Some("proxy") && target.proxy_path.is_none() =>
        {
            Ok(redirect_to_proxied_root(&target.path, query))
        }
        (_, Some(name))
            if sub == Some("proxy") && matches!(resource.plural.as_str(), "pods" | "services") =>
        {
            let path = target.proxy_path.as_deref().unwrap_or("/");
            crate::proxy::workload_proxy(
                state,
                &resource.plural,
                namespace,
                name,
                path,
                method,
                query,
                headers,
                body,
            )
            .await
        }
        (Method::GET, None) if watching => {
            serve_watch(state, resource, namespace, None, query, headers).await
        }
        (Method::GET, Some(name)) if watching => {
            serve_watch(state, resource, namespace, Some(name), query, headers).await
        }
        (Method::GET, Some(name)) if sub == Some("log") => {
            crate::proxy::pod_log(state, namespace, name, query, headers, upgrade).await
        }
        (Method::GET | Method::POST, Some(name)) if matches!(sub, Some("exec" | "attach")) => {
            let attach = sub == Some("attach");
            crate::proxy::pod_exec(state, namespace, name, query, headers, upgrade, attach).await
        }
        (Method::GET, Some(name)) if sub == Some("proxy") && resource.plural == "nodes" => {
            let path = target.proxy_path.as_deref().unwrap_or("/");
            crate::proxy::node_proxy(state, name, path, query).await
        }
        (Method::GET | Method::POST, Some(name)) if sub == Some("portforward") => {
            crate::proxy::pod_port_forward(state, namespace, name, query, headers, upgrade).await
        }
        (Method::GET, None) => {
            let format = encoding::negotiate(headers, protobuf_ok)?;
            let page = registry
                .list(&resource, namespace, &query.list_options()?)
                .await?;
            render_list(registry, &resource, page, format, query)
        }
        (Method::GET, Some(name)) => {
            let format = encoding::negotiate(headers, protobuf_ok)?;
            let object = registry.get(&resource, namespace, name).await?;
            let object = convert::from_storage(registry, &resource, object)?;
            match sub {
                Some("scale") => {
                    // Upstream reads no Scale from a custom object without replicas.
                    let paths = resource.custom.as_ref().and_then(|c| c.scale.as_ref());
                    if let Some(path) = paths.map(|p| &p.spec_replicas) {
                        if crate::crd::jsonpath::get(&object, path).is_none() {
                            return Err(ApiError::internal(format!(
                                "the spec replicas field {} does not exist",
                                crate::status::quote(path)
                            )));
                        }
                    }
                    Ok(encoding::respond(
                        StatusCode::OK,
                        format,
                        &scale_of(&resource, &object),
                    ))
                }
                _ => Ok(render_object(
                    &resource,
                    StatusCode::OK,
                    format,
                    object,
                    query,
                )),
            }
        }
        (Method::POST, None) => {
            let format = encoding::negotiate_as(headers, protobuf_ok, !resource.ephemeral)?;
            let mut object = encoding::decode_body(headers, &body)?;
            if resource.builtin_kind() == "TokenReview" {
                let review = state.authenticator.token_review(object);
                return Ok(encoding::respond(StatusCode::CREATED, format, &review));
            }
            if resource.ephemeral {
                let authorizer = Authorizer {
                    cache: &registry.cache,
                };
                let review = review::answer(&authorizer, &resource, namespace, user, object)?;
                return Ok(encoding::respond(StatusCode::CREATED, format, &review));
            }
            check_escalation(state, user, &resource, namespace, &object)?;
            if resource.custom.as_ref().is_some_and(|c| c.terminating) {
                return Err(ApiError::method_not_allowed(
                    "create not allowed while custom resource definition is terminating",
                ));
            }
            check_fields(&resource, &mut object, headers, &body, query)?;
            if resource.plural == "bindings" {
                let name = object::name(&object).to_string();
                return bind(state, namespace, &name, &object, query).await;
            }
            let manager = query.manager(headers, "CreateOptions")?;
            let created = registry
                .create(&resource, namespace, object, &manager, query.dry_run()?)
                .await?;
            let created = convert::from_storage(registry, &resource, created)?;
            Ok(render_object(
                &resource,
                StatusCode::CREATED,
                format,
                created,
                query,
            ))
        }
        (Method::POST, Some(name)) if sub == Some("token") => {
            let format = encoding::negotiate(headers, false)?;
            let request = encoding::decode_body(headers, &body)?;
            let account = registry.get(&resource, namespace, name).await?;
            let bound = match request.pointer("/spec/boundObjectRef") {
                Some(reference) => Some(bound_object(state, namespace, reference).await?),
                None => None,
            };
            let bound = bound.as_ref().map(|(kind, object)| (*kind, object));
            crate::noderestriction::admit_token(&resource, name, bound)?;
            let answer = crate::tokens::issue(&state.signer, &account, bound, request)?;
            Ok(encoding::respond(StatusCode::CREATED, format, &answer))
        }
        (Method::POST, Some(name)) if sub == Some("eviction") => {
            let format = encoding::negotiate(headers, true)?;
            let eviction = encoding::decode_body(headers, &body)?;
            crate::eviction::evict(
                registry,
                namespace.unwrap_or("default"),
                name,
                &eviction,
                query.dry_run()?,
            )
            .await?;
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            Ok(encoding::respond(StatusCode::CREATED, format, &status))
        }
        (Method::POST, Some(name)) if sub == Some("binding") => {
            let object = encoding::decode_body(headers, &body)?;
            bind(state, namespace, name, &object, query).await
        }
        (Method::PUT, Some(name)) => {
            let format = encoding::negotiate(headers, protobuf_ok)?;
            let mut object = encoding::decode_body(headers, &body)?;
            let dry_run = query.dry_run()?;
            let manager = query.manager(headers, "UpdateOptions")?;
            if sub != Some("scale") {
                check_fields(&resource, &mut object, headers, &body, query)?;
            }
            if sub == Some("scale") {
                let scale = write_scale(
                    registry, &resource, namespace, name, &object, &manager, dry_run,
                )
                .await?;
                return Ok(encoding::respond(StatusCode::OK, format, &scale));
            }
            let (object, created) = registry
                .update(&resource, namespace, name, sub, object, &manager, dry_run)
                .await?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(render_object(
                &resource,
                code,
                format,
                convert::from_storage(registry, &resource, object)?,
                query,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let format = encoding::negotiate(headers, protobuf_ok)?;
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let patch_type = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            if resource.custom.is_some() && patch_type == PatchType::StrategicMerge {
                // Custom resources have no patch strategies to merge by.
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let dry_run = query.dry_run()?;
            let (manager, force) = query.patch_options(patch_type, headers)?;
            if resource.group == "rbac.authorization.k8s.io" {
                // The escalation check needs the object the patch would produce; the
                // registry re-applies the patch to whatever is current when it writes.
                let current = match registry.get(&resource, namespace, name).await {
                    // An apply may create the object.
                    Err(e) if e.code == 404 && patch_type == PatchType::Apply => json!({}),
                    other => other?,
                };
                let preview = crate::patch::apply(
                    patch_type,
                    &current,
                    &body,
                    crate::schema::Structure::of(&resource),
                )?;
                check_escalation(state, user, &resource, namespace, &preview)?;
            }
            if sub == Some("scale") {
                let current = convert::from_storage(
                    registry,
                    &resource,
                    registry.get(&resource, namespace, name).await?,
                )?;
                let mut patched = crate::patch::apply(
                    patch_type,
                    &scale_of(&resource, &current),
                    &body,
                    crate::schema::Structure::builtin("autoscaling", "v1", "Scale"),
                )?;
                // The Scale the patch applies to carries the current resourceVersion; only
                // one the patch itself changed is a precondition (upstream retries a patch
                // on conflict), so a controller's write in between does not refuse it.
                if object::meta_str(&patched, "resourceVersion")
                    == object::meta_str(&current, "resourceVersion")
                {
                    if let Some(meta) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.shift_remove("resourceVersion");
                    }
                }
                let scale = write_scale(
                    registry, &resource, namespace, name, &patched, &manager, dry_run,
                )
                .await?;
                return Ok(encoding::respond(StatusCode::OK, format, &scale));
            }
            let patch = Patch {
                patch_type,
                body: &body,
                manager: &manager,
                force,
                via: None,
                field_validation: query.get("fieldValidation").unwrap_or(""),
            };
            let (object, created) = registry
                .patch(&resource, namespace, name, sub, patch, dry_run)
                .await?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(render_object(
                &resource,
                code,
                format,
                convert::from_storage(registry, &resource, object)?,
                query,
            ))
        }
        (Method::DELETE, Some(name)) if sub.is_none() => {
            let format = encoding::negotiate(headers, protobuf_ok)?;
            let options = delete_options(headers, &body, query)?;
            let dry_run = query.dry_run()? || options.dry_run.iter().any(|d| d == "All");
            let (object, gone) = registry
                .delete(&resource, namespace, name, &options, dry_run)
                .await?;
            let object = convert::from_storage(registry, &resource, object)?;
            if resource.returns_deleted_object || !gone {
                return Ok(render_object(
                    &resource,
                    StatusCode::OK,
                    format,
                    object,
                    query,
                ));
            }
            let mut details = serde_json::Map::new();
            details.insert("name".into(), json!(name));
            if !resource.group.is_empty() {
                details.insert("group".into(), json!(resource.group));
            }
            details.insert("kind".into(), json!(resource.plural));
            if let Some(uid) = object::meta_str(&object, "uid") {
                details.insert("uid".into(), json!(uid));
            }
            let status = json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            });
            Ok(encoding::respond(StatusCode::OK, Format::Json, &status))
        }
        (Method::DELETE, None) => {
            let format = encoding::negotiate(headers, protobuf_ok)?;
            let options = delete_options(headers, &body, query)?;
            let dry_run = query.dry_run()? || options.dry_run.iter().any(|d| d == "All");
            let (rv, deleted) = registry
                .delete_collection(
                    &resource,
                    namespace,
                    &query.list_options()?,
                    &options,
                    dry_run,
                )
                .await?;
            let items: Vec<Value> = deleted
                .into_iter()
                .map(|o| convert::from_storage(registry, &resource, o))
                .collect::<ApiResult<_>>()?;
            let list = json!({
                "kind": resource.list_kind(),
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            });
            Ok(encoding::respond(StatusCode::OK, format, &list))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// RBAC's escalation check: a Role or ClusterRole may only hold rules its writer holds,
/// and a binding may only grant a role whose rules its writer holds, unless the writer
/// has `escalate` (roles) or `bind` (bindings) on it.
/// The request's `fieldValidation` applied to the object it writes: a custom object's
/// against its CRD's schema, a built-in one's against its kind's (and its JSON body
/// for repeated fields), whose unknown fields are dropped.
fn check_fields(
    resource: &ResourceInfo,
    object: &mut Value,
    headers: &HeaderMap,
    body: &[u8],
    query: &Query,
) -> ApiResult<()> {
    let mode = query.get("fieldValidation").unwrap_or("");
    crate::crd::check_unknown_fields(resource, object, mode)?;
    let json = encoding::body_is_json(headers);
    if json || encoding::body_is_yaml(headers) {
        crate::field_validation::check(resource, object, body, json, mode)?;
    }
    Ok(())
}

fn check_escalation(
    state: &AppState,
    user: &UserInfo,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    object: &Value,
) -> ApiResult<()> {
    if resource.group != "rbac.authorization.k8s.io"
        || user.groups.iter().any(|g| g == "system:masters")
    {
        return Ok(());
    }
    let authorizer = Authorizer {
        cache: &state.registry.cache,
    };
    let namespace = namespace.unwrap_or("");
    let (wanted, shortcut_verb, role_resource, role_name) = match resource.builtin_kind() {
        "Role" | "ClusterRole" => (
            rbac::rules_of(object),
            "escalate",
            resource.plural.to_string(),
            object::name(object).to_string(),
        ),
        "RoleBinding" | "ClusterRoleBinding" => {
            let kind = object
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = object
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let rules = if kind == "Role" {
                state
                    .registry
                    .cache
                    .get(&format!("/registry/roles/{namespace}/{name}"))
                    .and_then(|o| o.value().ok())
                    .map(|role| rbac::rules_of(&role))
                    .unwrap_or_default()
            } else {
                authorizer.cluster_role_rules(name)
            };
            let plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            (rules, "bind", plural.to_string(), name.to_string())
        }
        _ => return Ok(()),
    };
    let shortcut = Attributes {
        verb: shortcut_verb.into(),
        api_group: "rbac.authorization.k8s.io".into(),
        resource: role_resource,
        namespace: namespace.to_string(),
        name: role_name,
        resource_request: true,
        ..Default::default()
    };
    if authorizer.allows(user, &shortcut) {
        return Ok(());
    }
    let held = authorizer.rules_for(user, namespace);
    let missing: Vec<&rbac::Rule> = wanted.iter().filter(|r| !rbac::covers(&held, r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let name = object::name(object);
    let mut error = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{}.rbac.authorization.k8s.io {} is forbidden: user {} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            resource.plural,
            crate::status::quote(name),
            crate::status::quote(&user.name),
            user.groups,
            missing
                .iter()
                .map(|r| format!("{{APIGroups:{:?}, Resources:{:?}, Verbs:{:?}}}", r.api_groups, r.resources, r.verbs))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    error.details = Some(Box::new(
        json!({"name": name, "group": "rbac.authorization.k8s.io", "kind": resource.plural}),
    ));
    Err(error)
}

/// The object a token is bound to, which must exist (with the uid given, if any).
async fn bound_object(
    state: &AppState,
    namespace: Option<&str>,
    reference: &Value,
) -> ApiResult<(&'static str, Value)> {
    let kind = reference.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
    let (claim, plural) = match kind {
        "Pod" => ("pod", "pods"),
        "Secret" => ("secret", "secrets"),
        other => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {other}"
            )))
        }
    };
    let resource = state
        .registry
        .catalogue
        .get("", "v1", plural)
        .ok_or_else(|| ApiError::internal("core resources missing"))?;
    let object = state.registry.get(&resource, namespace, name).await?;
    if let Some(uid) = reference.get("uid").and_then(Value::as_str) {
        if object::meta_str(&object, "uid") != Some(uid) {
            return Err(ApiError::conflict(
                &resource,
                name,
                &format!("the UID in the bound object reference ({uid}) does not match the UID in record"),
            ));
        }
    }
    Ok((claim, object))
}

async fn bind(
    state: &AppState,
    namespace: Option<&str>,
    name: &str,
    binding: &Value,
    query: &Query,
) -> ApiResult<Response> {
    let pods = state.registry.core("pods")?;
    state
        .registry
        .bind(
            &pods,
            namespace.unwrap_or("default"),
            name,
            binding,
            query.dry_run()?,
        )
        .await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(encoding::respond(
        StatusCode::CREATED,
        Format::Json,
        &status,
    ))
}

fn delete_options(headers: &HeaderMap, body: &[u8], query: &Query) -> ApiResult<DeleteOptions> {
    let mut options: DeleteOptions = if body.is_empty() {
        DeleteOptions::default()
    } else {
        serde_json::from_value(encoding::decode_body(headers, body)?)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if let Some(grace) = query.int("gracePeriodSeconds")? {
        options.grace_period_seconds = Some(grace);
    }
    if let Some(policy) = query.get("propagationPolicy") {
        options.propagation_policy = Some(policy.to_string());
    }
    if let Some(policy) = &options.propagation_policy {
        if !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "",
                vec![crate::status::Cause::unsupported(
                    "propagationPolicy",
                    policy,
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
    }
    Ok(options)
}

/// The `autoscaling/v1` `Scale` view of a scalable object.
fn scale_of(resource: &ResourceInfo, object: &Value) -> Value {
    if let Some(paths) = resource.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        let read = |path: &str| crate::crd::jsonpath::get(object, path).and_then(Value::as_i64);
        let selector = paths
            .label_selector
            .as_deref()
            .and_then(|p| crate::crd::jsonpath::get(object, p))
            .and_then(Value::as_str)
            .unwrap_or("");
        return scale_view(
            object,
            read(&paths.spec_replicas).unwrap_or(0),
            read(&paths.status_replicas).unwrap_or(0),
            selector,
        );
    }
    let selector = if resource.builtin_kind() == "ReplicationController" {
        let labels: Vec<String> = object::string_map(object.pointer("/spec/selector"))
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.join(",")
    } else {
        table::format_label_selector(object.pointer("/spec/selector")).replace("<none>", "")
    };
    scale_view(
        object,
        object
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        object
            .pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        &selector,
    )
}

fn scale_view(object: &Value, spec: i64, status: i64, selector: &str) -> Value {
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut scale_metadata = serde_json::Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = metadata.get(field) {
            scale_metadata.insert(field.into(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_metadata,
        "spec": {"replicas": spec},
        "status": {"replicas": status, "selector": selector},
    })
}

/// Writes a `Scale`'s replicas into the object it scales (guarded by the `Scale`'s
/// `resourceVersion`, if it names one) and answers with the new `Scale`.
async fn write_scale(
    registry: &Registry,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    scale: &Value,
    manager: &str,
    dry_run: bool,
) -> ApiResult<Value> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                "autoscaling",
                name,
                vec![crate::status::Cause::invalid(
                    "spec.replicas",
                    scale
                        .pointer("/spec/replicas")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    "must be greater than or equal to 0",
                )],
            )
        })?;
    let mut change = json!({});
    let path = resource
        .custom
        .as_ref()
        .and_then(|c| c.scale.as_ref())
        .map_or(".spec.replicas", |s| s.spec_replicas.as_str());
    crate::crd::jsonpath::set(&mut change, path, json!(replicas));
    if let Some(rv) = object::meta_str(scale, "resourceVersion").filter(|rv| !rv.is_empty()) {
        change["metadata"] = json!({"resourceVersion": rv});
    }
    let body = serde_json::to_vec(&change).map_err(ApiError::internal)?;
    let patch = Patch {
        patch_type: PatchType::Merge,
        body: &body,
        manager,
        force: false,
        via: Some("scale"),
        // The change is ours: one field, known.
        field_validation: "Ignore",
    };
    let (stored, _) = registry
        .patch(resource, namespace, name, None, patch, dry_run)
        .await?;
    Ok(scale_of(
        resource,
        &convert::from_storage(registry, resource, stored)?,
    ))
}

fn render_object(
    resource: &ResourceInfo,
    code: StatusCode,
    format: Format,
    object: Value,
    query: &Query,
) -> Response {
    match format {
        Format::Table(api_version) => {
            let table = table::table(
                api_version,
                resource,
                std::slice::from_ref(&object),
                object::meta_str(&object, "resourceVersion").map(str::to_string),
                None,
                None,
                query.get("includeObject").unwrap_or("Metadata"),
            );
            encoding::respond(code, Format::Json, &table)
        }
        Format::Metadata => {
            encoding::respond(code, Format::Json, &table::partial_metadata(&object))
        }
        other => encoding::respond(code, other, &object),
    }
}

fn list_metadata(page: &ListPage) -> Value {
    let mut metadata = serde_json::Map::new();
    metadata.insert("resourceVersion".into(), json!(page.rv.to_string()));
    if let Some(token) = &page.continue_token {
        metadata.insert("continue".into(), json!(token));
    }
    if let Some(n) = page.remaining {
        metadata.insert("remainingItemCount".into(), json!(n));
    }
    Value::Object(metadata)
}

fn render_list(
    registry: &Registry,
    resource: &ResourceInfo,
    page: ListPage,
    format: Format,
    query: &Query,
) -> ApiResult<Response> {
    let needs_values = !matches!(format, Format::Json) || convert::needs_conversion(resource);
    if !needs_values {
        // The common case: concatenate the cached JSON of the items.
        let mut out =
            Vec::with_capacity(page.items.iter().map(|i| i.body.len() + 1).sum::<usize>() + 256);
        let head = json!({
            "kind": resource.list_kind(),
            "apiVersion": resource.api_version(),
            "metadata": list_metadata(&page),
        });
        let head = serde_json::to_vec(&head).unwrap_or_default();
        out.extend_from_slice(&head[..head.len().saturating_sub(1)]);
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&item.body);
        }
        out.extend_from_slice(b"]}\n");
        return Ok(encoding::raw(
            StatusCode::OK,
            encoding::JSON,
            Bytes::from(out),
        ));
    }
    let items: Vec<Value> = page
        .items
        .iter()
        .filter_map(|item| item.value().ok())
        .map(|v| convert::from_storage(registry, resource, v))
        .collect::<ApiResult<_>>()?;
    Ok(match format {
        Format::Table(api_version) => {
            let table = table::table(
                api_version,
                resource,
                &items,
                Some(page.rv.to_string()),
                page.continue_token.clone(),
                page.remaining,
                query.get("includeObject").unwrap_or("Metadata"),
            );
            encoding::respond(StatusCode::OK, Format::Json, &table)
        }
        Format::Metadata => {
            let items: Vec<Value> = items.iter().map(table::partial_metadata).collect();
            let list = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list_metadata(&page),
                "items": items,
            });
            encoding::respond(StatusCode::OK, Format::Json, &list)
        }
        other => {
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut v| {
                    // Built-in list items leave their type to the list; custom ones
                    // (unstructured upstream) carry it.
                    if other == Format::Json && resource.custom.is_none() {
                        if let Some(fields) = v.as_object_mut() {
                            fields.shift_remove("kind");
                            fields.shift_remove("apiVersion");
                        }
                    }
                    v
                })
                .collect();
            let list = json!({
                "kind": resource.list_kind(),
                "apiVersion": resource.api_version(),
                "metadata": list_metadata(&page),
                "items": items,
            });
            encoding::respond(StatusCode::OK, other, &list)
        }
    })
}

async fn serve_watch(
    state: &AppState,
    resource: Arc<ResourceInfo>,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let mut field_selector_text = query.get("fieldSelector").unwrap_or("").to_string();
    if let Some(name) = name {
        if !field_selector_text.is_empty() {
            field_selector_text.push(',');
        }
        field_selector_text.push_str(&format!("metadata.name={name}"));
    }
    let field_selector = FieldSelector::parse(&field_selector_text)?;
    field_selector.check_supported(&crate::strategy::selectable_fields_of(&resource))?;
    let resource_version = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    // No resource version means "the current state": as fresh as the store, like a list.
    // Initial events "not older than 0" may be any state, stale included; they are made
    // as fresh as the store too, so that a client's own writes just before are in them
    // (kube-rs's streaming lists ask that way).
    let send_initial_events = query.flag("sendInitialEvents");
    let fresh_as_of = match query.get("resourceVersion") {
        None | Some("") => Some(state.registry.store.current_revision().await?),
        Some("0") if send_initial_events => Some(state.registry.store.current_revision().await?),
        _ => None,
    };
    if send_initial_events && query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![crate::status::Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let timeout = match query.int("timeoutSeconds")? {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds as u64),
        // Upstream spreads idle watches over 30–60 minutes so they do not all end at once.
        _ => Duration::from_secs(1800 + (uuid::Uuid::new_v4().as_u128() % 1800) as u64),
    };
    let protobuf = encoding::wants_protobuf_stream(headers)
        && skiff_protobuf::supports(&resource.api_version(), &resource.kind);
    let view = match encoding::negotiate(headers, false) {
        Ok(Format::Table(api_version)) => watch::WatchView::Table(
            api_version,
            query.get("includeObject").unwrap_or("Metadata").to_string(),
        ),
        Ok(Format::Metadata) => watch::WatchView::Metadata,
        _ => watch::WatchView::Object,
    };
    let request = WatchRequest {
        prefix: resource.key_prefix(namespace),
        resource,
        label_selector: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?,
        field_selector,
        resource_version,
        send_initial_events,
        allow_bookmarks: query.flag("allowWatchBookmarks"),
        timeout,
        protobuf,
        view,
        fresh_as_of,
    };
    let frames = watch::start(state.registry.clone(), request);
    let stream = tokio_stream::wrappers::ReceiverStream::new(frames);
    let body = Body::from_stream(futures::StreamExt::map(
        stream,
        Ok::<_, std::convert::Infallible>,
    ));
    let content_type = if protobuf {
        "application/vnd.kubernetes.protobuf;stream=watch"
    } else {
        "application/json"
    };
    let mut response = (StatusCode::OK, body).into_response();
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = ResourcePath::parse("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.resource, "pods");
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let ns = ResourcePath::parse("/api/v1/namespaces/foo").unwrap();
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_deref()),
            ("namespaces", Some("foo"))
        );
        let fin = ResourcePath::parse("/api/v1/namespaces/foo/finalize").unwrap();
        assert_eq!(fin.subresource.as_deref(), Some("finalize"));
        let deploys = ResourcePath::parse("/apis/apps/v1/namespaces/x/deployments").unwrap();
        assert_eq!((deploys.group.as_str(), deploys.name), ("apps", None));
        let w = ResourcePath::parse("/api/v1/watch/namespaces/x/pods").unwrap();
        assert!(w.legacy_watch);
        let proxy = ResourcePath::parse("/api/v1/nodes/n1/proxy/stats/summary").unwrap();
        assert_eq!(
            (proxy.subresource.as_deref(), proxy.proxy_path.as_deref()),
            (Some("proxy"), Some("/stats/summary"))
        );
        let logs = ResourcePath::parse("/api/v1/nodes/n1/proxy/logs/").unwrap();
        assert_eq!(logs.proxy_path.as_deref(), Some("/logs/"));
        let page = ResourcePath::parse("/api/v1/namespaces/x/pods/p/proxy/index.html").unwrap();
        assert_eq!(page.proxy_path.as_deref(), Some("/index.html"));
        // `proxy/` is the proxied root; `proxy` alone has no path (it is redirected).
        let root = ResourcePath::parse("/api/v1/namespaces/x/pods/p/proxy/").unwrap();
        assert_eq!(root.proxy_path.as_deref(), Some("/"));
        let bare = ResourcePath::parse("/api/v1/namespaces/x/pods/p/proxy").unwrap();
        assert_eq!(bare.proxy_path, None);
        let status = ResourcePath::parse("/api/v1/namespaces/x/pods/p/status/").unwrap();
        assert_eq!(status.proxy_path, None);
        assert!(ResourcePath::parse("/api/v1").is_none());
        assert!(ResourcePath::parse("/apis/apps").is_none());
    }
}
