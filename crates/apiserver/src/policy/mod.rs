//! Admission policies: CEL in the API server where a webhook would otherwise be called, as
//! upstream's ValidatingAdmissionPolicy and MutatingAdmissionPolicy plugins run them.
//!
//! Both kinds share how a policy reaches a write, here: a binding names its policy (and
//! may narrow it with its own `matchResources` and pick a parameter object through
//! `paramRef`); the policy's `matchConstraints` select the request; each selected
//! policy, binding and parameter is an [`Invocation`], whose expressions see `object`,
//! `oldObject`, `request`, `params`, `namespaceObject` and `variables` ([`Scope`]) and
//! run only if its `matchConditions` hold. What a policy then does is its kind's:
//! [`validating`] judges the object, [`mutating`] changes it ([`patch`] applies its
//! results).

pub mod mutating;
mod patch;
pub mod validating;

use serde_json::{json, Map, Value};

use crate::expressions::Expression;
use crate::registry::Registry;
use crate::status::{ApiResult, Cause};
use crate::webhooks::{rule_matches, selectors_match, Request};

fn items(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Where one kind of policy and its bindings are stored.
#[derive(Clone, Copy)]
struct Kind {
    policies: &'static str,
    bindings: &'static str,
}

const VALIDATING: Kind = Kind {
    policies: "validatingadmissionpolicies",
    bindings: "validatingadmissionpolicybindings",
};

const MUTATING: Kind = Kind {
    policies: "mutatingadmissionpolicies",
    bindings: "mutatingadmissionpolicybindings",
};

/// A policy bound to the request by one binding: the parameter objects it is evaluated
/// with (one invocation each; `null` when the policy takes none), or why they could not
/// be found, which fails the request as the policy's `failurePolicy` says.
struct Bound {
    policy: Value,
    binding: Value,
    params: Result<Vec<Value>, String>,
}

/// Whether match resources (a policy's constraints or a binding's narrowing) select the
/// request: its resource rules (minus the excluded ones) and selectors.
fn resources_match(
    registry: &Registry,
    resources: &Value,
    request: &Request<'_>,
) -> ApiResult<bool> {
    let rules: Vec<&Value> = items(resources.get("resourceRules")).collect();
    if !rules.is_empty() && !rules.iter().any(|r| rule_matches(r, request)) {
        return Ok(false);
    }
    if items(resources.get("excludeResourceRules")).any(|r| rule_matches(r, request)) {
        return Ok(false);
    }
    selectors_match(registry, resources, request)
}

/// The policies of `kind` bound to the request, in the order of their bindings' names.
fn bound(registry: &Registry, kind: Kind, request: &Request<'_>) -> ApiResult<Vec<Bound>> {
    if crate::webhooks::exempt(request.resource) {
        return Ok(Vec::new());
    }
    let bindings = registry
        .cache
        .snapshot(&format!("/registry/{}/", kind.bindings), None)
        .objects;
    let mut selected = Vec::new();
    for binding in bindings.iter().filter_map(|o| o.value().ok()) {
        let policy_name = binding
            .pointer("/spec/policyName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(policy) = registry
            .cache
            .get(&format!("/registry/{}/{policy_name}", kind.policies))
            .and_then(|o| o.value().ok())
        else {
            continue;
        };
        let constraints = policy
            .pointer("/spec/matchConstraints")
            .cloned()
            .unwrap_or(json!({}));
        if !resources_match(registry, &constraints, request)? {
            continue;
        }
        if let Some(narrowing) = binding.pointer("/spec/matchResources") {
            if !resources_match(registry, narrowing, request)? {
                continue;
            }
        }
        let params = params(registry, &policy, &binding, request);
        selected.push(Bound {
            policy,
            binding,
            params,
        });
    }
    Ok(selected)
}

/// The parameter objects a binding picks for its policy, as upstream collects them: none
/// needed (`[null]`), the one `paramRef.name` names, or those `paramRef.selector` selects;
/// when none is found, no invocation (`Allow`) or an error (`Deny`).
fn params(
    registry: &Registry,
    policy: &Value,
    binding: &Value,
    request: &Request<'_>,
) -> Result<Vec<Value>, String> {
    let (Some(kind), Some(reference)) = (
        policy.pointer("/spec/paramKind"),
        binding.pointer("/spec/paramRef"),
    ) else {
        return Ok(vec![Value::Null]);
    };
    let (group, version) = match text(kind, "apiVersion").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), text(kind, "apiVersion").to_string()),
    };
    let resource = registry
        .catalogue
        .all()
        .into_iter()
        .find(|r| r.group == group && r.version == version && r.kind == text(kind, "kind"))
        .ok_or_else(|| {
            format!(
                "paramKind kind `{}, Kind={}` not known",
                text(kind, "apiVersion"),
                text(kind, "kind")
            )
        })?;
    let namespace = match text(reference, "namespace") {
        "" if resource.namespaced => match request.namespace.filter(|_| request.resource.namespaced) {
            Some(ns) => Some(ns.to_string()),
            None => {
                return Err("cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".to_string())
            }
        },
        "" => None,
        _ if !resource.namespaced => {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
                    .to_string(),
            )
        }
        ns => Some(ns.to_string()),
    };
    let found: Vec<Value> = match (text(reference, "name"), reference.get("selector")) {
        ("", Some(selector)) => {
            let selector =
                crate::selectors::LabelSelector::from_object(selector).map_err(|e| e.message)?;
            registry
                .cache
                .snapshot(&resource.key_prefix(namespace.as_deref()), None)
                .objects
                .iter()
                .filter_map(|o| o.value().ok())
                .filter(|o| selector.matches(&crate::object::labels(o)))
                .collect()
        }
        ("", None) => return Err("one of name or selector must be provided".to_string()),
        (name, _) => registry
            .cache
            .get(&resource.key(namespace.as_deref(), name))
            .and_then(|o| o.value().ok())
            .into_iter()
            .collect(),
    };
    if found.is_empty() && text(reference, "parameterNotFoundAction") == "Deny" {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".to_string(),
        );
    }
    Ok(found)
}

/// The variables one invocation's expressions see. `variables` are computed in order once
/// the invocation is selected; one that fails is an error only for the expressions that
/// use it, as upstream evaluates variables lazily.
struct Scope {
    object: Value,
    old_object: Value,
    request: Value,
    params: Value,
    namespace_object: Value,
    variables: Value,
    failed: Vec<(String, String)>,
}

impl Scope {
    fn new(review: &Value, params: Value, namespace_object: Value) -> Self {
        Scope {
            object: review["object"].clone(),
            old_object: review["oldObject"].clone(),
            request: review.clone(),
            params,
            namespace_object,
            variables: Value::Object(Map::new()),
            failed: Vec::new(),
        }
    }

    /// The object as a mutation left it, for the next one.
    fn set_object(&mut self, object: &Value) {
        self.object = object.clone();
        self.request["object"] = object.clone();
    }

    /// Runs a compiled expression (its `source` tells which variables it uses).
    fn run(&self, expression: &Expression, source: &str) -> Result<cel::Value, String> {
        for (name, error) in &self.failed {
            if source.contains(&format!("variables.{name}")) {
                return Err(error.clone());
            }
        }
        expression.run(&[
            ("object", &self.object),
            ("oldObject", &self.old_object),
            ("request", &self.request),
            ("params", &self.params),
            ("namespaceObject", &self.namespace_object),
            ("variables", &self.variables),
        ])
    }

    /// Runs an expression of the standard environment.
    fn evaluate(&self, source: &str) -> Result<cel::Value, String> {
        self.run(&*crate::expressions::compile(source)?, source)
    }

    /// Computes the policy's `variables`.
    fn compute_variables(&mut self, policy: &Value) {
        for variable in items(policy.pointer("/spec/variables")) {
            let name = text(variable, "name").to_string();
            let value = self
                .evaluate(text(variable, "expression"))
                .and_then(|v| crate::expressions::to_json(&v));
            match value {
                Ok(value) => {
                    if let Some(map) = self.variables.as_object_mut() {
                        map.insert(name, value);
                    }
                }
                Err(error) => self
                    .failed
                    .push((name.clone(), format!("variable {name:?}: {error}"))),
            }
        }
    }

    /// Whether the policy's `matchConditions` hold.
    fn conditions_hold(&self, policy: &Value) -> Result<bool, String> {
        crate::webhooks::conditions_hold(policy.pointer("/spec/matchConditions"), |source| {
            self.evaluate(source)
        })
    }
}

/// The namespace object the expressions of a namespaced request see.
fn namespace_object(registry: &Registry, request: &Request<'_>) -> Value {
    request
        .namespace
        .filter(|_| request.resource.namespaced)
        .and_then(|ns| registry.cache.get(&format!("/registry/namespaces/{ns}")))
        .and_then(|o| o.value().ok())
        .unwrap_or(Value::Null)
}

/// Whether a policy's errors are ignored (`failurePolicy: Ignore`; `Fail` by default).
fn ignores_failures(policy: &Value) -> bool {
    policy
        .pointer("/spec/failurePolicy")
        .and_then(Value::as_str)
        == Some("Ignore")
}

/// Upstream's validation of what both kinds of policies hold: `failurePolicy`,
/// `paramKind`, `matchConstraints` (with at least one rule, of the `operations` given),
/// `matchConditions` and `variables` (which must compile).
fn validate_policy_spec(spec: Option<&Value>, operations: &[&str], causes: &mut Vec<Cause>) {
    let get = |field: &str| spec.and_then(|s| s.get(field));
    match get("failurePolicy").and_then(Value::as_str) {
        Some("Fail" | "Ignore") | None => {}
        Some(other) => causes.push(Cause::unsupported(
            "spec.failurePolicy",
            other,
            &["Fail", "Ignore"],
        )),
    }
    if let Some(kind) = get("paramKind") {
        if text(kind, "apiVersion").is_empty() {
            causes.push(Cause::required("spec.paramKind.apiVersion"));
        }
        if text(kind, "kind").is_empty() {
            causes.push(Cause::required("spec.paramKind.kind"));
        }
    }
    match get("matchConstraints") {
        None => causes.push(Cause::required("spec.matchConstraints")),
        Some(constraints) => {
            validate_match_resources(constraints, "spec.matchConstraints", operations, causes);
            if items(constraints.get("resourceRules")).next().is_none() {
                causes.push(Cause::required("spec.matchConstraints.resourceRules"));
            }
        }
    }
    for (i, condition) in items(get("matchConditions")).enumerate() {
        let path = format!("spec.matchConditions[{i}]");
        if text(condition, "name").is_empty() {
            causes.push(Cause::required(format!("{path}.name")));
        }
        compiles(
            format!("{path}.expression"),
            text(condition, "expression"),
            causes,
        );
    }
    for (i, variable) in items(get("variables")).enumerate() {
        let path = format!("spec.variables[{i}]");
        if text(variable, "name").trim().is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: name is not specified".into(),
                field: format!("{path}.name"),
            });
        }
        compiles(
            format!("{path}.expression"),
            text(variable, "expression"),
            causes,
        );
    }
}

/// Upstream's check of an expression (of a policy or a webhook's condition): present,
/// and compiling.
pub(crate) fn compiles(path: String, source: &str, causes: &mut Vec<Cause>) {
    compiles_with(path, source, crate::expressions::compile, causes)
}

fn compiles_with<T>(
    path: String,
    source: &str,
    compile: impl Fn(&str) -> Result<T, String>,
    causes: &mut Vec<Cause>,
) {
    if source.trim().is_empty() {
        causes.push(Cause::required(path));
    } else if let Err(e) = compile(source) {
        causes.push(Cause::invalid(
            path,
            source,
            &format!("compilation failed: {e}"),
        ));
    }
}

/// Upstream's validation of match resources: the match policy, and each rule's operations
/// (among `operations`: a mutating policy cannot match `DELETE`).
fn validate_match_resources(
    resources: &Value,
    path: &str,
    operations: &[&str],
    causes: &mut Vec<Cause>,
) {
    if let Some(policy) = resources.get("matchPolicy").and_then(Value::as_str) {
        if !matches!(policy, "Exact" | "Equivalent") {
            causes.push(Cause::unsupported(
                format!("{path}.matchPolicy"),
                policy,
                &["Equivalent", "Exact"],
            ));
        }
    }
    for (i, rule) in items(resources.get("resourceRules")).enumerate() {
        let rule_path = format!("{path}.resourceRules[{i}]");
        let ops: Vec<&str> = items(rule.get("operations"))
            .filter_map(Value::as_str)
            .collect();
        if ops.is_empty() {
            causes.push(Cause::required(format!("{rule_path}.operations")));
        }
        for op in ops {
            if !operations.contains(&op) {
                causes.push(Cause::unsupported(
                    format!("{path}.resourceRules.operations"),
                    op,
                    operations,
                ));
            }
        }
    }
}

/// Upstream's validation of what both kinds of bindings hold: the policy's name, the
/// parameter reference and the narrowing match resources.
fn validate_binding_spec(binding: &Value, operations: &[&str], causes: &mut Vec<Cause>) {
    if binding
        .pointer("/spec/policyName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(Cause::required("spec.policyName"));
    }
    if let Some(reference) = binding.pointer("/spec/paramRef") {
        let named = !text(reference, "name").is_empty();
        let selected = reference.get("selector").is_some();
        if named && selected {
            causes.push(Cause::forbidden(
                "spec.paramRef.name",
                "name and selector are mutually exclusive",
            ));
        }
        if !named && !selected {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: one of name or selector must be specified".into(),
                field: "spec.paramRef".into(),
            });
        }
        match text(reference, "parameterNotFoundAction") {
            "" => causes.push(Cause::required("spec.paramRef.parameterNotFoundAction")),
            "Deny" | "Allow" => {}
            other => causes.push(Cause::unsupported(
                "spec.paramRef.parameterNotFoundAction",
                other,
                &["Deny", "Allow"],
            )),
        }
    }
    if let Some(resources) = binding.pointer("/spec/matchResources") {
        validate_match_resources(resources, "spec.matchResources", operations, causes);
    }
}

/// The operations a validating policy may match.
const ALL_OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
/// The operations a mutating policy may match: no `DELETE`, there is nothing to change.
const MUTATING_OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "UPDATE"];
