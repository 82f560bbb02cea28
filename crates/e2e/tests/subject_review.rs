//! Upstream's "SubjectReview, API Operations" conformance steps with kube-rs: what a
//! SubjectAccessReview and a LocalSubjectAccessReview answer for a service account is what
//! the same request, impersonating that account, actually gets; before and after the
//! account is bound to `view`.

use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use skiff_e2e::shared;

#[test]
fn subject_reviews_answer_what_requests_get() {
    let server = shared();
    let ns = server.namespace("review");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let client = server.client().await;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let account: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "e2e"}}))
                .expect("account");
        let account = accounts
            .create(&PostParams::default(), &account)
            .await
            .expect("create account");
        let username = format!("system:serviceaccount:{ns}:e2e");
        let groups = vec![
            "system:authenticated".to_string(),
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ];
        let uid = account.metadata.uid.clone().expect("uid");
        let spec = SubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("list".into()),
                resource: Some("configmaps".into()),
                namespace: Some(ns.clone()),
                version: Some("v1".into()),
                ..Default::default()
            }),
            user: Some(username.clone()),
            groups: Some(groups.clone()),
            uid: Some(uid.clone()),
            ..Default::default()
        };
        // The same client, impersonating the account (user, uid and groups).
        let mut config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig"),
            &Default::default(),
        )
        .await
        .expect("config");
        config.auth_info.impersonate = Some(username.clone());
        config.auth_info.impersonate_groups = Some(groups.clone());
        let impersonated = kube::Client::try_from(config).expect("client");
        let maps: Api<ConfigMap> = Api::namespaced(impersonated, &ns);

        for bound in [false, true] {
            if bound {
                server.ok(&[
                    "create",
                    "rolebinding",
                    "e2e-view",
                    "-n",
                    &ns,
                    "--clusterrole=view",
                    &format!("--serviceaccount={ns}:e2e"),
                ]);
            }
            let review = SubjectAccessReview {
                spec: spec.clone(),
                ..Default::default()
            };
            let answer = Api::<SubjectAccessReview>::all(client.clone())
                .create(&PostParams::default(), &review)
                .await
                .expect("a SubjectAccessReview");
            let expected = answer.status.expect("status").allowed;
            let actually = match maps.list(&ListParams::default()).await {
                Ok(_) => true,
                Err(kube::Error::Api(status)) if status.code == 403 => false,
                Err(other) => panic!("unexpected error: {other}"),
            };
            assert_eq!(
                expected, actually,
                "SubjectAccessReview (bound to view: {bound})"
            );
            assert_eq!(expected, bound);
            let local = LocalSubjectAccessReview {
                metadata: kube::api::ObjectMeta {
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                spec: spec.clone(),
                ..Default::default()
            };
            let answer = Api::<LocalSubjectAccessReview>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &local)
                .await
                .expect("a LocalSubjectAccessReview");
            assert_eq!(
                answer.status.expect("status").allowed,
                actually,
                "LocalSubjectAccessReview (bound: {bound})"
            );
        }
    });
}
