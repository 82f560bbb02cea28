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
    let csrs: Api<CertificateSigningRequest> = Api::all(bootstrap.clone());
    let asked = submit(
        &csrs,
        &Request {
            user: identity.user,
            groups: identity.groups,
            names: &[],
            signer: identity.signer,
            usages: &["digital signature", "client auth"],
            generate_name: "node-csr-",
        },
    )
    .await?;
    eprintln!(
        "skiff: asked for a certificate for {} (CertificateSigningRequest {}); waiting for approval",
        identity.user, asked.name
    );
    let certificate = wait_issued(&csrs, &asked.name, identity.user, ANSWER_WITHIN)
        .await?
        .with_context(|| {
            format!(
                "no certificate for {} after {}s: is the controller manager running, and may the token ask (kubectl get csr {})?",
                identity.user,
                ANSWER_WITHIN.as_secs(),
                asked.name
            )
        })?;
    let contents = skiff_pki::kubeconfig(server, ca_pem, identity.user, &certificate, &asked.key);
    skiff_pki::write_private_file(identity.kubeconfig, contents.as_bytes())?;
    eprintln!("skiff: certificate for {} issued", identity.user);
    Ok(())
}

/// A certificate to ask the cluster for.
pub struct Request<'a> {
    pub user: &'a str,
    pub groups: &'a [&'a str],
    /// DNS names and addresses (serving certificates).
    pub names: &'a [String],
    pub signer: &'a str,
    pub usages: &'a [&'a str],
    /// The request object's name prefix (upstream's kubelet: `node-csr-` when
    /// bootstrapping, `csr-` afterwards).
    pub generate_name: &'a str,
}

/// A request sent: the object's name and the private key it is for.
pub struct Asked {
    pub name: String,
    pub key: String,
}

/// Makes a key and sends a `CertificateSigningRequest` for it.
pub async fn submit(
    csrs: &Api<CertificateSigningRequest>,
    request: &Request<'_>,
) -> anyhow::Result<Asked> {
    let (pem, key) = skiff_pki::csr::request_for_names(request.user, request.groups, request.names)
        .context("making a key and certificate request")?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(request.generate_name.into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: request.signer.into(),
            usages: Some(request.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .with_context(|| format!("asking for a certificate for {}", request.user))?;
    Ok(Asked {
        name: created.metadata.name.unwrap_or_default(),
        key,
    })
}

/// Waits up to `within` for the request `name` to be answered: its certificate (PEM),
/// `None` if no answer came, an error if it was denied or failed.
pub async fn wait_issued(
    csrs: &Api<CertificateSigningRequest>,
    name: &str,
    user: &str,
    within: Duration,
) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    loop {
        let current = csrs.get(name).await?;
        let status = current.status.unwrap_or_default();
        let refused = status
            .conditions
            .iter()
            .flatten()
            .find(|c| matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True");
        if let Some(condition) = refused {
            anyhow::bail!(
                "the certificate request {name} for {user} was {}: {}",
                condition.type_.to_lowercase(),
                condition.message.clone().unwrap_or_default()
            );
        }
        if let Some(certificate) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok(Some(
                String::from_utf8(certificate.0).context("the issued certificate is not PEM")?,
            ));
        }
        if started.elapsed() > within {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
