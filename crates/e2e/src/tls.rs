//! Certificates for the HTTPS servers tests run for the API server to call (admission
//! webhooks, extension API servers), made with the `openssl` command: a CA of the
//! test's own and a serving certificate it signs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a serving certificate, in a temporary directory that lives as long as this.
pub struct ServingCertificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub dir: tempfile::TempDir,
}

impl ServingCertificate {
    /// The CA certificate, base64 (as a `caBundle` holds it).
    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        let ca = std::fs::read(&self.ca).expect("CA certificate");
        base64::engine::general_purpose::STANDARD.encode(ca)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new CA, and a certificate it signs for `subject_alt_name` (`IP:127.0.0.1`,
/// `DNS:api.ns.svc`); P-256 keys, valid one day.
pub fn serving_certificate(subject_alt_name: &str) -> ServingCertificate {
    let dir = tempfile::tempdir().expect("temp dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir.path(),
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-days",
                "1",
                "-subj",
                "/CN=test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        dir.path(),
        &[
            &["req", "-new"],
            &ec[..],
            &[
                "-subj",
                "/CN=test-server",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.path().join("ext.cnf"),
        format!("subjectAltName={subject_alt_name}\n"),
    )
    .expect("ext");
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    ServingCertificate {
        ca: dir.path().join("ca.crt"),
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        dir,
    }
}
