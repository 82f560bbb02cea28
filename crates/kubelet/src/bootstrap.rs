//! TLS bootstrapping, as upstream's kubelet does it: with a bootstrap credential that may
//! do nothing but ask, make a key, send a `CertificateSigningRequest` for the identity the
//! node's components act as, and wait until the cluster's approver and signer answer.
//! The certificate and key are kept in a kubeconfig beside the node's state and reused
//! while they stay valid.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

/// One identity to ask for.
pub struct Identity<'a> {
    /// Where its kubeconfig is kept.
    pub kubeconfig: &'a Path,
    pub user: &'a str,
    pub groups: &'a [&'a str],
    pub signer: &'a str,
}

/// A kept certificate is renewed once it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// How long the approver and signer get to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(300);

/// Whether the kubeconfig at `path` holds a client certificate for `user`, issued by
/// `ca_pem`, with more than a day left.
fn still_good(path: &Path, server: &str, ca_pem: &str) -> bool {
    let Ok(kubeconfig) = kube::config::Kubeconfig::read_from(path) else {
        return false;
    };
    let cluster_ok = kubeconfig.clusters.iter().any(|c| {
        c.cluster.as_ref().is_some_and(|c| {
            c.server.as_deref() == Some(server)
                && c.certificate_authority_data.as_deref().is_some_and(|data| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(data.trim())
                        .is_ok_and(|pem| pem == ca_pem.as_bytes())
                })
        })
    });
    let certificate = kubeconfig
        .auth_infos
        .iter()
        .find_map(|a| a.auth_info.as_ref()?.client_certificate_data.clone());
    let fresh = certificate
        .and_then(|data| {
            use base64::Engine;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .ok()?;
            skiff_pki::csr::not_after(&String::from_utf8(pem).ok()?).ok()
        })
        .is_some_and(|end| end > SystemTime::now() + RENEW_BEFORE);
    cluster_ok && fresh
}

/// Makes sure `identity.kubeconfig` holds a usable certificate, asking for one through
/// `bootstrap` (a client with the bootstrap token) if it does not.
pub async fn ensure_identity(
    bootstrap: &kube::Client,
    server: &str,
    ca_pem: &str,
    identity: &Identity<'_>,
) -> anyhow::Result<()> {
    if still_good(identity.kubeconfig, server, ca_pem) {
        return Ok(());
    }
    let (request, key) = skiff_pki::csr::request(identity.user, identity.groups)
        .context("making a key and certificate request")?;
    let csrs: Api<CertificateSigningRequest> = Api::all(bootstrap.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: identity.signer.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .with_context(|| format!("asking for a certificate for {}", identity.user))?;
    let name = created.metadata.name.unwrap_or_default();
    eprintln!(
        "skiff: asked for a certificate for {} (CertificateSigningRequest {name}); waiting for approval",
        identity.user
    );
    let started = Instant::now();
    let certificate = loop {
        let current = csrs.get(&name).await?;
        let status = current.status.unwrap_or_default();
        let refused = status
            .conditions
            .iter()
            .flatten()
            .find(|c| matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True");
        if let Some(condition) = refused {
            anyhow::bail!(
                "the certificate request {name} for {} was {}: {}",
                identity.user,
                condition.type_.to_lowercase(),
                condition.message.clone().unwrap_or_default()
            );
        }
        if let Some(certificate) = status.certificate.filter(|c| !c.0.is_empty()) {
            break String::from_utf8(certificate.0).context("the issued certificate is not PEM")?;
        }
        if started.elapsed() > ANSWER_WITHIN {
            anyhow::bail!(
                "no certificate for {} after {}s: is the controller manager running, and may the token ask (kubectl get csr {name})?",
                identity.user,
                ANSWER_WITHIN.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let contents = skiff_pki::kubeconfig(server, ca_pem, identity.user, &certificate, &key);
    skiff_pki::write_private_file(identity.kubeconfig, contents.as_bytes())?;
    eprintln!("skiff: certificate for {} issued", identity.user);
    Ok(())
}
