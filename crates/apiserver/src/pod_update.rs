//! What an update may change in a running pod's spec, as upstream's `ValidatePodUpdate`
//! allows: container images, a shorter `activeDeadlineSeconds`, more tolerations, a
//! grace period of 1 in place of a negative one, and fewer scheduling gates. Everything
//! else is fixed once the pod exists (ephemeral containers change through their own
//! subresource).

use serde_json::Value;

use crate::status::Cause;

const FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Why `new`'s spec may not replace `old`'s: nothing when the change is allowed.
pub fn validate(new: &Value, old: &Value) -> Vec<Cause> {
    let (Some(new_spec), Some(old_spec)) = (new.get("spec"), old.get("spec")) else {
        return Vec::new();
    };
    if let Some(cause) = deadline_change(new_spec, old_spec) {
        return vec![cause];
    }
    // The old spec with every allowed change taken from the new one must be the new one.
    let mut allowed = old_spec.clone();
    for list in ["containers", "initContainers"] {
        let images: Vec<Option<Value>> = new_spec
            .get(list)
            .and_then(Value::as_array)
            .map(|cs| cs.iter().map(|c| c.get("image").cloned()).collect())
            .unwrap_or_default();
        if let Some(containers) = allowed.get_mut(list).and_then(Value::as_array_mut) {
            if containers.len() == images.len() {
                for (c, image) in containers.iter_mut().zip(images) {
                    if let (Some(fields), Some(image)) = (c.as_object_mut(), image) {
                        fields.insert("image".into(), image);
                    }
                }
            }
        }
    }
    let Some(fields) = allowed.as_object_mut() else {
        return Vec::new();
    };
    for field in ["activeDeadlineSeconds", "ephemeralContainers"] {
        take(fields, new_spec, field);
    }
    if additions_only(new_spec, old_spec, "tolerations") {
        take(fields, new_spec, "tolerations");
    }
    if removals_only(new_spec, old_spec, "schedulingGates") {
        take(fields, new_spec, "schedulingGates");
    }
    let grace = |spec: &Value| {
        spec.get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
    };
    if grace(old_spec).is_some_and(|g| g < 0) && grace(new_spec) == Some(1) {
        take(fields, new_spec, "terminationGracePeriodSeconds");
    }
    if &allowed == new_spec {
        Vec::new()
    } else {
        vec![Cause::forbidden("spec", FORBIDDEN)]
    }
}

fn take(fields: &mut serde_json::Map<String, Value>, from: &Value, field: &str) {
    match from.get(field) {
        Some(v) => {
            fields.insert(field.into(), v.clone());
        }
        None => {
            fields.shift_remove(field);
        }
    }
}

fn items<'a>(spec: &'a Value, field: &str) -> &'a [Value] {
    spec.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Whether `new`'s list keeps every item of `old`'s.
fn additions_only(new: &Value, old: &Value, field: &str) -> bool {
    let now = items(new, field);
    items(old, field).iter().all(|item| now.contains(item))
}

/// Whether `new`'s list holds nothing `old`'s did not.
fn removals_only(new: &Value, old: &Value, field: &str) -> bool {
    let before = items(old, field);
    items(new, field).iter().all(|item| before.contains(item))
}

/// `activeDeadlineSeconds` may be set or lowered, never raised or removed.
fn deadline_change(new: &Value, old: &Value) -> Option<Cause> {
    let field = "spec.activeDeadlineSeconds";
    let deadline = |spec: &Value| spec.get("activeDeadlineSeconds").and_then(Value::as_i64);
    match (deadline(old), deadline(new)) {
        (_, Some(n)) if !(0..=i64::from(i32::MAX)).contains(&n) => Some(Cause::invalid(
            field,
            n,
            &format!("must be between 0 and {}, inclusive", i32::MAX),
        )),
        (Some(o), Some(n)) if n > o => Some(Cause::invalid(
            field,
            n,
            "must be less than or equal to previous value",
        )),
        (Some(_), None) => Some(Cause::invalid(
            field,
            "null",
            "must not update from a positive integer to nil value",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"spec": {
            "containers": [{"name": "c", "image": "busybox:1", "command": ["sleep", "1"]}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "restartPolicy": "Always",
        }})
    }

    fn changed(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let old = pod();
        let mut new = old.clone();
        edit(&mut new);
        validate(&new, &old)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn images_deadlines_and_new_tolerations_may_change() {
        assert!(changed(|p| p["spec"]["containers"][0]["image"] = json!("busybox:2")).is_empty());
        assert!(changed(|p| p["spec"]["activeDeadlineSeconds"] = json!(30)).is_empty());
        assert!(changed(|p| {
            p["spec"]["tolerations"]
                .as_array_mut()
                .expect("list")
                .push(json!({"key": "b", "operator": "Exists"}))
        })
        .is_empty());
    }

    #[test]
    fn anything_else_is_forbidden_with_upstreams_message() {
        let causes = changed(|p| p["spec"]["containers"][0]["command"] = json!(["true"]));
        assert_eq!(causes, [format!("spec: Forbidden: {FORBIDDEN}")]);
        assert_eq!(
            changed(|p| p["spec"]["tolerations"] = json!([])),
            [format!("spec: Forbidden: {FORBIDDEN}")]
        );
        assert_eq!(
            changed(|p| p["spec"]["restartPolicy"] = json!("Never")).len(),
            1
        );
    }

    #[test]
    fn a_deadline_only_shrinks() {
        let old = json!({"spec": {"activeDeadlineSeconds": 30}});
        let raise = json!({"spec": {"activeDeadlineSeconds": 60}});
        assert_eq!(
            validate(&raise, &old)[0].message,
            "Invalid value: 60: must be less than or equal to previous value"
        );
        let lower = json!({"spec": {"activeDeadlineSeconds": 5}});
        assert!(validate(&lower, &old).is_empty());
        assert_eq!(
            validate(&json!({"spec": {}}), &old)[0].message,
            "Invalid value: \"null\": must not update from a positive integer to nil value"
        );
    }
}
