//! ValidatingAdmissionPolicy: CEL validations in the API server, as upstream's plugin runs
//! them. A `ValidatingAdmissionPolicyBinding` applies a policy (optionally narrowed by its
//! own `matchResources`, with a parameter object from `paramRef`); for each write the
//! policy's `matchConstraints` and `matchConditions` select, its `variables` are computed
//! and its `validations` run over `object`, `oldObject`, `request`, `params`,
//! `namespaceObject` and `variables`. A failed validation is denied (`Deny`: upstream's
//! message and the validation's `reason`), warned about (`Warn`), or only recorded
//! (`Audit`), as the binding's `validationActions` say.
//!
//! Not yet: type checking of expressions (`status.typeChecking`), `auditAnnotations`.

use serde_json::{json, Map, Value};

use crate::registry::Registry;
use crate::status::{ApiError, ApiResult, Cause};
use crate::webhooks::{rule_matches, selectors_match, Request};

fn items(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
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

/// Evaluates `expression` to a value with the admission variables bound.
fn evaluate(expression: &str, vars: &[(&str, &Value)]) -> Result<cel::Value, String> {
    let program = crate::crd::cel::compile(expression)?;
    crate::crd::cel::run_with(&program, vars)
}

fn cel_to_json(value: &cel::Value) -> Value {
    match value {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => json!(b),
        cel::Value::Int(i) => json!(i),
        cel::Value::UInt(u) => json!(u),
        cel::Value::Float(f) => json!(f),
        cel::Value::String(s) => json!(s.as_str()),
        cel::Value::List(list) => Value::Array(list.iter().map(cel_to_json).collect()),
        cel::Value::Map(map) => {
            let mut out = Map::new();
            for (key, value) in map.map.iter() {
                let key = match key {
                    cel::objects::Key::String(s) => s.to_string(),
                    cel::objects::Key::Int(i) => i.to_string(),
                    cel::objects::Key::Uint(u) => u.to_string(),
                    cel::objects::Key::Bool(b) => b.to_string(),
                };
                out.insert(key, cel_to_json(value));
            }
            Value::Object(out)
        }
        other => json!(format!("{other:?}")),
    }
}

/// The parameter object a binding names, if any (`None` when the policy takes none).
fn params(
    registry: &Registry,
    policy: &Value,
    binding: &Value,
    request: &Request<'_>,
) -> Result<Option<Value>, String> {
    let Some(kind) = policy.pointer("/spec/paramKind") else {
        return Ok(None);
    };
    let reference = binding
        .pointer("/spec/paramRef")
        .ok_or_else(|| "the policy takes parameters and the binding names none".to_string())?;
    let (group, version) = match text(kind, "apiVersion").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), text(kind, "apiVersion").to_string()),
    };
    let resource = registry
        .catalogue
        .all()
        .into_iter()
        .find(|r| r.group == group && r.version == version && r.kind == text(kind, "kind"))
        .ok_or_else(|| format!("paramKind {kind} is not served"))?;
    let namespace = match text(reference, "namespace") {
        "" if resource.namespaced => request.namespace.unwrap_or_default().to_string(),
        ns => ns.to_string(),
    };
    let namespace = resource.namespaced.then_some(namespace.as_str());
    let found = match text(reference, "name") {
        "" => None,
        name => registry
            .cache
            .get(&resource.key(namespace, name))
            .and_then(|o| o.value().ok()),
    };
    match found {
        Some(object) => Ok(Some(object)),
        None if text(reference, "parameterNotFoundAction") == "Allow" => Ok(Some(Value::Null)),
        None => Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".to_string(),
        ),
    }
}

/// Runs every bound policy that selects the request.
pub fn validate(registry: &Registry, request: &Request<'_>) -> ApiResult<()> {
    if crate::webhooks::exempt(request.resource) {
        return Ok(());
    }
    let bindings = registry
        .cache
        .snapshot("/registry/validatingadmissionpolicybindings/", None)
        .objects;
    if bindings.is_empty() {
        return Ok(());
    }
    let user = crate::warnings::user_info();
    let review = crate::webhooks::review_request(request, "", user.as_ref());
    let namespace_object = request
        .namespace
        .and_then(|ns| registry.cache.get(&format!("/registry/namespaces/{ns}")))
        .and_then(|o| o.value().ok())
        .unwrap_or(Value::Null);
    for binding in bindings.iter().filter_map(|o| o.value().ok()) {
        let policy_name = binding
            .pointer("/spec/policyName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(policy) = registry
            .cache
            .get(&format!(
                "/registry/validatingadmissionpolicies/{policy_name}"
            ))
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
        check(
            registry,
            &policy,
            &binding,
            request,
            &review,
            &namespace_object,
        )?;
    }
    Ok(())
}

/// One policy through one binding.
fn check(
    registry: &Registry,
    policy: &Value,
    binding: &Value,
    request: &Request<'_>,
    review: &Value,
    namespace_object: &Value,
) -> ApiResult<()> {
    let policy_name = crate::object::name(policy);
    let binding_name = crate::object::name(binding);
    let ignore = policy
        .pointer("/spec/failurePolicy")
        .and_then(Value::as_str)
        == Some("Ignore");
    let failed = |error: String| -> ApiResult<()> {
        if ignore {
            return Ok(());
        }
        Err(ApiError::new(
            422,
            "Invalid",
            format!("policy '{policy_name}' with binding '{binding_name}' denied request: {error}"),
        ))
    };
    let params = match params(registry, policy, binding, request) {
        Ok(params) => params.unwrap_or(Value::Null),
        Err(error) => return failed(error),
    };
    let object = review["object"].clone();
    let old_object = review["oldObject"].clone();
    let mut variables = Map::new();
    let bind = |variables: &Value| -> Vec<(&'static str, Value)> {
        vec![
            ("object", object.clone()),
            ("oldObject", old_object.clone()),
            ("request", review.clone()),
            ("params", params.clone()),
            ("namespaceObject", namespace_object.clone()),
            ("variables", variables.clone()),
        ]
    };
    let run = |expression: &str, variables: &Map<String, Value>| {
        let owned = bind(&Value::Object(variables.clone()));
        let vars: Vec<(&str, &Value)> = owned.iter().map(|(n, v)| (*n, v)).collect();
        evaluate(expression, &vars)
    };
    for condition in items(policy.pointer("/spec/matchConditions")) {
        match run(text(condition, "expression"), &variables) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(()),
            Ok(other) => return failed(format!("matchCondition gave {other:?}, not a bool")),
            Err(error) => return failed(format!("matchCondition: {error}")),
        }
    }
    for variable in items(policy.pointer("/spec/variables")) {
        match run(text(variable, "expression"), &variables) {
            Ok(value) => {
                variables.insert(text(variable, "name").to_string(), cel_to_json(&value));
            }
            Err(error) => return failed(format!("variable {:?}: {error}", text(variable, "name"))),
        }
    }
    let actions: Vec<&str> = items(binding.pointer("/spec/validationActions"))
        .filter_map(Value::as_str)
        .collect();
    for validation in items(policy.pointer("/spec/validations")) {
        let expression = text(validation, "expression");
        let message = match run(expression, &variables) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => {
                let from_expression = match text(validation, "messageExpression") {
                    "" => None,
                    source => match run(source, &variables) {
                        Ok(cel::Value::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                        _ => None,
                    },
                };
                from_expression
                    .or_else(|| {
                        Some(text(validation, "message").to_string()).filter(|m| !m.is_empty())
                    })
                    .unwrap_or_else(|| format!("failed expression: {expression}"))
            }
            Ok(other) => {
                failed(format!(
                    "expression '{expression}' gave {other:?}, not a bool"
                ))?;
                continue;
            }
            Err(error) => {
                failed(format!(
                    "expression '{expression}' resulted in error: {error}"
                ))?;
                continue;
            }
        };
        if actions.contains(&"Warn") {
            crate::warnings::add(format!(
                "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {message}"
            ));
        }
        if actions.contains(&"Deny") {
            let (code, reason) = match text(validation, "reason") {
                "Forbidden" => (403, "Forbidden"),
                "Unauthorized" => (401, "Unauthorized"),
                "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
                _ => (422, "Invalid"),
            };
            return Err(ApiError::new(
                code,
                reason,
                format!(
                    "{} \"{}\" is forbidden: ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {message}",
                    qualified(request),
                    request.name
                ),
            ));
        }
    }
    Ok(())
}

fn qualified(request: &Request<'_>) -> String {
    if request.resource.group.is_empty() {
        request.resource.plural.clone()
    } else {
        format!("{}.{}", request.resource.plural, request.resource.group)
    }
}

/// Upstream's validation of policies: every expression must compile.
pub fn validate_policy(policy: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = policy.get("spec");
    let validations: Vec<&Value> = items(spec.and_then(|s| s.get("validations"))).collect();
    let has_audit = items(spec.and_then(|s| s.get("auditAnnotations")))
        .next()
        .is_some();
    if validations.is_empty() && !has_audit {
        causes.push(Cause::required("spec.validations"));
    }
    let mut check = |path: String, source: &str| {
        if let Err(e) = crate::crd::cel::compile(source) {
            causes.push(Cause::invalid(
                path,
                source,
                &format!("compilation failed: {e}"),
            ));
        }
    };
    for (i, validation) in validations.iter().enumerate() {
        check(
            format!("spec.validations[{i}].expression"),
            text(validation, "expression"),
        );
        let message = text(validation, "messageExpression");
        if !message.is_empty() {
            check(format!("spec.validations[{i}].messageExpression"), message);
        }
    }
    for (i, variable) in items(spec.and_then(|s| s.get("variables"))).enumerate() {
        check(
            format!("spec.variables[{i}].expression"),
            text(variable, "expression"),
        );
    }
    for (i, condition) in items(spec.and_then(|s| s.get("matchConditions"))).enumerate() {
        check(
            format!("spec.matchConditions[{i}].expression"),
            text(condition, "expression"),
        );
    }
    causes
}

/// Upstream's validation of bindings: a policy and a valid set of actions.
pub fn validate_binding(binding: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if binding
        .pointer("/spec/policyName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(Cause::required("spec.policyName"));
    }
    let actions: Vec<&str> = items(binding.pointer("/spec/validationActions"))
        .filter_map(Value::as_str)
        .collect();
    if actions.is_empty() {
        causes.push(Cause::required("spec.validationActions"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, action) in actions.iter().enumerate() {
        let path = format!("spec.validationActions[{i}]");
        if !["Deny", "Warn", "Audit"].contains(action) {
            causes.push(Cause::unsupported(path, action, &["Audit", "Deny", "Warn"]));
        } else if !seen.insert(*action) {
            causes.push(Cause::duplicate(path, action));
        }
    }
    if seen.contains("Deny") && seen.contains("Warn") {
        causes.push(Cause::invalid(
            "spec.validationActions",
            "Deny, Warn",
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    causes
}
