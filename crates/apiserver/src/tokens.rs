//! Service-account tokens: JWTs signed by the cluster's service-account key (ES256),
//! issued through the `TokenRequest` API (`serviceaccounts/<name>/token`, what
//! `kubectl create token` calls) and accepted as bearer tokens.
//!
//! A token names its service account by name and uid, and optionally the Pod or Secret it
//! is bound to; it authenticates only while those objects still exist with those uids,
//! before it expires, and when one of its audiences is the API server's.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::cache::WatchCache;
use crate::object;
use crate::status::{ApiError, ApiResult, Cause};

/// The issuer and default audience, as upstream names them for a cluster at
/// `cluster.local`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub struct TokenSigner {
    key: EcdsaKeyPair,
    public_key: Vec<u8>,
    key_id: String,
    rng: SystemRandom,
}

impl TokenSigner {
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("service-account key: {e}"))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| anyhow::anyhow!("service-account key is not an ECDSA P-256 key: {e}"))?;
        let public_key = key.public_key().as_ref().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &public_key);
        let key_id = B64.encode(&digest.as_ref()[..16]);
        Ok(TokenSigner {
            key,
            public_key,
            key_id,
            rng,
        })
    }

    pub fn sign(&self, claims: &Value) -> ApiResult<String> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let signing_input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).map_err(ApiError::internal)?),
            B64.encode(serde_json::to_vec(claims).map_err(ApiError::internal)?)
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| ApiError::internal("signing a service-account token"))?;
        Ok(format!(
            "{signing_input}.{}",
            B64.encode(signature.as_ref())
        ))
    }

    /// The claims of a token this key signed, or `None`.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let signature = B64.decode(signature).ok()?;
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public_key)
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .ok()?;
        serde_json::from_slice(&B64.decode(claims).ok()?).ok()
    }

    /// The user a bearer token proves to the API server itself.
    pub fn authenticate(&self, token: &str, cache: &WatchCache) -> Option<UserInfo> {
        self.review(token, &[], cache).map(|reviewed| reviewed.user)
    }

    /// What a token proves for `audiences` (the API server's own when empty), checking
    /// expiry, audience and that the service account (and any bound object) still exist
    /// with the uids the token names.
    pub fn review(
        &self,
        token: &str,
        audiences: &[String],
        cache: &WatchCache,
    ) -> Option<Reviewed> {
        let claims = self.verify(token)?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return None;
        }
        let now = jiff::Timestamp::now().as_second();
        let exp = claims.get("exp").and_then(Value::as_i64)?;
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if now >= exp || now < nbf - 60 {
            return None;
        }
        let wanted: Vec<String> = if audiences.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            audiences.to_vec()
        };
        let granted: Vec<String> = claims
            .get("aud")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(|a| a.as_str())
            .filter(|a| wanted.iter().any(|w| w == a))
            .map(str::to_string)
            .collect();
        if granted.is_empty() {
            return None;
        }
        let k8s = claims.get("kubernetes.io")?;
        let namespace = k8s.get("namespace").and_then(Value::as_str)?;
        let sa_name = k8s
            .pointer("/serviceaccount/name")
            .and_then(Value::as_str)?;
        let sa_uid = k8s.pointer("/serviceaccount/uid").and_then(Value::as_str)?;
        let still_there = |key: String, uid: &str| {
            cache
                .get(&key)
                .and_then(|o| o.value().ok())
                .is_some_and(|o| object::meta_str(&o, "uid") == Some(uid))
        };
        if !still_there(
            format!("/registry/serviceaccounts/{namespace}/{sa_name}"),
            sa_uid,
        ) {
            return None;
        }
        for (kind, prefix) in [("pod", "pods"), ("secret", "secrets")] {
            if let Some(bound) = k8s.get(kind) {
                let name = bound.get("name").and_then(Value::as_str)?;
                let uid = bound.get("uid").and_then(Value::as_str)?;
                if !still_there(format!("/registry/{prefix}/{namespace}/{name}"), uid) {
                    return None;
                }
            }
        }
        // Upstream's extra for bound tokens: the pod, and the token's own id.
        let mut extra = std::collections::BTreeMap::new();
        if let Some(pod) = k8s.get("pod") {
            for (field, key) in [("name", "pod-name"), ("uid", "pod-uid")] {
                if let Some(value) = pod.get(field).and_then(Value::as_str) {
                    extra.insert(
                        format!("authentication.kubernetes.io/{key}"),
                        vec![value.to_string()],
                    );
                }
            }
        }
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            extra.insert(
                "authentication.kubernetes.io/credential-id".to_string(),
                vec![format!("JTI={jti}")],
            );
        }
        Some(Reviewed {
            user: UserInfo {
                name: format!("system:serviceaccount:{namespace}:{sa_name}"),
                uid: sa_uid.to_string(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ],
            },
            extra,
            audiences: granted,
        })
    }
}

/// What a token proves: who, with which extra facts, for which audiences.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub user: UserInfo,
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
    pub audiences: Vec<String>,
}

/// How long an extended token is valid (upstream's one year).
const EXTENDED_TOKEN_SECONDS: i64 = 365 * 24 * 3600;

/// Answers a `TokenRequest` for the service account `name` (already read from the store).
pub fn issue(
    signer: &TokenSigner,
    service_account: &Value,
    bound: Option<(&str, &Value)>,
    mut request: Value,
) -> ApiResult<Value> {
    let name = object::name(service_account).to_string();
    let namespace = object::namespace(service_account).unwrap_or("").to_string();
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            &name,
            vec![Cause::invalid(
                "spec.expirationSeconds",
                seconds.to_string(),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Value::Array(list.clone()),
        _ => json!([ISSUER]),
    };
    let now = jiff::Timestamp::now();
    let expires = now.as_second() + seconds;
    let mut k8s = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": object::meta_str(service_account, "uid").unwrap_or("")},
    });
    // As upstream (`--service-account-extend-token-expiration`, on by default): the
    // lifetime the ServiceAccount admission asks for gets a token valid for a year that
    // only warns after the hour, so that clients which read their token once keep working.
    let token_expires = if seconds == crate::admission::PROJECTED_TOKEN_SECONDS {
        k8s["warnafter"] = json!(expires);
        now.as_second() + EXTENDED_TOKEN_SECONDS
    } else {
        expires
    };
    if let Some((kind, object)) = bound {
        k8s[kind] = json!({"name": object::name(object), "uid": object::meta_str(object, "uid").unwrap_or("")});
    }
    let claims = json!({
        "aud": audiences,
        "exp": token_expires,
        "iat": now.as_second(),
        "iss": ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "nbf": now.as_second(),
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    });
    let token = signer.sign(&claims)?;
    let expiration = jiff::Timestamp::from_second(expires).unwrap_or(now);
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    if request.get("metadata").is_none() {
        request["metadata"] = json!({});
    }
    request["metadata"]["name"] = json!(name);
    request["metadata"]["namespace"] = json!(namespace);
    request["metadata"]["creationTimestamp"] = Value::Null;
    request["spec"]["audiences"] = audiences;
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] =
        json!({"token": token, "expirationTimestamp": object::format_time(expiration)});
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let pem = rcgen_key();
        TokenSigner::from_pem(&pem).unwrap()
    }

    fn rcgen_key() -> String {
        // The PKI makes the real key; a throwaway one of the same kind is enough here.
        let dir = tempfile::tempdir().unwrap();
        skiff_pki::ClusterPki::load_or_create(dir.path(), &["localhost".into()])
            .unwrap()
            .service_account_key_pem
    }

    #[test]
    fn signed_tokens_verify_and_forgeries_do_not() {
        let s = signer();
        let token = s.sign(&json!({"sub": "x"})).unwrap();
        assert_eq!(s.verify(&token).unwrap()["sub"], "x");
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert!(s.verify(&parts.join(".")).is_none());
        assert!(signer().verify(&token).is_none(), "another cluster's key");
        assert!(s.verify("not.a.jwt").is_none());
    }

    #[test]
    fn token_requests_follow_upstream_rules() {
        let s = signer();
        let sa = json!({"metadata": {"name": "robot", "namespace": "ns", "uid": "u1"}});
        let short = issue(&s, &sa, None, json!({"spec": {"expirationSeconds": 60}}));
        assert_eq!(short.unwrap_err().code, 422);
        let answer = issue(&s, &sa, None, json!({"spec": {}})).unwrap();
        let claims = s
            .verify(answer["status"]["token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:ns:robot");
        assert_eq!(claims["aud"], json!([ISSUER]));
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );

        // The admission plugin's 3607 s: a year-long token that warns after 3607 s, and
        // a status that tells the 3607 s.
        let projected = issue(&s, &sa, None, json!({"spec": {"expirationSeconds": 3607}})).unwrap();
        let claims = s
            .verify(projected["status"]["token"].as_str().unwrap())
            .unwrap();
        let iat = claims["iat"].as_i64().unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap() - iat,
            EXTENDED_TOKEN_SECONDS
        );
        assert_eq!(
            claims["kubernetes.io"]["warnafter"].as_i64().unwrap() - iat,
            3607
        );
        assert_eq!(projected["spec"]["expirationSeconds"], 3607);
    }
}
