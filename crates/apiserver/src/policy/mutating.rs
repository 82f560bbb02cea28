//! MutatingAdmissionPolicy: CEL mutations in the API server, as upstream's plugin runs
//! them. For each policy bound to a create or update ([`super::bound`], in its bindings'
//! name order) whose `matchConditions` hold, its `mutations` run in order, each on the
//! object the last one left ([`super::patch`] applies them), the object defaulted again
//! after each. A mutation that fails is the request's error unless the policy's
//! `failurePolicy` is `Ignore`; the policy's other mutations, and other policies, still
//! run first, and the first error is the answer (`403`; reason `Invalid`, or
//! `Forbidden` when a binding's parameters cannot be had), each one a cause.
//!
//! They run before the mutating webhooks. When a policy or a webhook changed the object,
//! the policies with `reinvocationPolicy: IfNeeded` that ran before the change run once
//! more ([`Reinvocation`]), as upstream reinvokes them. Mutating webhooks themselves are
//! not reinvoked yet.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{items, text, Scope};
use crate::registry::Registry;
use crate::status::{ApiError, ApiResult, Cause};
use crate::webhooks::Request;

/// One invocation: policy, binding and parameter object.
type Key = (String, String, String);

/// What one admission remembers between the first pass of the mutating policies and their
/// reinvocation (upstream's reinvocation context).
#[derive(Default)]
pub struct Reinvocation {
    /// The `IfNeeded` invocations that ran, and would run again if the object changed.
    invoked: BTreeSet<Key>,
    /// The invocations to run again.
    reinvoke: BTreeSet<Key>,
    /// The object as the policies left it.
    last_output: Option<Value>,
    /// A policy changed the object.
    changed: bool,
}

impl Reinvocation {
    /// Every `IfNeeded` invocation that ran so far is to run again.
    fn require(&mut self) {
        self.reinvoke.append(&mut self.invoked);
    }

    /// Whether the policies run again, given the object after the webhooks: when a
    /// policy or a webhook changed it.
    pub fn wanted(&self, object: &Value) -> bool {
        self.changed || self.last_output.as_ref().is_some_and(|last| last != object)
    }
}

/// The first pass of the mutating policies over `object`.
pub fn mutate(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
) -> ApiResult<()> {
    run(registry, request, object, state, false)
}

/// The second pass: the `IfNeeded` policies that ran before a later change.
pub fn reinvoke(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
) -> ApiResult<()> {
    if state.last_output.as_ref() != Some(&*object) {
        // Something after the policies (a webhook) changed the object.
        state.require();
    }
    run(registry, request, object, state, true)
}

fn run(
    registry: &Registry,
    request: &Request<'_>,
    object: &mut Value,
    state: &mut Reinvocation,
    reinvoking: bool,
) -> ApiResult<()> {
    let current = Request {
        object: Some(&*object),
        ..*request
    };
    let bound = super::bound(registry, super::MUTATING, &current)?;
    if bound.is_empty() {
        return Ok(());
    }
    let namespace_object = super::namespace_object(registry, request);
    let user = crate::warnings::user_info();
    let mut errors = Vec::new();
    for bound in &bound {
        // Upstream's reasons: `Invalid` for what the policy's expressions do, none (the
        // status stays `Forbidden`) for a binding whose parameters cannot be had.
        let mut failed = |reason: &'static str, error: String| {
            if !super::ignores_failures(&bound.policy) {
                errors.push((
                    reason,
                    format!(
                        "policy '{}' with binding '{}' denied request: {error}",
                        crate::object::name(&bound.policy),
                        crate::object::name(&bound.binding)
                    ),
                ));
            }
        };
        let params = match &bound.params {
            Ok(params) => params,
            Err(error) => {
                failed("Forbidden", format!("failed to configure binding: {error}"));
                continue;
            }
        };
        for params in params {
            let current = Request {
                object: Some(&*object),
                ..*request
            };
            let review = crate::webhooks::review_request(&current, "", user.as_ref());
            let mut scope = Scope::new(&review, params.clone(), namespace_object.clone());
            scope.compute_variables(&bound.policy);
            match scope.conditions_hold(&bound.policy) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    failed("Invalid", format!("matchCondition: {error}"));
                    continue;
                }
            }
            let key = (
                crate::object::name(&bound.policy).to_string(),
                crate::object::name(&bound.binding).to_string(),
                format!(
                    "{}/{}",
                    crate::object::namespace(params).unwrap_or_default(),
                    crate::object::name(params)
                ),
            );
            if reinvoking && !state.reinvoke.contains(&key) {
                continue;
            }
            let before = object.clone();
            for mutation in items(bound.policy.pointer("/spec/mutations")) {
                scope.set_object(object);
                match apply(&scope, mutation, object, request) {
                    Ok(mutated) => {
                        *object = mutated;
                        crate::strategy::apply_defaults(request.resource, object);
                    }
                    Err(error) => failed("Invalid", error),
                }
            }
            if *object != before {
                state.require();
                state.changed = true;
            }
            let policy = bound.policy.pointer("/spec/reinvocationPolicy");
            if policy.and_then(Value::as_str) == Some("IfNeeded") {
                state.invoked.insert(key);
            }
        }
    }
    state.last_output = Some(object.clone());
    match errors.first() {
        None => Ok(()),
        Some((reason, first)) => {
            let all: Vec<String> = errors.iter().map(|(_, m)| m.clone()).collect();
            Err(ApiError::policy_denied(
                request.resource,
                request.name,
                reason,
                first,
                &all,
            ))
        }
    }
}

/// One mutation's result applied to `object`.
fn apply(
    scope: &Scope,
    mutation: &Value,
    object: &Value,
    request: &Request<'_>,
) -> Result<Value, String> {
    let structure = crate::schema::Structure::of(request.resource);
    let evaluate = |field: &str| {
        let source = mutation
            .pointer(&format!("/{field}/expression"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let expression = crate::expressions::compile_mutation(source)?;
        scope.run(&expression, source)
    };
    match text(mutation, "patchType") {
        "ApplyConfiguration" => {
            super::patch::apply_configuration(object, &evaluate("applyConfiguration")?, structure)
        }
        "JSONPatch" => super::patch::json_patch(object, &evaluate("jsonPatch")?),
        other => Err(format!("unsupported patchType {other:?}")),
    }
}

/// Upstream's validation of mutating policies: the shared parts
/// ([`super::validate_policy_spec`], no `DELETE` rules), mutations of a known type whose
/// expression compiles, and a reinvocation policy.
pub fn validate_policy(policy: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = policy.get("spec");
    super::validate_policy_spec(spec, super::MUTATING_OPERATIONS, &mut causes);
    let mutations: Vec<&Value> = items(spec.and_then(|s| s.get("mutations"))).collect();
    if mutations.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: mutations must contain at least one item".into(),
            field: "spec.mutations".into(),
        });
    }
    for (i, mutation) in mutations.iter().enumerate() {
        let path = format!("spec.mutations[{i}]");
        let (field, other) = match text(mutation, "patchType") {
            "" => {
                causes.push(Cause::required(format!("{path}.patchType")));
                continue;
            }
            "ApplyConfiguration" => ("applyConfiguration", "jsonPatch"),
            "JSONPatch" => ("jsonPatch", "applyConfiguration"),
            unknown => {
                causes.push(Cause::unsupported(
                    format!("{path}.patchType"),
                    unknown,
                    &["ApplyConfiguration", "JSONPatch"],
                ));
                continue;
            }
        };
        let patch_type = text(mutation, "patchType");
        match mutation.get(field) {
            None => causes.push(Cause {
                reason: "FieldValueRequired",
                message: format!(
                    "Required value: must be specified when patchType is {patch_type}"
                ),
                field: format!("{path}.{field}"),
            }),
            Some(expression) => super::compiles_with(
                format!("{path}.{field}.expression"),
                text(expression, "expression"),
                crate::expressions::compile_mutation,
                &mut causes,
            ),
        }
        if mutation.get(other).is_some() {
            causes.push(Cause::invalid(
                format!("{path}.{other}"),
                format!("{{{other}}}"),
                &format!("must not be specified when patchType is {patch_type}"),
            ));
        }
    }
    match spec
        .and_then(|s| s.get("reinvocationPolicy"))
        .and_then(Value::as_str)
    {
        None | Some("") => causes.push(Cause::required("spec.reinvocationPolicy")),
        Some("Never" | "IfNeeded") => {}
        Some(other) => causes.push(Cause::unsupported(
            "spec.reinvocationPolicy",
            other,
            &["IfNeeded", "Never"],
        )),
    }
    causes
}

/// Upstream's validation of mutating bindings: the shared parts, no `DELETE` rules.
pub fn validate_binding(binding: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    super::validate_binding_spec(binding, super::MUTATING_OPERATIONS, &mut causes);
    causes
}
