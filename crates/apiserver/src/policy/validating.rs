//! ValidatingAdmissionPolicy: CEL validations in the API server, as upstream's plugin runs
//! them. For each policy bound to a write ([`super::bound`]) whose `matchConditions` hold,
//! its `validations` run over the [`super::Scope`]; a failed validation is denied
//! (`Deny`: upstream's message and the validation's `reason`), warned about (`Warn`), or
//! only recorded (`Audit`), as the binding's `validationActions` say.
//!
//! Not yet: type checking of expressions (`status.typeChecking`), `auditAnnotations`.

use serde_json::Value;

use super::{items, text, Bound, Scope};
use crate::registry::Registry;
use crate::status::{ApiError, ApiResult, Cause};
use crate::webhooks::Request;

/// Runs every bound policy that selects the request.
pub fn validate(registry: &Registry, request: &Request<'_>) -> ApiResult<()> {
    let bound = super::bound(registry, super::VALIDATING, request)?;
    if bound.is_empty() {
        return Ok(());
    }
    let user = crate::warnings::user_info();
    let review = crate::webhooks::review_request(request, "", user.as_ref());
    let namespace_object = super::namespace_object(registry, request);
    for policy in &bound {
        check(policy, request, &review, &namespace_object)?;
    }
    Ok(())
}

/// One policy through one binding, once per parameter object.
fn check(
    bound: &Bound,
    request: &Request<'_>,
    review: &Value,
    namespace_object: &Value,
) -> ApiResult<()> {
    let (policy, binding) = (&bound.policy, &bound.binding);
    let policy_name = crate::object::name(policy);
    let binding_name = crate::object::name(binding);
    let failed = |error: String| -> ApiResult<()> {
        if super::ignores_failures(policy) {
            return Ok(());
        }
        Err(ApiError::new(
            422,
            "Invalid",
            format!("policy '{policy_name}' with binding '{binding_name}' denied request: {error}"),
        ))
    };
    let params = match &bound.params {
        Ok(params) => params,
        Err(error) => return failed(error.clone()),
    };
    for params in params {
        let mut scope = Scope::new(review, params.clone(), namespace_object.clone());
        scope.compute_variables(policy);
        match scope.conditions_hold(policy) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                failed(format!("matchCondition: {error}"))?;
                continue;
            }
        }
        validations(&scope, bound, request, &failed)?;
    }
    Ok(())
}

/// The policy's validations, and the binding's actions on those that fail.
fn validations(
    scope: &Scope,
    bound: &Bound,
    request: &Request<'_>,
    failed: &dyn Fn(String) -> ApiResult<()>,
) -> ApiResult<()> {
    let (policy, binding) = (&bound.policy, &bound.binding);
    let policy_name = crate::object::name(policy);
    let binding_name = crate::object::name(binding);
    let run = |source: &str| scope.evaluate(source);
    let actions: Vec<&str> = items(binding.pointer("/spec/validationActions"))
        .filter_map(Value::as_str)
        .collect();
    for validation in items(policy.pointer("/spec/validations")) {
        let expression = text(validation, "expression");
        let message = match run(expression) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => {
                let from_expression = match text(validation, "messageExpression") {
                    "" => None,
                    source => match run(source) {
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
                    crate::status::qualified(request.resource),
                    request.name
                ),
            ));
        }
    }
    Ok(())
}

/// Upstream's validation of policies: the shared parts ([`super::validate_policy_spec`])
/// and validations (or audit annotations) whose expressions compile.
pub fn validate_policy(policy: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = policy.get("spec");
    super::validate_policy_spec(spec, super::ALL_OPERATIONS, &mut causes);
    let validations: Vec<&Value> = items(spec.and_then(|s| s.get("validations"))).collect();
    let has_audit = items(spec.and_then(|s| s.get("auditAnnotations")))
        .next()
        .is_some();
    if validations.is_empty() && !has_audit {
        causes.push(Cause::required("spec.validations"));
    }
    for (i, validation) in validations.iter().enumerate() {
        super::compiles(
            format!("spec.validations[{i}].expression"),
            text(validation, "expression"),
            &mut causes,
        );
        let message = text(validation, "messageExpression");
        if !message.is_empty() {
            super::compiles(
                format!("spec.validations[{i}].messageExpression"),
                message,
                &mut causes,
            );
        }
    }
    causes
}

/// Upstream's validation of bindings: the shared parts ([`super::validate_binding_spec`])
/// and a valid set of actions.
pub fn validate_binding(binding: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    super::validate_binding_spec(binding, super::ALL_OPERATIONS, &mut causes);
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
            causes.push(Cause::unsupported(
                path,
                *action,
                &["Audit", "Deny", "Warn"],
            ));
        } else if !seen.insert(*action) {
            causes.push(Cause::duplicate(path, *action));
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
