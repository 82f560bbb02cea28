//! The kubelet's serving certificate from the cluster, as upstream's kubelet gets it with
//! `serverTLSBootstrap` (`--rotate-server-certificates`): a key and a
//! `CertificateSigningRequest` for `system:node:<name>` in `system:nodes`, valid for the
//! node's name and address, to the `kubernetes.io/kubelet-serving` signer. Nothing
//! approves such requests by itself (upstream's rule: a node must not vouch for its own
//! names); an administrator does, with `kubectl certificate approve`.
//!
//! Until a certificate is issued the kubelet's server refuses TLS handshakes, as
//! upstream's does. The certificate and key are kept in
//! `<root>/pki/kubelet-server-<time>.pem`, named by the `kubelet-server-current.pem`
//! link, and reused after a restart; a new one is asked for at a random point between
//! 70% and 90% of the current one's lifetime, or at once if the node's names changed,
//! while the current one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::bootstrap;

const SIGNER: &str = "kubernetes.io/kubelet-serving";
const CURRENT: &str = "kubelet-server-current.pem";
/// How long a request waits for an answer before a new one is sent (upstream's
/// certificate manager's wait).
const ANSWER_WITHIN: Duration = Duration::from_secs(15 * 60);
/// Upstream's certificate manager's pauses after a request that was refused, went
/// unanswered or failed: 2 s doubling for four steps, then 32 s between attempts for as
/// long as it takes (each up to 10% longer, so that nodes spread out). Never ends.
fn retry_delays() -> impl Iterator<Item = Duration> {
    [2, 4, 8, 16]
        .into_iter()
        .chain(std::iter::repeat(32))
        .map(Duration::from_secs)
}

/// The certificate the kubelet's server presents: none until the cluster issues one.
#[derive(Debug)]
pub struct ServingCertificate {
    current: RwLock<Option<Kept>>,
    dir: PathBuf,
    node_name: String,
    /// The DNS names and addresses it must be valid for.
    names: Vec<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug, Clone)]
struct Kept {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    names: Vec<String>,
}

impl rustls::server::ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|kept| kept.key.clone())
    }
}

/// Parses a file of a PEM certificate chain followed by its PEM key.
fn parse(pem: &str, provider: &rustls::crypto::CryptoProvider) -> anyhow::Result<Kept> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("reading the certificate")?;
    anyhow::ensure!(!chain.is_empty(), "no certificate");
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).context("reading the key")?;
    let key =
        CertifiedKey::from_der(chain, key, provider).context("pairing key and certificate")?;
    let (not_before, not_after) = skiff_pki::csr::validity(pem).map_err(anyhow::Error::msg)?;
    let names = skiff_pki::csr::alternative_names(pem).map_err(anyhow::Error::msg)?;
    Ok(Kept {
        key: Arc::new(key),
        not_before,
        not_after,
        names,
    })
}

/// When to ask for the next certificate: upstream's jittered point between 70% and 90%
/// of the certificate's lifetime. `jitter` is in [0, 1).
fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs between nodes and restarts: it only spreads renewals.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

impl ServingCertificate {
    /// The serving certificate kept under `root_dir`, if a valid one is.
    pub fn load(root_dir: &Path, node_name: &str, names: Vec<String>) -> Arc<ServingCertificate> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let dir = root_dir.join("pki");
        let kept = std::fs::read_to_string(dir.join(CURRENT))
            .ok()
            .and_then(|pem| match parse(&pem, &provider) {
                Ok(kept) => Some(kept),
                Err(error) => {
                    tracing::warn!(%error, "the kept serving certificate is unusable");
                    None
                }
            })
            .filter(|kept| kept.not_after > SystemTime::now());
        Arc::new(ServingCertificate {
            current: RwLock::new(kept),
            dir,
            node_name: node_name.to_string(),
            names,
            provider,
        })
    }

    /// When the current certificate should be replaced: now if there is none or its
    /// names are not the node's.
    fn renew_at(&self) -> SystemTime {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(kept) if kept.names == self.names => {
                rotation_deadline(kept.not_before, kept.not_after, jitter())
            }
            _ => SystemTime::now(),
        }
    }

    /// Keeps a certificate from the cluster, renewing it as it ages.
    pub async fn run(self: Arc<Self>, client: kube::Client) {
        let csrs: Api<CertificateSigningRequest> = Api::all(client);
        let mut retries = retry_delays();
        loop {
            let wait = self
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            match self.renew(&csrs).await {
                Ok(true) => {
                    retries = retry_delays();
                    continue;
                }
                Ok(false) => tracing::warn!(
                    "no answer to the serving certificate request in {} minutes",
                    ANSWER_WITHIN.as_secs() / 60
                ),
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "renewing the serving certificate failed"
                ),
            }
            let pause = retries
                .next()
                .unwrap_or_default()
                .mul_f64(1.0 + 0.1 * jitter());
            tracing::info!(
                "asking for a serving certificate again in {:.1} s",
                pause.as_secs_f64()
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// Asks for a certificate and waits for it; whether one was issued (and is now
    /// served).
    async fn renew(&self, csrs: &Api<CertificateSigningRequest>) -> anyhow::Result<bool> {
        let user = format!("system:node:{}", self.node_name);
        let asked = bootstrap::submit(
            csrs,
            &bootstrap::Request {
                user: &user,
                groups: &["system:nodes"],
                names: &self.names,
                signer: SIGNER,
                // Upstream's usages for an ECDSA key: no key encipherment.
                usages: &["digital signature", "server auth"],
                generate_name: "csr-",
            },
        )
        .await?;
        tracing::info!(request = %asked.name, "asked for a serving certificate; waiting for approval (kubectl certificate approve {})", asked.name);
        let Some(certificate) =
            bootstrap::wait_issued(csrs, &asked.name, &user, ANSWER_WITHIN).await?
        else {
            return Ok(false);
        };
        let pem = format!("{}\n{}", certificate.trim_end(), asked.key);
        let kept = parse(&pem, &self.provider).context("the issued certificate")?;
        self.keep(&pem)?;
        tracing::info!(request = %asked.name, "serving certificate issued");
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        Ok(true)
    }

    /// Writes the certificate and key beside the earlier ones and points the current
    /// link at them, replacing the link in one rename.
    fn keep(&self, pem: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let stamp = jiff::Timestamp::now()
            .strftime("%Y-%m-%d-%H-%M-%S")
            .to_string();
        let file = format!("kubelet-server-{stamp}.pem");
        skiff_pki::write_private_file(&self.dir.join(&file), pem.as_bytes())?;
        let link = self.dir.join(format!("{CURRENT}.new"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link)
            .with_context(|| format!("linking {}", link.display()))?;
        std::fs::rename(&link, self.dir.join(CURRENT))
            .with_context(|| format!("replacing {}", self.dir.join(CURRENT).display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_as_upstream_certificate_manager() {
        let secs: Vec<u64> = retry_delays().take(7).map(|d| d.as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn rotation_falls_between_seventy_and_ninety_percent_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(1000);
        assert_eq!(
            rotation_deadline(start, end, 0.0),
            start + Duration::from_secs(700)
        );
        assert_eq!(
            rotation_deadline(start, end, 0.5),
            start + Duration::from_secs(800)
        );
        assert!(rotation_deadline(start, end, 0.999_999) < start + Duration::from_secs(900));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn a_kept_certificate_is_served_after_a_restart_unless_expired_or_renamed() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let names = vec!["node-1".to_string(), "10.0.0.7".to_string()];
        let empty = ServingCertificate::load(root.path(), "node-1", names.clone());
        assert!(empty.current.read().map(|c| c.is_none()).unwrap_or(false));
        assert!(empty.renew_at() <= SystemTime::now());

        let (request, key) =
            skiff_pki::csr::request_for_names("system:node:node-1", &["system:nodes"], &names)
                .unwrap_or_else(|e| panic!("{e}"));
        let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let ca = (ca_cert.pem(), ca_key.serialize_pem());
        let usages = vec!["digital signature".to_string(), "server auth".to_string()];
        let cert = skiff_pki::csr::sign(&ca.0, &ca.1, &request, &usages, Duration::from_secs(3600))
            .unwrap_or_else(|e| panic!("{e}"));
        empty
            .keep(&format!("{}\n{key}", cert.trim_end()))
            .unwrap_or_else(|e| panic!("{e}"));

        let reloaded = ServingCertificate::load(root.path(), "node-1", names.clone());
        assert!(reloaded
            .current
            .read()
            .map(|c| c.is_some())
            .unwrap_or(false));
        let renew_in = reloaded
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        // The signer backdates by 5 minutes: 70–90% of 65 minutes from 5 minutes ago,
        // 2,430–3,210 s from now.
        assert!(
            renew_in > Duration::from_secs(2400) && renew_in < Duration::from_secs(3220),
            "{renew_in:?}"
        );
        let renamed = ServingCertificate::load(root.path(), "node-1", vec!["node-1".into()]);
        assert!(renamed.renew_at() <= SystemTime::now());
    }
}
