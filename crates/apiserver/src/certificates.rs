//! CertificateSigningRequests as upstream's registry keeps them: the requester's identity
//! is stamped into the spec at create (nobody can ask in someone else's name), the spec
//! never changes after, approval conditions change only through `approval`, the
//! certificate only through `status`, once; and the admission checks upstream runs on
//! them: approving needs `approve` on the signer, issuing needs `sign`, and no client
//! certificate for `system:masters` comes from the API server's client signer.

use serde_json::{json, Value};

use crate::authz::rbac::Authorizer;
use crate::authz::Attributes;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, Cause};

const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// The key usages upstream accepts.
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Create: the spec's identity fields are the requester's, whatever the body said.
pub fn prepare_for_create(csr: &mut Value) {
    if let Some(fields) = csr.as_object_mut() {
        fields.shift_remove("status");
    }
    let Some(spec) = csr.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["username", "uid", "groups", "extra"] {
        spec.shift_remove(field);
    }
    if let Some(user) = crate::warnings::user_info() {
        spec.insert("username".into(), json!(user.name));
        if !user.uid.is_empty() {
            spec.insert("uid".into(), json!(user.uid));
        }
        spec.insert("groups".into(), json!(user.groups));
    }
}

/// The PEM request's text, from the spec's base64.
pub fn request_pem(csr: &Value) -> Option<String> {
    use base64::Engine;
    let encoded = csr.pointer("/spec/request").and_then(Value::as_str)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn is_qualified_signer_name(name: &str) -> bool {
    let Some((domain, path)) = name.split_once('/') else {
        return false;
    };
    let domain_ok = domain.contains('.') && crate::strategy::is_dns1123_subdomain(domain);
    let path_ok = !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    domain_ok && path_ok && name.len() <= 571
}

pub fn validate(csr: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = csr.get("spec");
    match request_pem(csr) {
        None if spec.and_then(|s| s.get("request")).is_none() => {
            causes.push(Cause::required("spec.request"))
        }
        None => causes.push(Cause::invalid(
            "spec.request",
            "<request>",
            "PEM block type must be CERTIFICATE REQUEST",
        )),
        Some(pem) => {
            if let Err(detail) = skiff_pki::csr::parse(&pem) {
                causes.push(Cause::invalid("spec.request", "<request>", &detail));
            }
        }
    }
    match spec
        .and_then(|s| s.get("signerName"))
        .and_then(Value::as_str)
    {
        None | Some("") => causes.push(Cause::required("spec.signerName")),
        Some(name) if !is_qualified_signer_name(name) => causes.push(Cause::invalid(
            "spec.signerName",
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )),
        Some(_) => {}
    }
    let usages = spec.and_then(|s| s.get("usages")).and_then(Value::as_array);
    match usages {
        None => causes.push(Cause::required("spec.usages")),
        Some(list) if list.is_empty() => causes.push(Cause::required("spec.usages")),
        Some(list) => {
            for (i, usage) in list.iter().enumerate() {
                let usage = usage.as_str().unwrap_or_default();
                if !USAGES.contains(&usage) {
                    causes.push(Cause::unsupported(
                        format!("spec.usages[{i}]"),
                        usage,
                        USAGES,
                    ));
                }
            }
        }
    }
    if let Some(seconds) = spec
        .and_then(|s| s.get("expirationSeconds"))
        .and_then(Value::as_i64)
    {
        if seconds < 600 {
            causes.push(Cause::invalid(
                "spec.expirationSeconds",
                seconds,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    causes.extend(validate_status(csr));
    causes
}

fn conditions(csr: &Value) -> Vec<Value> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn condition_type(condition: &Value) -> &str {
    condition
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    conditions(csr).iter().any(|c| {
        condition_type(c) == kind && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

fn validate_status(csr: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let list = conditions(csr);
    let mut seen = std::collections::BTreeSet::new();
    for (i, condition) in list.iter().enumerate() {
        let kind = condition_type(condition);
        let path = format!("status.conditions[{i}]");
        if kind.is_empty() {
            causes.push(Cause::required(format!("{path}.type")));
            continue;
        }
        let status = condition
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let exclusive = matches!(kind, "Approved" | "Denied" | "Failed");
        if exclusive && !seen.insert(kind.to_string()) {
            causes.push(Cause::duplicate(format!("{path}.type"), kind));
        }
        let allowed: &[&str] = if matches!(kind, "Approved" | "Denied") {
            &["True"]
        } else {
            &["True", "False", "Unknown"]
        };
        if status.is_empty() {
            causes.push(Cause::required(format!("{path}.status")));
        } else if !allowed.contains(&status) {
            causes.push(Cause::unsupported(
                format!("{path}.status"),
                status,
                allowed,
            ));
        }
    }
    if seen.contains("Approved") && seen.contains("Denied") {
        causes.push(Cause::invalid(
            "status.conditions",
            "Approved, Denied",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(certificate) = csr.pointer("/status/certificate").and_then(Value::as_str) {
        if let Err(detail) = certificate_pem(certificate) {
            causes.push(Cause::invalid(
                "status.certificate",
                "<certificate data>",
                &detail,
            ));
        }
    }
    causes
}

/// Checks that `status.certificate` (base64) holds one or more PEM certificates.
fn certificate_pem(encoded: &str) -> Result<(), String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not PEM text".to_string())?;
    let mut found = 0;
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| format!("not PEM: {e}"))?;
        if pem.label != "CERTIFICATE" {
            return Err(
                "only CERTIFICATE PEM blocks are allowed, found \"".to_string() + &pem.label + "\"",
            );
        }
        pem.parse_x509().map_err(|e| format!("x509: {e}"))?;
        found += 1;
    }
    if found == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// Fills in the timestamps a client left out of new or changed conditions.
fn stamp_conditions(new: &mut Value, old: &Value) {
    let now = crate::object::now_rfc3339();
    let before = conditions(old);
    let Some(list) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for condition in list {
        let previous = before
            .iter()
            .find(|c| condition_type(c) == condition_type(condition));
        let Some(fields) = condition.as_object_mut() else {
            continue;
        };
        if !fields.contains_key("lastUpdateTime") {
            fields.insert("lastUpdateTime".into(), json!(now));
        }
        if !fields.contains_key("lastTransitionTime") {
            let kept = previous
                .filter(|p| p.get("status") == fields.get("status"))
                .and_then(|p| p.get("lastTransitionTime").cloned());
            fields.insert("lastTransitionTime".into(), kept.unwrap_or(json!(now)));
        }
    }
}

/// An update's rules, by endpoint: the main resource changes metadata only; `approval`
/// changes the conditions; `status` changes the rest of the status, and never the
/// approval conditions.
pub fn prepare_update(subresource: Option<&str>, new: &mut Value, old: &Value) {
    let set = |target: &mut Value, field: &str, value: Option<Value>| {
        if let Some(fields) = target.as_object_mut() {
            match value {
                Some(v) => {
                    fields.insert(field.into(), v);
                }
                None => {
                    fields.shift_remove(field);
                }
            }
        }
    };
    set(new, "spec", old.get("spec").cloned());
    match subresource {
        Some("approval") => {
            let mut status = old.get("status").cloned().unwrap_or_else(|| json!({}));
            match new.pointer("/status/conditions") {
                Some(list) => status["conditions"] = list.clone(),
                None => {
                    if let Some(fields) = status.as_object_mut() {
                        fields.shift_remove("conditions");
                    }
                }
            }
            set(new, "status", Some(status));
        }
        Some("status") => {
            let approvals: Vec<Value> = conditions(old)
                .into_iter()
                .filter(|c| matches!(condition_type(c), "Approved" | "Denied"))
                .collect();
            let mut list: Vec<Value> = conditions(new)
                .into_iter()
                .filter(|c| !matches!(condition_type(c), "Approved" | "Denied"))
                .collect();
            list.splice(0..0, approvals);
            if !list.is_empty() || new.get("status").is_some() {
                let status = crate::object::field_object(new, "status");
                status.insert("conditions".into(), json!(list));
                if list.is_empty() {
                    status.shift_remove("conditions");
                }
            }
        }
        _ => set(new, "status", old.get("status").cloned()),
    }
    stamp_conditions(new, old);
}

/// What no update may do: drop an approval decision or change an issued certificate.
pub fn validate_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for kind in ["Approved", "Denied"] {
        if has_condition(old, kind) && !has_condition(new, kind) {
            causes.push(Cause::forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type \"{kind}\""),
            ));
        }
    }
    let old_certificate = old.pointer("/status/certificate").and_then(Value::as_str);
    let new_certificate = new.pointer("/status/certificate").and_then(Value::as_str);
    if old_certificate.is_some_and(|c| !c.is_empty()) && old_certificate != new_certificate {
        causes.push(Cause::forbidden(
            "status.certificate",
            "updates may not modify existing certificate content",
        ));
    }
    causes
}

fn signer_name(csr: &Value) -> &str {
    csr.pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether the request's user may `verb` (`approve` or `sign`) for the CSR's signer: on
/// `signers` named after it, or its domain's wildcard `example.com/*`.
fn may_for_signer(authorizer: &Authorizer<'_>, verb: &str, signer: &str) -> bool {
    let Some(user) = crate::warnings::user_info() else {
        // The server's own writes.
        return true;
    };
    let wildcard = signer
        .split_once('/')
        .map(|(domain, _)| format!("{domain}/*"));
    std::iter::once(signer.to_string())
        .chain(wildcard)
        .any(|name| {
            authorizer.allows(
                &user,
                &Attributes {
                    verb: verb.into(),
                    api_group: "certificates.k8s.io".into(),
                    resource: "signers".into(),
                    name,
                    resource_request: true,
                    ..Default::default()
                },
            )
        })
}

/// Upstream's CertificateApproval and CertificateSigning admission: a new approval
/// decision needs `approve`, a new certificate `sign`, for the CSR's signer.
pub fn admit_update(
    authorizer: &Authorizer<'_>,
    resource: &ResourceInfo,
    subresource: Option<&str>,
    new: &Value,
    old: &Value,
) -> ApiResult<()> {
    let signer = signer_name(old);
    let decided = |csr: &Value| (has_condition(csr, "Approved"), has_condition(csr, "Denied"));
    if subresource == Some("approval")
        && decided(new) != decided(old)
        && !may_for_signer(authorizer, "approve", signer)
    {
        return Err(ApiError::admission_forbidden(
            resource,
            crate::object::name(old),
            &format!("user not permitted to approve requests with signerName \"{signer}\""),
        ));
    }
    let certificate = |csr: &Value| csr.pointer("/status/certificate").cloned();
    if subresource == Some("status")
        && certificate(new) != certificate(old)
        && !may_for_signer(authorizer, "sign", signer)
    {
        return Err(ApiError::admission_forbidden(
            resource,
            crate::object::name(old),
            &format!("user not permitted to sign requests with signerName \"{signer}\""),
        ));
    }
    Ok(())
}

/// Upstream's CertificateSubjectRestriction: the API server's client signer never signs
/// for `system:masters`.
pub fn admit_create(resource: &ResourceInfo, csr: &Value) -> ApiResult<()> {
    if signer_name(csr) != KUBE_APISERVER_CLIENT {
        return Ok(());
    }
    let masters = request_pem(csr)
        .and_then(|pem| skiff_pki::csr::parse(&pem).ok())
        .is_some_and(|subject| subject.organizations.iter().any(|o| o == "system:masters"));
    if masters {
        return Err(ApiError::admission_forbidden(
            resource,
            crate::object::name(csr),
            &format!(
                "use of {KUBE_APISERVER_CLIENT} signer with system:masters group is not allowed"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_with(request_pem: &str) -> Value {
        use base64::Engine;
        let request = base64::engine::general_purpose::STANDARD.encode(request_pem);
        json!({
            "metadata": {"name": "a"},
            "spec": {"request": request, "signerName": "example.com/e2e", "usages": ["digital signature", "client auth"]},
        })
    }

    #[test]
    fn requests_signers_usages_and_durations_are_validated() {
        let (pem, _) = skiff_pki::csr::request("someone", &[]).expect("request");
        assert!(validate(&csr_with(&pem)).is_empty());
        let mut bad = csr_with("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        bad["spec"]["signerName"] = json!("not-qualified");
        bad["spec"]["usages"] = json!(["client auth", "flying"]);
        bad["spec"]["expirationSeconds"] = json!(60);
        let messages: Vec<String> = validate(&bad)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].starts_with("spec.request: Invalid value"));
        assert!(messages[1].contains("must be a fully qualified domain and path"));
        assert!(messages[2].starts_with("spec.usages[1]: Unsupported value: \"flying\""));
        assert!(messages[3].contains("may not specify a duration less than 600 seconds"));
    }

    #[test]
    fn approval_changes_conditions_only_and_status_keeps_approval() {
        let (pem, _) = skiff_pki::csr::request("someone", &[]).expect("request");
        let old = csr_with(&pem);
        let mut approval = old.clone();
        approval["spec"]["signerName"] = json!("example.com/other");
        approval["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "ok"}], "certificate": "Zm9v"});
        prepare_update(Some("approval"), &mut approval, &old);
        assert_eq!(approval["spec"], old["spec"], "the spec never changes");
        assert!(approval.pointer("/status/certificate").is_none());
        assert!(has_condition(&approval, "Approved"));
        assert!(approval
            .pointer("/status/conditions/0/lastUpdateTime")
            .is_some());

        let mut status = approval.clone();
        status["status"]["conditions"] = json!([{"type": "Custom", "status": "True"}]);
        prepare_update(Some("status"), &mut status, &approval);
        let kinds: Vec<String> = conditions(&status)
            .iter()
            .map(|c| condition_type(c).to_string())
            .collect();
        assert_eq!(kinds, ["Approved", "Custom"]);

        let mut denied = approval.clone();
        denied["status"]["conditions"] =
            json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]);
        assert!(validate_status(&denied)
            .iter()
            .any(|c| c.message.contains("mutually exclusive")));
        let mut dropped = approval.clone();
        dropped["status"]["conditions"] = json!([]);
        assert_eq!(validate_update(&dropped, &approval).len(), 1);
    }
}
