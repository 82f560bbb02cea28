//! Dynamic admission through webhooks, as upstream's MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook plugins call them: for each write, the webhooks of the
//! stored `MutatingWebhookConfiguration`s (in name order), then of the
//! `ValidatingWebhookConfiguration`s, whose rules, namespace and object selectors and
//! CEL `matchConditions` select it, get an `admission.k8s.io/v1` `AdmissionReview` over
//! HTTPS (verified against the configuration's `caBundle`), within its `timeoutSeconds`.
//! A mutating webhook's JSON patch changes the object; a refusal is the request's answer
//! (`admission webhook "x" denied the request: …`); a webhook that cannot be called fails
//! the request or is ignored, as its `failurePolicy` says.
//!
//! The webhook configurations themselves (and admission policies) are never sent to
//! webhooks, so that a broken webhook can always be removed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::registry::Registry;
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, ApiResult, Cause};

/// What an admission request is about.
pub struct Request<'a> {
    pub resource: &'a ResourceInfo,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
}

/// Resources no webhook (or admission policy) sees.
pub(crate) fn exempt(resource: &ResourceInfo) -> bool {
    resource.group == "admissionregistration.k8s.io"
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether one of a webhook's (or policy's) `rules` covers the request.
pub(crate) fn rule_matches(rule: &Value, request: &Request<'_>) -> bool {
    let has = |field: &str, wanted: &str| {
        strings(rule.get(field))
            .iter()
            .any(|v| *v == "*" || *v == wanted)
    };
    let resource = &request.resource.plural;
    let resources_ok = strings(rule.get("resources"))
        .iter()
        .any(|r| match request.subresource {
            None => *r == "*" || r == resource || *r == "*/*",
            Some(sub) => {
                *r == "*/*"
                    || *r == format!("{resource}/{sub}")
                    || *r == format!("{resource}/*")
                    || *r == format!("*/{sub}")
            }
        });
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !request.resource.namespaced,
        "Namespaced" => request.resource.namespaced,
        _ => true,
    };
    has("operations", request.operation)
        && has("apiGroups", &request.resource.group)
        && has("apiVersions", &request.resource.version)
        && resources_ok
        && scope_ok
}

fn selector_matches(
    selector: Option<&Value>,
    labels: &std::collections::BTreeMap<String, String>,
) -> ApiResult<bool> {
    match selector {
        None => Ok(true),
        Some(s) => Ok(LabelSelector::from_object(s)?.matches(labels)),
    }
}

/// The labels a webhook's `namespaceSelector` is matched against: the namespace's (a
/// Namespace's own); cluster-scoped objects always match.
pub(crate) fn namespace_labels(
    registry: &Registry,
    request: &Request<'_>,
) -> Option<std::collections::BTreeMap<String, String>> {
    if request.resource.builtin_kind() == "Namespace" {
        return request
            .object
            .or(request.old_object)
            .map(crate::object::labels);
    }
    let namespace = request.namespace.filter(|_| request.resource.namespaced)?;
    let stored = registry
        .cache
        .get(&format!("/registry/namespaces/{namespace}"))
        .and_then(|o| o.value().ok());
    Some(
        stored
            .map(|n| crate::object::labels(&n))
            .unwrap_or_default(),
    )
}

fn selects(registry: &Registry, webhook: &Value, request: &Request<'_>) -> ApiResult<bool> {
    let rules = webhook.get("rules").and_then(Value::as_array);
    if !rules.is_some_and(|rules| rules.iter().any(|r| rule_matches(r, request))) {
        return Ok(false);
    }
    selectors_match(registry, webhook, request)
}

/// Whether the `namespaceSelector` and `objectSelector` of `spec` (a webhook, or a
/// policy's match resources) select the request.
pub(crate) fn selectors_match(
    registry: &Registry,
    spec: &Value,
    request: &Request<'_>,
) -> ApiResult<bool> {
    if let Some(labels) = namespace_labels(registry, request) {
        if !selector_matches(spec.get("namespaceSelector"), &labels)? {
            return Ok(false);
        }
    }
    let object_selector = spec.get("objectSelector");
    let object_ok = [request.object, request.old_object]
        .into_iter()
        .flatten()
        .map(|o| selector_matches(object_selector, &crate::object::labels(o)))
        .collect::<ApiResult<Vec<bool>>>()?
        .into_iter()
        .any(|matched| matched);
    Ok(object_ok || (request.object.is_none() && request.old_object.is_none()))
}

/// The `request` part of the AdmissionReview (also CEL's `request`).
pub(crate) fn review_request(request: &Request<'_>, uid: &str, user: Option<&UserInfo>) -> Value {
    let resource = request.resource;
    let kind = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
    let gvr =
        json!({"group": resource.group, "version": resource.version, "resource": resource.plural});
    let mut body = json!({
        "uid": uid,
        "kind": kind,
        "resource": gvr,
        "requestKind": kind,
        "requestResource": gvr,
        "name": request.name,
        "operation": request.operation,
        "object": request.object.cloned().unwrap_or(Value::Null),
        "oldObject": request.old_object.cloned().unwrap_or(Value::Null),
        "dryRun": request.dry_run,
    });
    if let Some(sub) = request.subresource {
        body["subResource"] = json!(sub);
        body["requestSubResource"] = json!(sub);
    }
    if let Some(ns) = request.namespace.filter(|_| resource.namespaced) {
        body["namespace"] = json!(ns);
    }
    if let Some(user) = user {
        body["userInfo"] = json!({"username": user.name, "uid": user.uid, "groups": user.groups});
    }
    body
}

/// Whether `matchConditions` (a webhook's or an admission policy's) all hold, each
/// expression run by `evaluate` (which binds what the caller's expressions see). A
/// condition that fails to evaluate is the caller's error.
pub(crate) fn conditions_hold(
    conditions: Option<&Value>,
    evaluate: impl Fn(&str) -> Result<cel::Value, String>,
) -> Result<bool, String> {
    for condition in conditions.and_then(Value::as_array).into_iter().flatten() {
        let expression = condition
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or("");
        match evaluate(expression)? {
            cel::Value::Bool(true) => {}
            cel::Value::Bool(false) => return Ok(false),
            other => {
                return Err(format!(
                    "expression {expression:?} gave {other:?}, not a bool"
                ))
            }
        }
    }
    Ok(true)
}

/// Why a call failed, in upstream's words.
fn call_failure(name: &str, error: impl std::fmt::Display) -> String {
    format!("failed calling webhook \"{name}\": {error}")
}

/// Where and how to reach a webhook.
pub(crate) struct Target {
    host: String,
    address: String,
    path: String,
    ca_bundle: Option<Vec<u8>>,
}

pub(crate) fn target(registry: &Registry, name: &str, config: &Value) -> Result<Target, String> {
    use base64::Engine;
    let ca_bundle = config
        .get("caBundle")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty())
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
        .transpose()
        .map_err(|e| call_failure(name, format!("caBundle is not base64: {e}")))?;
    if let Some(url) = config.get("url").and_then(Value::as_str) {
        let uri: http::Uri = url.parse().map_err(|e| call_failure(name, e))?;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        return Ok(Target {
            host,
            address,
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string()),
            ca_bundle,
        });
    }
    let service = config
        .get("service")
        .ok_or_else(|| call_failure(name, "no url and no service"))?;
    let service_name = service
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = service
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let port = service.get("port").and_then(Value::as_i64).unwrap_or(443);
    let path = service
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let address = crate::services::resolve_endpoint(registry, namespace, service_name, port)
        .map_err(|e| call_failure(name, e))?;
    Ok(Target {
        host: format!("{service_name}.{namespace}.svc"),
        address,
        path,
        ca_bundle,
    })
}

/// Posts the review to the webhook and returns its answer's `response`.
pub(crate) async fn call(
    target: &Target,
    review: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    // Without a caBundle nothing is trusted (Skiff ships no system roots): such a
    // webhook fails to be called, and says so.
    let config = crate::service_client::tls_config(&crate::service_client::Trust {
        ca_bundle: target.ca_bundle.as_deref(),
        insecure: false,
        client_certificate: None,
    })?;
    let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
    let exchange = async {
        let (mut sender, _connection) =
            crate::service_client::connect(&target.address, &target.host, config)
                .await
                .map_err(|e| format!("Post \"https://{}{}\": {e}", target.host, target.path))?;
        let request = http::Request::post(&target.path)
            .header(http::header::HOST, &target.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let (status, bytes) = crate::service_client::exchange(&mut sender, request).await?;
        if !status.is_success() {
            return Err(format!("the server responded with {status}"));
        }
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| format!("bad AdmissionReview answer: {e}"))
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            format!(
                "Post \"https://{}{}\": context deadline exceeded",
                target.host, target.path
            )
        })??;
    answer
        .get("response")
        .cloned()
        .ok_or_else(|| "the AdmissionReview answer has no response".to_string())
}

/// Which webhooks of which configurations apply.
fn configurations(registry: &Registry, kind: &str) -> Vec<Value> {
    registry
        .cache
        .snapshot(&format!("/registry/{kind}/"), None)
        .objects
        .iter()
        .filter_map(|o| o.value().ok())
        .collect()
}

/// Calls one webhook; `Ok(None)` when it does not apply or was ignored after a failure.
async fn review(
    registry: &Registry,
    webhook: &Value,
    request: &Request<'_>,
) -> ApiResult<Option<Value>> {
    let name = webhook
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !selects(registry, webhook, request)? {
        return Ok(None);
    }
    let ignore = webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
    let fail = |message: String| -> ApiResult<Option<Value>> {
        if ignore {
            tracing::warn!(webhook = name, %message, "webhook failed; ignored by its failurePolicy");
            Ok(None)
        } else {
            Err(ApiError::internal(message))
        }
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let user = crate::warnings::user_info();
    let body = review_request(request, &uid, user.as_ref());
    let vars = [
        ("object", &body["object"]),
        ("oldObject", &body["oldObject"]),
        ("request", &body),
    ];
    let evaluate = |source: &str| crate::expressions::compile(source)?.run(&vars);
    match conditions_hold(webhook.get("matchConditions"), evaluate) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return fail(call_failure(name, format!("matchConditions: {e}"))),
    }
    if request.dry_run
        && !matches!(
            webhook.get("sideEffects").and_then(Value::as_str),
            Some("None" | "NoneOnDryRun")
        )
    {
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{name}\" does not support dry run"
        )));
    }
    let config = webhook.get("clientConfig").cloned().unwrap_or(Value::Null);
    let target = match target(registry, name, &config) {
        Ok(target) => target,
        Err(message) => return fail(message),
    };
    let seconds = webhook
        .get("timeoutSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(10);
    let review_body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": body,
    });
    let response = match call(&target, &review_body, Duration::from_secs(seconds)).await {
        Ok(response) => response,
        Err(message) => return fail(call_failure(name, message)),
    };
    if response.get("uid").and_then(Value::as_str) != Some(uid.as_str()) {
        return fail(call_failure(
            name,
            format!(
                "expected response.uid=\"{uid}\", got {:?}",
                response.get("uid")
            ),
        ));
    }
    for warning in response
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        crate::warnings::add(warning);
    }
    if response.get("allowed").and_then(Value::as_bool) != Some(true) {
        let status = response.get("status").cloned().unwrap_or(Value::Null);
        let code = status
            .get("code")
            .and_then(Value::as_u64)
            .filter(|c| *c >= 400)
            .unwrap_or(400) as u16;
        let message = match status.get("message").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => {
                format!("admission webhook \"{name}\" denied the request: {m}")
            }
            _ => format!("admission webhook \"{name}\" denied the request without explanation"),
        };
        let reason = match status.get("reason").and_then(Value::as_str) {
            Some("Forbidden") | None if code == 403 => "Forbidden",
            _ if code == 422 => "Invalid",
            _ => "BadRequest",
        };
        return Err(ApiError::new(code, reason, message));
    }
    Ok(Some(response))
}

/// What one admission remembers between the mutating webhooks' first pass and their
/// reinvocation (upstream's webhook reinvocation context): a webhook with
/// `reinvocationPolicy: IfNeeded` is called once more when a later webhook, or a later
/// admission plugin, changed the object after it ran.
#[derive(Default)]
pub struct Reinvocation {
    /// The `IfNeeded` webhooks called in the first pass, in order (configuration/webhook).
    invoked: Vec<String>,
    /// Those to call again.
    reinvoke: BTreeSet<String>,
    /// The object as the webhooks' first pass left it.
    last_output: Option<Value>,
}

impl Reinvocation {
    /// Whether any webhook is to be called again, given the object now.
    pub fn wanted(&self, object: &Value) -> bool {
        !self.reinvoke.is_empty()
            || (!self.invoked.is_empty() && self.last_output.as_ref() != Some(object))
    }
}

/// The mutating webhooks, in configuration name order, each patching the object; with
/// `only`, just those (the reinvocation pass, which asks for no further reinvocation).
async fn run_mutating(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
    only: Option<&BTreeSet<String>>,
) -> ApiResult<()> {
    if exempt(request.resource) {
        return Ok(());
    }
    for configuration in configurations(registry, "mutatingwebhookconfigurations") {
        let configuration_name = crate::object::name(&configuration).to_string();
        for webhook in configuration
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = webhook
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key = format!("{configuration_name}/{name}");
            if only.is_some_and(|only| !only.contains(&key)) {
                continue;
            }
            let current = Request {
                object: Some(&*object),
                ..*request
            };
            let Some(response) = review(registry, webhook, &current).await? else {
                continue;
            };
            if let Some(patch) = response.get("patch").and_then(Value::as_str) {
                use base64::Engine;
                let patch = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .map_err(|e| {
                        ApiError::internal(call_failure(name, format!("patch is not base64: {e}")))
                    })?;
                let patched = crate::patch::apply(
                    crate::patch::PatchType::Json,
                    object,
                    &patch,
                    crate::schema::Structure::of(request.resource),
                )
                .map_err(|e| {
                    ApiError::internal(call_failure(
                        name,
                        format!("applying its patch: {}", e.message),
                    ))
                })?;
                if patched != *object && only.is_none() {
                    // Every IfNeeded webhook called before this one saw another object.
                    state.reinvoke.extend(state.invoked.iter().cloned());
                }
                *object = patched;
            }
            let if_needed =
                webhook.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded");
            if if_needed && only.is_none() {
                state.invoked.push(key);
            }
        }
    }
    if only.is_none() {
        state.last_output = Some(object.clone());
    }
    Ok(())
}

/// The mutating webhooks' first pass.
pub async fn mutate(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
) -> ApiResult<()> {
    run_mutating(registry, request, object, state, None).await
}

/// The reinvocation pass: the `IfNeeded` webhooks that ran before a later change, once.
pub async fn reinvoke(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
) -> ApiResult<()> {
    if state.last_output.as_ref() != Some(object) {
        // Changed after the webhooks (by a reinvoked admission policy): all of them.
        state.reinvoke.extend(state.invoked.iter().cloned());
    }
    let again = std::mem::take(&mut state.reinvoke);
    if again.is_empty() {
        return Ok(());
    }
    run_mutating(registry, request, object, state, Some(&again)).await
}

/// The validating webhooks: any may refuse.
pub async fn validate(registry: &Registry, request: &Request<'_>) -> ApiResult<()> {
    if exempt(request.resource) {
        return Ok(());
    }
    for configuration in configurations(registry, "validatingwebhookconfigurations") {
        for webhook in configuration
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            review(registry, webhook, request).await?;
        }
    }
    Ok(())
}

/// Whether any webhook configuration of `kind` is stored.
fn any_configured(registry: &Registry, kind: &str) -> bool {
    !registry
        .cache
        .snapshot(&format!("/registry/{kind}/"), None)
        .objects
        .is_empty()
}

/// Runs `work` to completion from synchronous code on a runtime thread, which waits for
/// it. Only a multi-threaded runtime can lend a thread so; on another, the write fails
/// rather than the server stopping.
pub(crate) fn wait_for<T>(work: impl std::future::Future<Output = ApiResult<T>>) -> ApiResult<T> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| ApiError::internal("admission webhooks need the server's runtime"))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(ApiError::internal(
            "admission webhooks need a multi-threaded runtime",
        ));
    }
    tokio::task::block_in_place(|| handle.block_on(work))
}

/// [`mutate`] from inside the registry's synchronous read-modify-write step (webhooks are
/// remote calls): the step's thread waits, and only when a webhook is configured.
pub fn mutate_in_place(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
) -> ApiResult<()> {
    if exempt(request.resource) || !any_configured(registry, "mutatingwebhookconfigurations") {
        return Ok(());
    }
    wait_for(mutate(registry, request, object, state))
}

/// [`reinvoke`] from inside the registry's synchronous steps.
pub fn reinvoke_in_place(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
) -> ApiResult<()> {
    if !state.wanted(object) {
        return Ok(());
    }
    wait_for(reinvoke(registry, request, object, state))
}

/// [`validate`] from inside the registry's synchronous read-modify-write step.
pub fn validate_in_place(registry: &Registry, request: &Request<'_>) -> ApiResult<()> {
    if exempt(request.resource) || !any_configured(registry, "validatingwebhookconfigurations") {
        return Ok(());
    }
    wait_for(validate(registry, request))
}

/// Upstream's validation of webhook configurations: the causes for one.
pub fn validate_configuration(configuration: &Value, mutating: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    let webhooks = configuration.get("webhooks").and_then(Value::as_array);
    for (i, webhook) in webhooks.into_iter().flatten().enumerate() {
        let path = format!("webhooks[{i}]");
        let name = webhook
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(format!("{path}.name")));
        } else if name.split('.').count() < 3 || !crate::strategy::is_dns1123_subdomain(name) {
            causes.push(Cause::invalid(
                format!("{path}.name"),
                name,
                "should be a domain with at least three segments separated by dots",
            ));
        } else if !names.insert(name) {
            causes.push(Cause::duplicate(format!("{path}.name"), name));
        }
        match webhook.get("sideEffects").and_then(Value::as_str) {
            None => causes.push(Cause::required(format!("{path}.sideEffects"))),
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => causes.push(Cause::unsupported(
                format!("{path}.sideEffects"),
                other,
                &["None", "NoneOnDryRun"],
            )),
        }
        let versions = strings(webhook.get("admissionReviewVersions"));
        if versions.is_empty() {
            causes.push(Cause::required(format!("{path}.admissionReviewVersions")));
        } else if !versions.iter().any(|v| *v == "v1" || *v == "v1beta1") {
            causes.push(Cause::invalid(
                format!("{path}.admissionReviewVersions"),
                versions.join(","),
                "must include at least one of v1, v1beta1",
            ));
        }
        let client = webhook.get("clientConfig");
        let (url, service) = (
            client.and_then(|c| c.get("url")),
            client.and_then(|c| c.get("service")),
        );
        match (url, service) {
            (Some(_), Some(_)) => causes.push(Cause::required(format!(
                "{path}.clientConfig: exactly one of url or service is required"
            ))),
            (None, None) => causes.push(Cause::required(format!("{path}.clientConfig"))),
            (Some(url), None) => {
                let url = url.as_str().unwrap_or_default();
                if !url.starts_with("https://") {
                    causes.push(Cause::invalid(
                        format!("{path}.clientConfig.url"),
                        url,
                        "'https' is the only allowed URL scheme",
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(seconds) = webhook.get("timeoutSeconds").and_then(Value::as_i64) {
            if !(1..=30).contains(&seconds) {
                causes.push(Cause::invalid(
                    format!("{path}.timeoutSeconds"),
                    seconds,
                    "the timeout value must be between 1 and 30 seconds",
                ));
            }
        }
        let conditions = webhook.get("matchConditions").and_then(Value::as_array);
        for (j, condition) in conditions.into_iter().flatten().enumerate() {
            let expression = condition
                .get("expression")
                .and_then(Value::as_str)
                .unwrap_or("");
            crate::policy::compiles(
                format!("{path}.matchConditions[{j}].expression"),
                expression,
                &mut causes,
            );
        }
        if mutating {
            if let Some(policy) = webhook.get("reinvocationPolicy").and_then(Value::as_str) {
                if !matches!(policy, "Never" | "IfNeeded") {
                    causes.push(Cause::unsupported(
                        format!("{path}.reinvocationPolicy"),
                        policy,
                        &["IfNeeded", "Never"],
                    ));
                }
            }
        }
    }
    causes
}
