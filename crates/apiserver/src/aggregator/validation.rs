//! What an APIService must be, as upstream's aggregator validates it: named after the
//! group version it claims, with priorities in range, and either local (no Service, so
//! nothing to trust) or remote with a Service and one way of trusting its server.

use serde_json::Value;

use crate::status::Cause;
use crate::strategy::{is_dns1123_label, is_dns1123_subdomain};

const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_dns1035_label(value: &str) -> bool {
    is_dns1123_label(value) && value.starts_with(|c: char| c.is_ascii_lowercase())
}

/// `insecureSkipTLSVerify: true` refused (a boolean, printed unquoted).
fn insecure_cause(detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: true: {detail}"),
        field: "spec.insecureSkipTLSVerify".into(),
    }
}

/// The causes an APIService is refused for (none when it is valid).
pub fn validate(api_service: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = api_service.get("spec").cloned().unwrap_or(Value::Null);
    let text = |field: &str| spec.get(field).and_then(Value::as_str).unwrap_or_default();
    let (group, version) = (text("group"), text("version"));
    let name = crate::object::name(api_service);
    let expected = super::api_service_name(group, version);
    if name != expected {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            &format!("must be `spec.version+\".\"+spec.group`: {expected:?}"),
        ));
    }
    if group.is_empty() && version != "v1" {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: only v1 may have an empty group and it better be legacy kube"
                .into(),
            field: "spec.group".into(),
        });
    }
    if !group.is_empty() && !is_dns1123_subdomain(group) {
        causes.push(Cause::invalid(
            "spec.group",
            group,
            crate::strategy::DNS1123_SUBDOMAIN_MSG,
        ));
    }
    if version.is_empty() {
        causes.push(Cause::required("spec.version"));
    } else if !is_dns1035_label(version) {
        causes.push(Cause::invalid("spec.version", version, DNS1035_LABEL_MSG));
    }
    for (field, max) in [("groupPriorityMinimum", 20000), ("versionPriority", 1000)] {
        let value = spec.get(field).and_then(Value::as_i64).unwrap_or(0);
        if value <= 0 || value > max {
            causes.push(Cause::invalid(
                format!("spec.{field}"),
                value,
                &format!("must be positive and less than {max}"),
            ));
        }
    }
    let insecure = spec.get("insecureSkipTLSVerify").and_then(Value::as_bool) == Some(true);
    let ca_bundle = text("caBundle");
    match spec.get("service").filter(|s| s.is_object()) {
        None => {
            if !ca_bundle.is_empty() {
                causes.push(Cause::invalid(
                    "spec.caBundle",
                    format!("{} bytes", ca_bundle.len()),
                    "local APIServices may not have a caBundle",
                ));
            }
            if insecure {
                causes.push(insecure_cause(
                    "local APIServices may not have insecureSkipTLSVerify",
                ));
            }
        }
        Some(service) => {
            for field in ["namespace", "name"] {
                let value = service.get(field).and_then(Value::as_str).unwrap_or("");
                if value.is_empty() {
                    causes.push(Cause::required(format!("spec.service.{field}")));
                } else if !is_dns1123_label(value) {
                    causes.push(Cause::invalid(
                        format!("spec.service.{field}"),
                        value,
                        crate::strategy::DNS1123_LABEL_MSG,
                    ));
                }
            }
            let port = service.get("port").and_then(Value::as_i64).unwrap_or(443);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    "spec.service.port",
                    port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if insecure && !ca_bundle.is_empty() {
                causes.push(insecure_cause("may not be true if caBundle is present"));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn accepts_local_and_remote_api_services() {
        let local = json!({"metadata": {"name": "v1."}, "spec": {"version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1}});
        assert!(validate(&local).is_empty());
        let remote = json!({"metadata": {"name": "v1alpha1.wardle.example.com"}, "spec": {"group": "wardle.example.com", "version": "v1alpha1", "groupPriorityMinimum": 2000, "versionPriority": 200, "service": {"namespace": "ns", "name": "api", "port": 443}, "caBundle": "Q0E="}});
        assert!(validate(&remote).is_empty());
    }

    #[test]
    fn refuses_what_upstream_refuses() {
        let bad = json!({"metadata": {"name": "v1.other"}, "spec": {"group": "wardle.example.com", "version": "1alpha", "groupPriorityMinimum": 0, "versionPriority": 1001, "service": {"namespace": "", "name": "api", "port": 70000}, "caBundle": "Q0E=", "insecureSkipTLSVerify": true}});
        let causes = validate(&bad);
        assert_eq!(
            fields(&causes),
            [
                "metadata.name",
                "spec.version",
                "spec.groupPriorityMinimum",
                "spec.versionPriority",
                "spec.service.namespace",
                "spec.service.port",
                "spec.insecureSkipTLSVerify"
            ]
        );
        assert!(causes[0]
            .message
            .ends_with("must be `spec.version+\".\"+spec.group`: \"1alpha.wardle.example.com\""));
        assert!(causes[2]
            .message
            .contains("must be positive and less than 20000"));
        let local = json!({"metadata": {"name": "v2."}, "spec": {"version": "v2", "groupPriorityMinimum": 1, "versionPriority": 1, "caBundle": "Q0E="}});
        let causes = validate(&local);
        assert_eq!(fields(&causes), ["spec.group", "spec.caBundle"]);
    }
}
