//! Label selectors as the API defines them (`metav1.LabelSelector`): every `matchLabels`
//! pair and every `matchExpressions` requirement must hold; an empty selector matches
//! everything.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object carrying `labels`.
///
/// An operator the API does not know makes the selector match nothing: validation refuses
/// such selectors, and selecting nothing is the safe reading of one that slipped through.
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    if let Some(required) = &selector.match_labels {
        if required.iter().any(|(k, v)| get(k) != Some(v)) {
            return false;
        }
    }
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default();
        let value = get(&req.key);
        let holds = match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            // A missing key satisfies NotIn, as upstream's labels.Selector has it.
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !holds {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        assert!(matches(&sel(json!({})), None));
        assert!(matches(&sel(json!({})), Some(&web)));
        assert!(matches(
            &sel(json!({"matchLabels": {"app": "web"}})),
            Some(&web)
        ));
        assert!(!matches(
            &sel(json!({"matchLabels": {"app": "web"}})),
            Some(&db)
        ));
        assert!(!matches(&sel(json!({"matchLabels": {"app": "web"}})), None));

        let expr = |op: &str, values: &[&str]| {
            sel(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}))
        };
        assert!(matches(&expr("In", &["front", "back"]), Some(&web)));
        assert!(!matches(&expr("In", &["back"]), Some(&web)));
        assert!(!matches(&expr("In", &["front"]), Some(&db)));
        assert!(matches(&expr("NotIn", &["back"]), Some(&web)));
        assert!(!matches(&expr("NotIn", &["front"]), Some(&web)));
        assert!(matches(&expr("NotIn", &["front"]), Some(&db)));
        assert!(matches(&expr("Exists", &[]), Some(&web)));
        assert!(!matches(&expr("Exists", &[]), Some(&db)));
        assert!(matches(&expr("DoesNotExist", &[]), Some(&db)));
        assert!(!matches(&expr("DoesNotExist", &[]), Some(&web)));
        assert!(!matches(&expr("Sometimes", &[]), Some(&web)));

        // Every requirement must hold.
        let both = sel(json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]}));
        assert!(!matches(&both, Some(&web)));
    }
}
