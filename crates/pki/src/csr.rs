//! Certificate signing requests, both ends: a node agent makes a key and a request for the
//! identity it wants (`system:node:<name>`, say); the cluster's signer turns an approved
//! request into a certificate signed by the cluster CA, with the usages and lifetime the
//! `CertificateSigningRequest` object asked for.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::{PkiError as Error, Result};

/// A new private key (PEM) and a PEM request for a certificate naming `user` (CN) and
/// `groups` (O), as a client certificate's subject tells the API server who it is.
pub fn request(user: &str, groups: &[&str]) -> Result<(String, String)> {
    request_for_names(user, groups, &[])
}

/// [`request`], also naming the DNS names and IP addresses (`names`) a serving
/// certificate must be valid for.
pub fn request_for_names(
    user: &str,
    groups: &[&str],
    names: &[String],
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.distinguished_name.push(DnType::CommonName, user);
    let key = KeyPair::generate()?;
    let request = params.serialize_request(&key)?;
    Ok((request.pem()?, key.serialize_pem()))
}

/// The subject a PEM request asks for: its common name and organizations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Whether the request also names DNS names, addresses, e-mail addresses or URIs.
    pub has_alternative_names: bool,
}

/// Parses a PEM `CERTIFICATE REQUEST` and checks its signature (which proves the requester
/// holds the key), as upstream's `ParseCSR` does.
pub fn parse(pem: &str) -> std::result::Result<Subject, String> {
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    request
        .verify_signature()
        .map_err(|_| "x509: the certificate request's signature does not verify".to_string())?;
    let info = &request.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = info
        .subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let has_alternative_names = request
        .requested_extensions()
        .is_some_and(|mut extensions| {
            extensions.any(|e| {
                matches!(
                    e,
                    x509_parser::extensions::ParsedExtension::SubjectAlternativeName(names)
                        if !names.general_names.is_empty()
                )
            })
        });
    Ok(Subject {
        common_name,
        organizations,
        has_alternative_names,
    })
}

/// Signs `request_pem` with the CA for `usages` (upstream's names: `client auth`, `digital
/// signature`, ...), valid from now for `lifetime`, not past the CA's own end.
pub fn sign(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    request_pem: &str,
    usages: &[String],
    lifetime: Duration,
) -> Result<String> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, &ca_key)?;
    let mut request = CertificateSigningRequestParams::from_pem(request_pem)?;
    let params = &mut request.params;
    // Backdated a little, as upstream's signer does, for clocks slightly behind.
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(5 * 60);
    let ca_end = ca_not_after(ca_cert_pem)?;
    let not_after = (now + lifetime).min(ca_end);
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages.clear();
    params.extended_key_usages.clear();
    for usage in usages {
        match usage.as_str() {
            "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "content commitment" => params.key_usages.push(KeyUsagePurpose::ContentCommitment),
            "data encipherment" => params.key_usages.push(KeyUsagePurpose::DataEncipherment),
            "key agreement" => params.key_usages.push(KeyUsagePurpose::KeyAgreement),
            "client auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth),
            "code signing" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::CodeSigning),
            "email protection" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::EmailProtection),
            other => return Err(Error::Join(format!("unsupported key usage {other:?}"))),
        }
    }
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| Error::Join("no randomness for a serial number".into()))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(request.signed_by(&issuer)?.pem())
}

/// When a PEM certificate stops being valid.
pub fn not_after(cert_pem: &str) -> std::result::Result<SystemTime, String> {
    validity(cert_pem).map(|(_, end)| end)
}

/// When a PEM certificate (the first, in a chain) starts and stops being valid.
pub fn validity(cert_pem: &str) -> std::result::Result<(SystemTime, SystemTime), String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let certificate = block
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let at = |time: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(time.timestamp().max(0) as u64)
    };
    let validity = certificate.validity();
    Ok((at(validity.not_before), at(validity.not_after)))
}

/// The DNS names and IP addresses a PEM certificate is valid for, as `request_for_names`
/// takes them.
pub fn alternative_names(cert_pem: &str) -> std::result::Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let certificate = block
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let Some(names) = certificate
        .subject_alternative_name()
        .map_err(|e| format!("subject alternative names: {e}"))?
    else {
        return Ok(vec![]);
    };
    Ok(names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

fn ca_not_after(ca_cert_pem: &str) -> Result<SystemTime> {
    not_after(ca_cert_pem).map_err(|e| Error::Join(format!("the cluster CA: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_signed_for_the_usages_asked() {
        let (request, key) = request("system:node:n1", &["system:nodes"]).expect("request");
        assert!(key.contains("PRIVATE KEY"));
        let subject = parse(&request).expect("parses");
        assert_eq!(subject.common_name, "system:node:n1");
        assert_eq!(subject.organizations, vec!["system:nodes"]);
        assert!(!subject.has_alternative_names);

        let ca = crate::make_ca("skiff-ca").expect("CA");
        let usages = vec!["digital signature".to_string(), "client auth".to_string()];
        let cert = sign(&ca.0, &ca.1, &request, &usages, Duration::from_secs(3600)).expect("sign");
        let (_, block) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("pem");
        let parsed = block.parse_x509().expect("x509");
        assert_eq!(
            parsed
                .subject()
                .iter_common_name()
                .next()
                .map(|c| c.as_str().ok()),
            Some(Some("system:node:n1"))
        );
        let eku = parsed
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.client_auth && !eku.server_auth);
        let lifetime = not_after(&cert).expect("validity");
        let hour = SystemTime::now() + Duration::from_secs(3600);
        assert!(lifetime <= hour && lifetime > hour - Duration::from_secs(60));
    }

    #[test]
    fn serving_requests_keep_their_names_through_signing() {
        let names = ["node-1".to_string(), "10.0.0.7".to_string()];
        let (request, _) =
            request_for_names("system:node:node-1", &["system:nodes"], &names).expect("request");
        assert!(parse(&request).expect("parses").has_alternative_names);
        let ca = crate::make_ca("skiff-ca").expect("CA");
        let usages = vec!["digital signature".to_string(), "server auth".to_string()];
        let cert = sign(&ca.0, &ca.1, &request, &usages, Duration::from_secs(3600)).expect("sign");
        let (_, block) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("pem");
        let parsed = block.parse_x509().expect("x509");
        let sans: Vec<String> = parsed
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert_eq!(sans, ["DNSName(node-1)", "IPAddress(0a:00:00:07)"]);
        assert_eq!(alternative_names(&cert).expect("names"), names);
        let (start, end) = validity(&cert).expect("validity");
        assert!(start < SystemTime::now() && end > SystemTime::now());
    }

    #[test]
    fn other_pem_blocks_and_forged_requests_are_refused() {
        let ca = crate::make_ca("skiff-ca").expect("CA");
        assert_eq!(
            parse(&ca.0).unwrap_err(),
            "PEM block type must be CERTIFICATE REQUEST"
        );
        assert!(parse("not pem").is_err());
        let (request, _) = request("x", &[]).expect("request");
        // Flip one bit of the signed body: the signature no longer verifies.
        let (_, block) = x509_parser::pem::parse_x509_pem(request.as_bytes()).expect("pem");
        let mut der = block.contents.clone();
        let middle = der.len() / 2;
        der[middle] ^= 1;
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(&der);
        let forged = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
        );
        assert!(parse(&forged).is_err());
    }
}
