//! The cluster's certificates: a CA made on first start, and the certificates it signs.
//!
//! Files live under `DIR/tls/` (the server's data dir). Every file is reused on later
//! starts, so clients holding the admin kubeconfig keep working across restarts; a
//! certificate is only made when its file is missing. The serving certificate is the
//! exception that proves the rule: it is remade when the names it must cover change
//! (a new host name or bind address), still signed by the same CA.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub mod csr;
pub mod insecure;
pub mod join;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("joining the cluster: {0}")]
    Join(String),
}

pub type Result<T> = std::result::Result<T, PkiError>;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// The cluster's CA and the certificates of the API server.
pub struct ClusterPki {
    pub dir: PathBuf,
    pub ca: CertPair,
    pub serving: CertPair,
    pub admin: CertPair,
    /// The key that signs service-account tokens (ECDSA P-256, PKCS#8 PEM).
    pub service_account_key_pem: String,
    /// A CA of its own for the certificate the API server presents to the extension API
    /// servers it proxies to (upstream's front-proxy CA): they trust it for exactly
    /// that, and a client certificate from the cluster CA is no proof of it.
    pub front_proxy_ca: CertPair,
    /// The aggregator's client certificate (`front-proxy-client`), signed by
    /// `front_proxy_ca`.
    pub front_proxy_client: CertPair,
}

/// The common name of the aggregator's client certificate, the one name extension API
/// servers allow to assert a user through request headers.
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// Who a client certificate says its holder is: user from CN, groups from O.
pub struct ClientIdentity<'a> {
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

impl ClusterPki {
    /// Loads the PKI under `data_dir/tls`, creating whatever is missing.
    /// `serving_names` are the DNS names and IP addresses the API server answers on.
    pub fn load_or_create(data_dir: &Path, serving_names: &[String]) -> Result<Self> {
        let dir = data_dir.join("tls");
        create_dir(&dir)?;
        let ca = load_or_make(&dir, "ca", |_| make_ca("skiff-ca"))?;
        let ca_key = KeyPair::from_pem(&ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key)?;

        let names_path = dir.join("serving.names");
        let wanted_names = serving_names.join(",");
        let previous_names = fs::read_to_string(&names_path).unwrap_or_default();
        if previous_names.trim() != wanted_names {
            remove_if_present(&dir.join("serving.crt"))?;
        }
        let serving = load_or_make(&dir, "serving", |_| make_serving(serving_names, &issuer))?;
        write_file(&names_path, wanted_names.as_bytes())?;

        let admin = load_or_make(&dir, "admin", |_| {
            make_client(
                &ClientIdentity {
                    user: "system:admin",
                    groups: &["system:masters"],
                },
                &issuer,
            )
        })?;
        let sa_key_path = dir.join("service-account.key");
        let service_account_key_pem = match fs::read_to_string(&sa_key_path) {
            Ok(pem) => pem,
            Err(_) => {
                let pem = KeyPair::generate()?.serialize_pem();
                write_file(&sa_key_path, pem.as_bytes())?;
                pem
            }
        };
        let front_proxy_ca = load_or_make(&dir, "front-proxy-ca", |_| make_ca("front-proxy-ca"))?;
        let front_proxy_key = KeyPair::from_pem(&front_proxy_ca.key_pem)?;
        let front_proxy_issuer =
            Issuer::from_ca_cert_pem(&front_proxy_ca.cert_pem, &front_proxy_key)?;
        let front_proxy_client = load_or_make(&dir, "front-proxy-client", |_| {
            make_client(
                &ClientIdentity {
                    user: FRONT_PROXY_CLIENT,
                    groups: &[],
                },
                &front_proxy_issuer,
            )
        })?;
        Ok(ClusterPki {
            dir,
            ca,
            serving,
            admin,
            service_account_key_pem,
            front_proxy_ca,
            front_proxy_client,
        })
    }

    /// Signs a client certificate for `identity` with the cluster CA (not stored).
    pub fn issue_client(&self, identity: &ClientIdentity<'_>) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key)?;
        make_client(identity, &issuer)
    }

    /// A kubeconfig that reaches `server` as the admin, with every credential inline.
    pub fn admin_kubeconfig(&self, server: &str) -> String {
        kubeconfig(
            server,
            &self.ca.cert_pem,
            "admin",
            &self.admin.cert_pem,
            &self.admin.key_pem,
        )
    }
}

/// A kubeconfig with one cluster, one user and one context, all named `skiff` (the user
/// is named `user`), with certificates embedded as base64 so that the file stands alone.
/// The address other machines reach this one at: the source address of the default
/// route (no packet is sent), else loopback. Kubelets register it as the node's
/// InternalIP; an API server bound to every address advertises it.
pub fn default_host_ip() -> std::net::IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:53")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: skiff\ncontexts:\n- context:\n    cluster: skiff\n    user: {user}\n  name: skiff\ncurrent-context: skiff\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

/// Writes `contents` to `path` readable by its owner only, atomically (temp file + rename).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_file(path, contents)
}

fn load_or_make(
    dir: &Path,
    name: &str,
    make: impl FnOnce(&str) -> Result<(String, String)>,
) -> Result<CertPair> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if let (Ok(cert_pem), Ok(key_pem)) = (
        fs::read_to_string(&cert_path),
        fs::read_to_string(&key_path),
    ) {
        return Ok(CertPair {
            cert_pem,
            key_pem,
            cert_path,
            key_path,
        });
    }
    let (cert_pem, key_pem) = make(name)?;
    write_file(&key_path, key_pem.as_bytes())?;
    write_file(&cert_path, cert_pem.as_bytes())?;
    tracing::info!(certificate = %cert_path.display(), "created certificate");
    Ok(CertPair {
        cert_pem,
        key_pem,
        cert_path,
        key_path,
    })
}

fn base_params(common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.not_before = date_time_ymd(2025, 1, 1);
    params.not_after = date_time_ymd(2035, 1, 1);
    Ok(params)
}

fn make_ca(common_name: &str) -> Result<(String, String)> {
    let mut params = base_params(common_name)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn make_serving(names: &[String], issuer: &Issuer<'_, &KeyPair>) -> Result<(String, String)> {
    let mut params = base_params("skiff-apiserver")?;
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn make_client(
    identity: &ClientIdentity<'_>,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<(String, String)> {
    let mut params = base_params(identity.user)?;
    for group in identity.groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        action: "creating",
        path: dir.to_path_buf(),
        source,
    })
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PkiError::Io {
            action: "removing",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| PkiError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject_of(pem_text: &str) -> String {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        cert.subject().to_string()
    }

    #[test]
    fn creates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let first = ClusterPki::load_or_create(dir.path(), &names).unwrap();
        let second = ClusterPki::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_eq!(first.serving.cert_pem, second.serving.cert_pem);
        assert_eq!(first.admin.key_pem, second.admin.key_pem);
        assert!(subject_of(&first.admin.cert_pem).contains("CN=system:admin"));
        assert!(subject_of(&first.admin.cert_pem).contains("O=system:masters"));
        assert_eq!(
            first.front_proxy_client.cert_pem,
            second.front_proxy_client.cert_pem
        );
        assert_eq!(
            subject_of(&first.front_proxy_client.cert_pem),
            "CN=front-proxy-client"
        );
        assert_ne!(first.front_proxy_ca.cert_pem, first.ca.cert_pem);
    }

    #[test]
    fn serving_cert_follows_names_but_ca_stays() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterPki::load_or_create(dir.path(), &["localhost".into()]).unwrap();
        let second =
            ClusterPki::load_or_create(dir.path(), &["localhost".into(), "10.0.0.1".into()])
                .unwrap();
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_ne!(first.serving.cert_pem, second.serving.cert_pem);
    }

    #[test]
    fn kubeconfig_embeds_credentials() {
        let text = kubeconfig("https://127.0.0.1:6443", "CA", "admin", "CERT", "KEY");
        assert!(text.contains("server: https://127.0.0.1:6443"));
        assert!(text.contains("certificate-authority-data: Q0E="));
        assert!(text.contains("client-key-data: S0VZ"));
    }
}
