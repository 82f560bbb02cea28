//! A TLS client's verifier that trusts any server.

use std::sync::Arc;

/// Accepts any server certificate, still checking the handshake's signatures. Only
/// where the peer's identity is settled otherwise or does not matter: fetching the CA
/// whose hash the join token then checks, the API server reaching kubelets (as upstream
/// without `--kubelet-certificate-authority`), HTTPS probes and hooks (upstream's
/// `InsecureSkipVerify`).
#[derive(Debug)]
pub struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyServerCertificate {
    pub fn new() -> Arc<AnyServerCertificate> {
        Arc::new(AnyServerCertificate(Arc::new(
            rustls::crypto::ring::default_provider(),
        )))
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
