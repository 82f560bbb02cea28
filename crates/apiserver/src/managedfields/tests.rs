//! Field management scenarios, each pinning upstream's behaviour.

use serde_json::{json, Value};

use super::*;

const APPS: &str = "apps/v1";

fn writer(manager: &str) -> Writer<'_> {
    Writer {
        manager,
        subresource: None,
        api_version: APPS,
        structure: crate::schema::Structure::builtin("apps", "v1", "Deployment"),
    }
}

fn entries(object: &Value) -> Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(object: &'a Value, manager: &str) -> &'a Value {
    object["metadata"]["managedFields"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["manager"] == manager))
        .unwrap_or(&Value::Null)
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": APPS, "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image}]},
            },
        },
    })
}

#[test]
fn create_records_the_creator_as_upstream_encodes_it() {
    let mut object = deployment(1, "nginx");
    object["status"] = json!({"replicas": 0});
    record_update(None, &mut object, &writer("kubectl-create"), Some("status"));
    let list = entries(&object);
    assert_eq!(list.len(), 1);
    let e = &list[0];
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "manager",
            "operation",
            "apiVersion",
            "time",
            "fieldsType",
            "fieldsV1"
        ]
    );
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["apiVersion"], APPS);
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {
                        "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}},
                    }},
                },
            },
        })
    );
}

#[test]
fn updates_move_ownership_and_drop_empty_managers() {
    let mut live = deployment(1, "nginx");
    record_update(None, &mut live, &writer("creator"), None);
    // A second manager changes the replicas: they move to it.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(3);
    record_update(Some(&live), &mut scaled, &writer("scaler"), None);
    let replicas = [
        PathElement::Field("spec".into()),
        PathElement::Field("replicas".into()),
    ];
    let set_of = |o: &Value, m: &str| Set::from_fields_v1(&entry(o, m)["fieldsV1"]).unwrap();
    assert!(set_of(&scaled, "scaler").has(&replicas));
    assert!(!set_of(&scaled, "creator").has(&replicas));
    assert_eq!(
        entry(&scaled, "scaler")["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    // An update that changes nothing records nothing.
    let mut same = scaled.clone();
    record_update(Some(&scaled), &mut same, &writer("idle"), None);
    assert_eq!(same, scaled);
    // Removing the only field a manager owns drops the manager.
    let mut removed = scaled.clone();
    removed["spec"].as_object_mut().unwrap().remove("replicas");
    record_update(Some(&scaled), &mut removed, &writer("creator"), None);
    assert!(entry(&removed, "scaler").is_null());
    // A status write is its own entry and owns only the status.
    let mut status = removed.clone();
    status["status"] = json!({"replicas": 1});
    let status_writer = Writer {
        subresource: Some("status"),
        ..writer("controller")
    };
    record_update(Some(&removed), &mut status, &status_writer, Some("spec"));
    let e = entry(&status, "controller");
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
}

#[test]
fn managed_fields_sent_by_clients() {
    let mut live = deployment(1, "nginx");
    record_update(None, &mut live, &writer("creator"), None);
    // Invalid entries are ignored: the stored ones stay.
    let mut new = live.clone();
    new["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Bogus"}]);
    record_update(Some(&live), &mut new, &writer("editor"), None);
    assert_eq!(entries(&new), entries(&live));
    // `[{}]` resets them.
    let mut reset = live.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    record_update(Some(&live), &mut reset, &writer("editor"), None);
    assert!(reset["metadata"].get("managedFields").is_none());
    // Valid ones replace the stored ones.
    let mut edited = live.clone();
    edited["metadata"]["managedFields"] = json!([{
        "manager": "someone", "operation": "Update", "apiVersion": APPS,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }]);
    record_update(Some(&live), &mut edited, &writer("editor"), None);
    assert_eq!(entries(&edited).len(), 1);
    assert_eq!(entries(&edited)[0]["manager"], "someone");
}

#[test]
fn apply_creates_owns_and_prunes() {
    let created = apply(
        None,
        deployment(2, "nginx"),
        &writer("kubectl"),
        false,
        Some("status"),
    )
    .unwrap();
    let e = entry(&created, "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], APPS);
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                    }}},
                },
            },
        })
    );
    // A field left out of the next apply goes; one another manager owns stays.
    let mut live = created.clone();
    live["metadata"]["annotations"] = json!({"note": "kept"});
    record_update(Some(&created), &mut live, &writer("annotator"), None);
    let mut config = deployment(2, "nginx");
    config["metadata"].as_object_mut().unwrap().remove("labels");
    config["spec"].as_object_mut().unwrap().remove("replicas");
    let applied = apply(Some(&live), config, &writer("kubectl"), false, None).unwrap();
    assert!(applied["metadata"].get("labels").is_none());
    assert!(applied["spec"].get("replicas").is_none());
    assert_eq!(applied["metadata"]["annotations"]["note"], "kept");
    assert_eq!(
        applied["spec"]["template"]["metadata"]["labels"]["app"],
        "web"
    );
}

#[test]
fn apply_conflicts_with_other_managers_unless_forced() {
    let created = apply(
        None,
        deployment(2, "nginx"),
        &writer("kubectl"),
        false,
        None,
    )
    .unwrap();
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    let scaler = Writer {
        subresource: Some("scale"),
        ..writer("kubectl-scale")
    };
    record_update(Some(&created), &mut scaled, &scaler, None);

    let err = apply(
        Some(&scaled),
        deployment(2, "nginx"),
        &writer("kubectl"),
        false,
        None,
    )
    .unwrap_err();
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "kubectl-scale" with subresource "scale" using apps/v1: .spec.replicas"#
    );
    assert_eq!(
        err.to_status()["details"],
        json!({"causes": [{
            "reason": "FieldManagerConflict",
            "message": r#"conflict with "kubectl-scale" with subresource "scale" using apps/v1"#,
            "field": ".spec.replicas",
        }]})
    );
    // Applying the value the other manager set is no conflict: both own it.
    let shared = apply(
        Some(&scaled),
        deployment(5, "nginx"),
        &writer("kubectl"),
        false,
        None,
    )
    .unwrap();
    assert!(!entry(&shared, "kubectl-scale").is_null());

    // Two conflicts, two managers' worth of message.
    let mut imaged = scaled.clone();
    imaged["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    record_update(Some(&scaled), &mut imaged, &writer("kubectl-set"), None);
    let err = apply(
        Some(&imaged),
        deployment(2, "nginx"),
        &writer("kubectl"),
        false,
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"kubectl-scale\" with subresource \"scale\" using apps/v1:\n- .spec.replicas\nconflicts with \"kubectl-set\" using apps/v1:\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );

    // Forced, the applier takes the field and the other manager, left with nothing, goes.
    let forced = apply(
        Some(&scaled),
        deployment(2, "nginx"),
        &writer("kubectl"),
        true,
        None,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 2);
    assert!(entry(&forced, "kubectl-scale").is_null());
}

#[test]
fn apply_refuses_managed_fields_and_manager_names_come_from_user_agents() {
    let mut config = deployment(1, "nginx");
    config["metadata"]["managedFields"] = json!([]);
    let err = apply(None, config, &writer("kubectl"), false, None).unwrap_err();
    assert_eq!(err.code, 400);
    assert_eq!(err.message, "metadata.managedFields must be nil");
    assert_eq!(
        manager_name(None, "kubectl/v1.37.1 (linux/amd64) kubernetes/abcdef"),
        "kubectl"
    );
    assert_eq!(manager_name(Some("mine"), "kubectl/v1.37.1"), "mine");
    assert!(check_manager("kubectl").is_empty());
    let long = check_manager(&"m".repeat(129));
    assert_eq!(long[0].message, "Too long: may not be more than 128 bytes");
    let bell = check_manager("a\u{7}");
    assert_eq!(
        bell[0].message,
        r#"Invalid value: "a\u0007": invalid character U+0007 (at position 1)"#
    );
    assert_eq!(
        manager_name(Some(""), "OpenAPI-Generator/37.0.2/python"),
        "OpenAPI-Generator"
    );
}

#[test]
fn kubectl_takes_over_from_client_side_apply() {
    let annotation = "kubectl.kubernetes.io/last-applied-configuration";
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}});
    let mut live = applied.clone();
    live["metadata"]["annotations"] = json!({annotation: format!("{applied}\n")});
    let csa = Writer {
        manager: "kubectl-client-side-apply",
        subresource: None,
        api_version: "v1",
        structure: crate::schema::Structure::builtin("", "v1", "ConfigMap"),
    };
    record_update(None, &mut live, &csa, None);
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}, "data": {"a": "2"}});
    let kubectl = Writer {
        manager: "kubectl",
        subresource: None,
        api_version: "v1",
        structure: crate::schema::Structure::builtin("", "v1", "ConfigMap"),
    };
    // Another applier conflicts with the client-side apply's field.
    let other = Writer {
        manager: "other",
        ..kubectl
    };
    assert_eq!(
        apply(Some(&live), config.clone(), &other, false, None)
            .unwrap_err()
            .code,
        409
    );
    // kubectl takes it over and keeps the annotation in step, keys sorted.
    let moved = apply(Some(&live), config, &kubectl, false, None).unwrap();
    assert_eq!(moved["data"]["a"], "2");
    assert_eq!(
        moved["metadata"]["annotations"][annotation],
        "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}\n"
    );
    let csa_entry = entry(&moved, "kubectl-client-side-apply");
    // It keeps the map it made, not the value it set.
    assert_eq!(csa_entry["fieldsV1"]["f:data"], json!({}));
    // A field the annotation no longer describes as it is stays a conflict.
    let mut drifted = live.clone();
    drifted["data"]["a"] = json!("5");
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}, "data": {"a": "2"}});
    assert_eq!(
        apply(Some(&drifted), config, &kubectl, false, None)
            .unwrap_err()
            .code,
        409
    );
}

#[test]
fn at_most_ten_update_entries() {
    let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    for i in 0..12 {
        let before = object.clone();
        object["metadata"]["labels"][format!("l{i:02}")] = json!("x");
        let manager = format!("m{i:02}");
        let w = Writer {
            manager: &manager,
            subresource: None,
            api_version: "v1",
            structure: crate::schema::Structure::builtin("", "v1", "ConfigMap"),
        };
        record_update(Some(&before), &mut object, &w, None);
    }
    let list = entries(&object);
    assert_eq!(list.len(), 10);
    // The three oldest (m00, m01, m02; same second, so by name) became one entry.
    let ancient = entry(&object, "ancient-changes");
    assert_eq!(
        ancient["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:l00": {}, "f:l01": {}, "f:l02": {}}}})
    );
    assert!(entry(&object, "m02").is_null());
    assert!(!entry(&object, "m03").is_null());
}

#[test]
fn objects_without_managers_are_owned_before_the_first_apply() {
    let live = deployment(3, "nginx");
    let err = apply(
        Some(&live),
        deployment(2, "nginx"),
        &writer("kubectl"),
        false,
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "before-first-apply" using apps/v1: .spec.replicas"#
    );
    let applied = apply(
        Some(&live),
        deployment(3, "nginx"),
        &writer("kubectl"),
        false,
        None,
    )
    .unwrap();
    assert!(!entry(&applied, "before-first-apply").is_null());
    assert!(!entry(&applied, "kubectl").is_null());
}

#[test]
fn custom_resources_take_list_semantics_from_their_schema() {
    // Upstream's CRD lists are atomic unless the schema gives them a list type.
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "containers": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
    }}}});
    let writer = Writer {
        manager: "m",
        subresource: None,
        api_version: "example.com/v1",
        structure: crate::schema::Structure::Custom(Some(&schema)),
    };
    let config = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"containers": [{"name": "a"}], "ports": [{"name": "http", "port": 80}]}});
    let applied = apply(None, config, &writer, false, None).unwrap();
    assert_eq!(
        entry(&applied, "m")["fieldsV1"]["f:spec"],
        json!({
            "f:containers": {},
            "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}}},
        })
    );
}
