//! Service-account credentials for the controllers, as upstream's controller manager uses
//! them with `--use-service-account-credentials`: each controller writes as the service
//! account `kube-system/<controller>` (bound by the bootstrap policy to its
//! `system:controller:<controller>` role), so that it holds only its own rights; the
//! shared informers read with the controller manager's own identity.
//!
//! Each account's token comes from the `TokenRequest` API (an hour long) and is renewed
//! every half hour in place: the client sends whatever token is current.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use http::HeaderValue;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};

/// The accounts the controllers act as: upstream's names for them.
pub const ACCOUNTS: &[&str] = &[
    "certificate-controller",
    "cronjob-controller",
    "daemon-set-controller",
    "deployment-controller",
    "disruption-controller",
    "endpoint-controller",
    "endpointslice-controller",
    "endpointslicemirroring-controller",
    "generic-garbage-collector",
    "horizontal-pod-autoscaler",
    "job-controller",
    "namespace-controller",
    "node-controller",
    "pod-garbage-collector",
    "replicaset-controller",
    "replication-controller",
    "resourcequota-controller",
    "root-ca-cert-publisher",
    "service-account-controller",
    "service-controller",
    "statefulset-controller",
    "ttl-after-finished-controller",
];

const NAMESPACE: &str = "kube-system";
const TOKEN_SECONDS: i64 = 3600;
const RENEW_EVERY: Duration = Duration::from_secs(1800);

/// One account's current token, shared with the client that sends it.
type Token = Arc<RwLock<HeaderValue>>;

async fn request_token(root: &kube::Client, account: &str) -> anyhow::Result<HeaderValue> {
    let accounts: Api<ServiceAccount> = Api::namespaced(root.clone(), NAMESPACE);
    let wanted = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(account.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match accounts.create(&PostParams::default(), &wanted).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("creating service account {account}")),
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer: TokenRequest = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("a token for service account {account}"))?;
    let token = answer
        .status
        .and_then(|s| s.token)
        .with_context(|| format!("no token in the answer for {account}"))?;
    HeaderValue::from_str(&format!("Bearer {token}"))
        .with_context(|| format!("the token of {account} is not a header value"))
}

/// A client for `account`: the root configuration's server and CA, no client
/// certificate, and the account's current token.
fn client_for(config: &kube::Config, token: Token) -> anyhow::Result<kube::Client> {
    let mut config = config.clone();
    config.auth_info = Default::default();
    let layer =
        tower::util::MapRequestLayer::new(move |mut request: http::Request<kube::client::Body>| {
            if let Ok(value) = token.read() {
                request
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, value.clone());
            }
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

/// Creates the controllers' accounts, gets their tokens, and keeps them renewed.
pub async fn service_account_clients(
    root: &kube::Client,
    config: &kube::Config,
) -> anyhow::Result<HashMap<String, kube::Client>> {
    let mut tokens = Vec::new();
    let mut clients = HashMap::new();
    for account in ACCOUNTS {
        let token: Token = Arc::new(RwLock::new(request_token(root, account).await?));
        clients.insert(account.to_string(), client_for(config, token.clone())?);
        tokens.push((*account, token));
    }
    let root = root.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            for (account, token) in &tokens {
                match request_token(&root, account).await {
                    Ok(fresh) => {
                        if let Ok(mut current) = token.write() {
                            *current = fresh;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(account, error = %format!("{error:#}"), "renewing a controller's token")
                    }
                }
            }
        }
    });
    Ok(clients)
}
