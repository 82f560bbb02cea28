//! The `kube-system/extension-apiserver-authentication` ConfigMap: what an extension API
//! server needs to authenticate requests as upstream's delegated authentication does.
//! Clients it may verify itself (the cluster CA), and the aggregator: a client
//! certificate from the front-proxy CA named `front-proxy-client`, asserting the user in
//! the `X-Remote-*` headers. Written on every start, so it follows the certificates.

use serde_json::{json, Value};

use crate::registry::{Action, Registry, SERVER_MANAGER};

pub const CONFIG_MAP: &str = "extension-apiserver-authentication";

/// The headers the aggregator names the user in (upstream's `--requestheader-*` flags).
pub const USER_HEADER: &str = "X-Remote-User";
pub const UID_HEADER: &str = "X-Remote-Uid";
pub const GROUP_HEADER: &str = "X-Remote-Group";
pub const EXTRA_HEADER_PREFIX: &str = "X-Remote-Extra-";

fn data(pki: &skiff_pki::ClusterPki) -> Value {
    let list = |items: &[&str]| json!(items).to_string();
    json!({
        "client-ca-file": pki.ca.cert_pem,
        "requestheader-client-ca-file": pki.front_proxy_ca.cert_pem,
        "requestheader-allowed-names": list(&[skiff_pki::FRONT_PROXY_CLIENT]),
        "requestheader-username-headers": list(&[USER_HEADER]),
        "requestheader-uid-headers": list(&[UID_HEADER]),
        "requestheader-group-headers": list(&[GROUP_HEADER]),
        "requestheader-extra-headers-prefix": list(&[EXTRA_HEADER_PREFIX]),
    })
}

/// Creates the ConfigMap, or brings its data up to date.
pub async fn publish(registry: &Registry, pki: &skiff_pki::ClusterPki) -> anyhow::Result<()> {
    let configmaps = registry
        .core("configmaps")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = data(pki);
    let object = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": "kube-system"},
        "data": data,
    });
    match registry
        .create(
            &configmaps,
            Some("kube-system"),
            object,
            SERVER_MANAGER,
            false,
        )
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => anyhow::bail!("creating the {CONFIG_MAP} ConfigMap: {e}"),
    }
    registry
        .guaranteed_update(
            &configmaps,
            Some("kube-system"),
            CONFIG_MAP,
            false,
            |mut current| {
                if current.get("data") == Some(&data) {
                    return Ok(Action::Keep);
                }
                current["data"] = data.clone();
                Ok(Action::Replace(current))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("updating the {CONFIG_MAP} ConfigMap: {e}"))?;
    Ok(())
}
