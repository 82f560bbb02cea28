//! `PullImage`: fetching an image from an OCI distribution registry with
//! `oci-client`, trying the configured mirrors first. Every blob is written to
//! the store through [`ImageStore::put_blob`], which verifies its digest.

use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt;

use super::registries::{Endpoint, RegistriesConfig};
use super::store::{ImageRecord, ImageStore};
use crate::error::{Error, IoContext, Result};
use crate::reference::Reference;

const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Credentials from the CRI request, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullAuth {
    pub username: String,
    pub password: String,
    pub registry_token: String,
}

impl PullAuth {
    /// The credentials of a CRI `AuthConfig`: `username` and `password`, or else `auth`
    /// (base64 of `user:password`, as docker configs and crictl carry them), and
    /// `registry_token` for registries that take a bearer token as it is.
    pub fn from_cri(auth: crate::proto::AuthConfig) -> Result<PullAuth> {
        let (username, password) = if auth.username.is_empty() && !auth.auth.is_empty() {
            use base64::Engine;
            let bad = || Error::InvalidArgument("auth must be base64 of user:password".into());
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.auth.trim())
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.auth.trim())
                })
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
            (user.to_string(), password.to_string())
        } else {
            (auth.username, auth.password)
        };
        Ok(PullAuth {
            username,
            password,
            registry_token: auth.registry_token,
        })
    }
}

/// Pulls `name` (normalised first) and records it in the store.
pub async fn pull(
    store: Arc<ImageStore>,
    registries: &RegistriesConfig,
    name: &str,
    auth: &PullAuth,
) -> Result<ImageRecord> {
    let reference = Reference::parse(name)?;
    let mut errors = Vec::new();
    for ep in registries.endpoints(&reference.registry) {
        match pull_from(store.clone(), registries, &reference, &ep, auth).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::info!(image = %reference, endpoint = %ep.host, error = %e, "pull attempt failed");
                errors.push(format!("{}: {e}", ep.host));
            }
        }
    }
    Err(Error::Registry(format!(
        "pull {reference}: {}",
        errors.join("; ")
    )))
}

async fn pull_from(
    store: Arc<ImageStore>,
    registries: &RegistriesConfig,
    reference: &Reference,
    ep: &Endpoint,
    auth: &PullAuth,
) -> Result<ImageRecord> {
    let host_cfg = registries.host_config(&ep.host);
    let config = ClientConfig {
        protocol: if ep.plain_http {
            ClientProtocol::HttpsExcept(vec![ep.host.clone()])
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: host_cfg
            .and_then(|h| h.tls.as_ref())
            .is_some_and(|t| t.insecure_skip_verify),
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        ..Default::default()
    };
    let client = oci_client::Client::new(config);
    let registry_auth = if !auth.registry_token.is_empty() {
        RegistryAuth::Bearer(auth.registry_token.clone())
    } else if !auth.username.is_empty() {
        RegistryAuth::Basic(auth.username.clone(), auth.password.clone())
    } else if let Some(a) = host_cfg.and_then(|h| h.auth.as_ref()) {
        RegistryAuth::Basic(a.username.clone(), a.password.clone())
    } else {
        RegistryAuth::Anonymous
    };
    let mut oref = match (&reference.tag, &reference.digest) {
        (_, Some(d)) => oci_client::Reference::with_digest(
            ep.host.clone(),
            reference.repository.clone(),
            d.clone(),
        ),
        (Some(t), None) => oci_client::Reference::with_tag(
            ep.host.clone(),
            reference.repository.clone(),
            t.clone(),
        ),
        (None, None) => return Err(Error::InvalidArgument(format!("{reference} has no tag"))),
    };

    // Resolve an index to its linux/amd64 manifest, keeping raw bytes so their
    // digest can be checked.
    let (mut bytes, mut digest) = client
        .pull_manifest_raw(&oref, &registry_auth, ACCEPTED)
        .await
        .map_err(registry_error)?;
    for _ in 0..2 {
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::json("parse manifest", e))?;
        let Some(list) = v.get("manifests").and_then(|m| m.as_array()) else {
            break;
        };
        let chosen = list
            .iter()
            .find(|m| {
                m.pointer("/platform/os").and_then(|o| o.as_str()) == Some("linux")
                    && m.pointer("/platform/architecture").and_then(|a| a.as_str()) == Some("amd64")
            })
            .and_then(|m| m.get("digest").and_then(|d| d.as_str()))
            .ok_or_else(|| Error::NotFound(format!("linux/amd64 manifest for {reference}")))?
            .to_string();
        oref = oci_client::Reference::with_digest(
            ep.host.clone(),
            reference.repository.clone(),
            chosen,
        );
        (bytes, digest) = client
            .pull_manifest_raw(&oref, &registry_auth, ACCEPTED)
            .await
            .map_err(registry_error)?;
    }
    let manifest: oci_spec::image::ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::json("parse image manifest", e))?;
    let mut blobs = vec![manifest.config().clone()];
    blobs.extend(manifest.layers().iter().cloned());
    for desc in blobs {
        let d = desc.digest().to_string();
        if store.has_blob(&d) {
            continue;
        }
        let tmp = store
            .root()
            .join("tmp")
            .join(format!("pull-{}", uuid::Uuid::new_v4().simple()));
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .path_ctx("create", &tmp)?;
        let od = oci_client::manifest::OciDescriptor {
            media_type: desc.media_type().to_string(),
            digest: d.clone(),
            size: desc.size() as i64,
            ..Default::default()
        };
        let res = client.pull_blob(&oref, &od, &mut f).await;
        f.flush().await.path_ctx("flush", &tmp)?;
        drop(f);
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(registry_error(e));
        }
        let st = store.clone();
        let tmp2 = tmp.clone();
        let res = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&tmp2).path_ctx("open", &tmp2)?;
            st.put_blob(file, Some(&d))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let _ = tokio::fs::remove_file(&tmp).await;
        res?;
    }
    let names = vec![reference.to_string()];
    let st = store.clone();
    let manifest_bytes = bytes.to_vec();
    let want = if reference.digest.is_some() && !digest.starts_with("sha256:") {
        None
    } else {
        Some(digest.clone())
    };
    tokio::task::spawn_blocking(move || {
        let (md, _) = st.put_blob(&manifest_bytes[..], want.as_deref())?;
        st.add_image(&md, &names)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

/// A registry's refusal in words that say what happened (oci-client's own leave out
/// the status), as containerd words it.
fn registry_error(e: oci_client::errors::OciDistributionError) -> Error {
    use oci_client::errors::OciDistributionError as Oci;
    Error::Registry(match e {
        Oci::UnauthorizedError { url } => {
            format!("unexpected status from GET request to {url}: 401 Unauthorized")
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_auth_in_either_form() {
        let auth = |a: crate::proto::AuthConfig| PullAuth::from_cri(a);
        let plain = auth(crate::proto::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        })
        .expect("plain");
        assert_eq!(
            (plain.username.as_str(), plain.password.as_str()),
            ("u", "p")
        );
        for encoded in ["dTpwOnc=", "dTpwOnc"] {
            let decoded = auth(crate::proto::AuthConfig {
                auth: encoded.into(),
                ..Default::default()
            })
            .expect(encoded);
            assert_eq!(
                (decoded.username.as_str(), decoded.password.as_str()),
                ("u", "p:w")
            );
        }
        assert!(auth(crate::proto::AuthConfig {
            auth: "bm9jb2xvbg==".into(),
            ..Default::default()
        })
        .is_err());
        assert_eq!(
            auth(crate::proto::AuthConfig::default()).expect("none"),
            PullAuth::default()
        );
    }
}
