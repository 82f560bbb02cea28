//! Encryption at rest, as upstream's `--encryption-provider-config` gives it: an
//! `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`) names resources and, for each,
//! an ordered list of providers. Writes use the first provider's first key; reads find the
//! provider and key from the stored value's prefix (`k8s:enc:aescbc:v1:<key name>:`), so
//! that after a new key is put first and every object rewritten, the old key can go.
//! Values with no prefix are plain and readable only where the `identity` provider is
//! listed, as upstream reads them.
//!
//! [`EncryptedStore`] wraps the datastore: the watch cache, the registry and every
//! reader above it see plain objects; the embedded file and etcd hold ciphertext.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use skiff_store::{
    Event, KeyValue, RangeRequest, RangeResponse, Result, Store, StoreError, WatchStream,
};

use crate::resources::ResourceInfo;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceRule>,
}

#[derive(Debug, Deserialize)]
struct ResourceRule {
    resources: Vec<String>,
    providers: Vec<ProviderEntry>,
}

#[derive(Debug, Deserialize, Default)]
struct ProviderEntry {
    aescbc: Option<KeyList>,
    aesgcm: Option<KeyList>,
    secretbox: Option<KeyList>,
    identity: Option<serde_yaml::Value>,
    kms: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct KeyList {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
struct KeyEntry {
    name: String,
    secret: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cipher {
    AesCbc,
    AesGcm,
    SecretBox,
}

impl Cipher {
    fn name(self) -> &'static str {
        match self {
            Cipher::AesCbc => "aescbc",
            Cipher::AesGcm => "aesgcm",
            Cipher::SecretBox => "secretbox",
        }
    }
}

#[derive(Clone)]
enum Provider {
    Identity,
    Keys {
        cipher: Cipher,
        keys: Vec<(String, Vec<u8>)>,
    },
}

/// The providers of one group of resources, in order.
#[derive(Clone)]
pub struct Providers(Vec<Provider>);

/// A parsed `EncryptionConfiguration`: which resources (`secrets`, `deployments.apps`,
/// `*.apps`, `*.*`) get which providers; the first rule naming a resource wins.
pub struct EncryptionConfig {
    rules: Vec<(Vec<String>, Providers)>,
}

impl EncryptionConfig {
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        use base64::Engine;
        let file: ConfigFile =
            serde_yaml::from_str(text).context("not an EncryptionConfiguration")?;
        if file.kind != "EncryptionConfiguration" {
            bail!("kind is {:?}, not EncryptionConfiguration", file.kind);
        }
        let mut rules = Vec::new();
        for (i, rule) in file.resources.into_iter().enumerate() {
            let mut providers = Vec::new();
            for entry in rule.providers {
                let keyed = [
                    (Cipher::AesCbc, entry.aescbc),
                    (Cipher::AesGcm, entry.aesgcm),
                    (Cipher::SecretBox, entry.secretbox),
                ];
                let mut found = 0;
                for (cipher, list) in keyed {
                    let Some(list) = list else { continue };
                    found += 1;
                    if list.keys.is_empty() {
                        bail!("resources[{i}]: {} needs at least one key", cipher.name());
                    }
                    let mut keys = Vec::new();
                    for key in list.keys {
                        let secret = base64::engine::general_purpose::STANDARD
                            .decode(key.secret.trim())
                            .with_context(|| {
                                format!("resources[{i}]: key {:?} is not base64", key.name)
                            })?;
                        let sizes: &[usize] = match cipher {
                            Cipher::AesCbc | Cipher::AesGcm => &[16, 24, 32],
                            Cipher::SecretBox => &[32],
                        };
                        if !sizes.contains(&secret.len()) {
                            bail!(
                                "resources[{i}]: {} key {:?} is {} bytes; it must be one of {sizes:?}",
                                cipher.name(),
                                key.name,
                                secret.len()
                            );
                        }
                        keys.push((key.name, secret));
                    }
                    providers.push(Provider::Keys { cipher, keys });
                }
                if entry.identity.is_some() {
                    found += 1;
                    providers.push(Provider::Identity);
                }
                if entry.kms.is_some() {
                    bail!("resources[{i}]: the kms provider is not supported; use aescbc, aesgcm or secretbox");
                }
                if found != 1 {
                    bail!("resources[{i}]: each provider entry names exactly one provider");
                }
            }
            if providers.is_empty() {
                bail!("resources[{i}]: no providers");
            }
            rules.push((rule.resources, Providers(providers)));
        }
        Ok(EncryptionConfig { rules })
    }

    /// The providers for a resource, if a rule names it.
    fn providers_for(&self, resource: &ResourceInfo) -> Option<&Providers> {
        let qualified = if resource.group.is_empty() {
            resource.plural.clone()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        };
        let group_wildcard = format!("*.{}", resource.group);
        self.rules
            .iter()
            .find(|(names, _)| {
                names
                    .iter()
                    .any(|n| *n == qualified || *n == group_wildcard || n == "*.*")
            })
            .map(|(_, providers)| providers)
    }

    /// Wraps `store` so that the resources the configuration names are encrypted: each
    /// resource's key prefix gets its providers.
    pub fn wrap(&self, store: Arc<dyn Store>, resources: &[Arc<ResourceInfo>]) -> Arc<dyn Store> {
        let mut prefixes = HashMap::new();
        for resource in resources {
            if let Some(providers) = self.providers_for(resource) {
                prefixes
                    .entry(resource.key_prefix(None))
                    .or_insert_with(|| providers.clone());
            }
        }
        Arc::new(EncryptedStore {
            inner: store,
            prefixes: Arc::new(prefixes.into_iter().collect()),
        })
    }
}

const PREFIX: &[u8] = b"k8s:enc:";

impl Providers {
    fn encrypt(&self, key: &str, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
        match &self.0[0] {
            Provider::Identity => Ok(plain.to_vec()),
            Provider::Keys { cipher, keys } => {
                let (name, secret) = &keys[0];
                let mut out = format!("k8s:enc:{}:v1:{name}:", cipher.name()).into_bytes();
                out.extend(seal(*cipher, secret, key, plain)?);
                Ok(out)
            }
        }
    }

    /// Whether `stored` was written by the provider and key that write now.
    fn is_current(&self, stored: &[u8]) -> bool {
        match &self.0[0] {
            Provider::Identity => !stored.starts_with(PREFIX),
            Provider::Keys { cipher, keys } => {
                let prefix = format!("k8s:enc:{}:v1:{}:", cipher.name(), keys[0].0);
                stored.starts_with(prefix.as_bytes())
            }
        }
    }

    fn decrypt(&self, key: &str, stored: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return if self.0.iter().any(|p| matches!(p, Provider::Identity)) {
                Ok(stored.to_vec())
            } else {
                Err(
                    "the value is not encrypted, and no identity provider is configured to read it"
                        .into(),
                )
            };
        };
        let text = String::from_utf8_lossy(&rest[..rest.len().min(300)]).into_owned();
        let mut parts = text.splitn(4, ':');
        let (Some(cipher_name), Some("v1"), Some(key_name)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed encryption prefix".into());
        };
        let header = cipher_name.len() + key_name.len() + 5;
        let body = rest
            .get(header..)
            .ok_or_else(|| "truncated encrypted value".to_string())?;
        for provider in &self.0 {
            if let Provider::Keys { cipher, keys } = provider {
                if cipher.name() != cipher_name {
                    continue;
                }
                if let Some((_, secret)) = keys.iter().find(|(name, _)| name == key_name) {
                    return open(*cipher, secret, key, body);
                }
            }
        }
        Err(format!(
            "no {cipher_name} key named {key_name:?} is configured to read this value"
        ))
    }
}

fn random<const N: usize>() -> std::result::Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no randomness".to_string())?;
    Ok(bytes)
}

fn cbc_encrypt<C>(secret: &[u8], iv: &[u8], plain: &[u8]) -> std::result::Result<Vec<u8>, String>
where
    C: cbc::cipher::BlockEncryptMut + cbc::cipher::BlockCipher + cbc::cipher::KeyInit,
{
    use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    Ok(cbc::Encryptor::<C>::new_from_slices(secret, iv)
        .map_err(|e| e.to_string())?
        .encrypt_padded_vec_mut::<Pkcs7>(plain))
}

fn cbc_decrypt<C>(secret: &[u8], iv: &[u8], data: &[u8]) -> std::result::Result<Vec<u8>, String>
where
    C: cbc::cipher::BlockDecryptMut + cbc::cipher::BlockCipher + cbc::cipher::KeyInit,
{
    use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    cbc::Decryptor::<C>::new_from_slices(secret, iv)
        .map_err(|e| e.to_string())?
        .decrypt_padded_vec_mut::<Pkcs7>(data)
        .map_err(|_| "AES-CBC decryption failed: wrong key or damaged value".to_string())
}

/// Encrypts `plain` (bound to its store `key` where the cipher can authenticate it).
fn seal(
    cipher: Cipher,
    secret: &[u8],
    key: &str,
    plain: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    match cipher {
        Cipher::AesCbc => {
            let iv: [u8; 16] = random()?;
            let body = match secret.len() {
                16 => cbc_encrypt::<aes::Aes128>(secret, &iv, plain),
                24 => cbc_encrypt::<aes::Aes192>(secret, &iv, plain),
                _ => cbc_encrypt::<aes::Aes256>(secret, &iv, plain),
            }?;
            Ok([iv.as_slice(), &body].concat())
        }
        Cipher::AesGcm => {
            use ring::aead;
            let algorithm = match secret.len() {
                16 => &aead::AES_128_GCM,
                _ => &aead::AES_256_GCM,
            };
            let sealing = aead::LessSafeKey::new(
                aead::UnboundKey::new(algorithm, secret)
                    .map_err(|_| "bad AES-GCM key".to_string())?,
            );
            let nonce: [u8; 12] = random()?;
            let mut body = plain.to_vec();
            sealing
                .seal_in_place_append_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(key.as_bytes()),
                    &mut body,
                )
                .map_err(|_| "AES-GCM sealing failed".to_string())?;
            Ok([nonce.as_slice(), &body].concat())
        }
        Cipher::SecretBox => {
            use crypto_secretbox::aead::{Aead, KeyInit};
            let nonce: [u8; 24] = random()?;
            let boxed = crypto_secretbox::XSalsa20Poly1305::new_from_slice(secret)
                .map_err(|e| e.to_string())?
                .encrypt(&nonce.into(), plain)
                .map_err(|_| "secretbox sealing failed".to_string())?;
            Ok([nonce.as_slice(), &boxed].concat())
        }
    }
}

fn open(
    cipher: Cipher,
    secret: &[u8],
    key: &str,
    body: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    match cipher {
        Cipher::AesCbc => {
            if body.len() < 16 {
                return Err("truncated AES-CBC value".into());
            }
            let (iv, data) = body.split_at(16);
            match secret.len() {
                16 => cbc_decrypt::<aes::Aes128>(secret, iv, data),
                24 => cbc_decrypt::<aes::Aes192>(secret, iv, data),
                _ => cbc_decrypt::<aes::Aes256>(secret, iv, data),
            }
        }
        Cipher::AesGcm => {
            use ring::aead;
            if body.len() < 12 {
                return Err("truncated AES-GCM value".into());
            }
            let algorithm = match secret.len() {
                16 => &aead::AES_128_GCM,
                _ => &aead::AES_256_GCM,
            };
            let opening = aead::LessSafeKey::new(
                aead::UnboundKey::new(algorithm, secret)
                    .map_err(|_| "bad AES-GCM key".to_string())?,
            );
            let (nonce, data) = body.split_at(12);
            let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
                .map_err(|_| "bad nonce".to_string())?;
            let mut data = data.to_vec();
            let plain = opening
                .open_in_place(nonce, aead::Aad::from(key.as_bytes()), &mut data)
                .map_err(|_| "AES-GCM decryption failed: wrong key, damaged value, or a value moved from another key".to_string())?;
            Ok(plain.to_vec())
        }
        Cipher::SecretBox => {
            use crypto_secretbox::aead::{Aead, KeyInit};
            if body.len() < 24 {
                return Err("truncated secretbox value".into());
            }
            let (nonce, data) = body.split_at(24);
            let nonce: [u8; 24] = nonce.try_into().map_err(|_| "bad nonce".to_string())?;
            crypto_secretbox::XSalsa20Poly1305::new_from_slice(secret)
                .map_err(|e| e.to_string())?
                .decrypt(&nonce.into(), data)
                .map_err(|_| "secretbox decryption failed: wrong key or damaged value".to_string())
        }
    }
}

/// The datastore with the configured resources' values encrypted.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    /// Shared with every watch's decryptor.
    prefixes: Arc<Vec<(String, Providers)>>,
}

impl EncryptedStore {
    fn providers(&self, key: &str) -> Option<&Providers> {
        self.prefixes
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
            .map(|(_, providers)| providers)
    }

    fn encrypt(&self, key: &str, value: Bytes) -> Result<Bytes> {
        match self.providers(key) {
            None => Ok(value),
            Some(providers) => providers
                .encrypt(key, &value)
                .map(Bytes::from)
                .map_err(|e| StoreError::Backend(format!("encrypting {key}: {e}"))),
        }
    }

    fn decrypt(&self, mut kv: KeyValue) -> Result<KeyValue> {
        if let Some(providers) = self.providers(&kv.key) {
            let plain = providers
                .decrypt(&kv.key, &kv.value)
                .map_err(|e| StoreError::Backend(format!("decrypting {}: {e}", kv.key)))?;
            kv.value = Bytes::from(plain);
        }
        Ok(kv)
    }

    fn decrypt_event(&self, event: Event) -> Result<Event> {
        Ok(match event {
            Event::Put { kv, prev } => Event::Put {
                kv: self.decrypt(kv)?,
                prev: prev.map(|p| self.decrypt(p)).transpose()?,
            },
            Event::Delete { prev, revision } => Event::Delete {
                prev: self.decrypt(prev)?,
                revision,
            },
        })
    }

    fn decrypt_conflict(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Conflict {
                key,
                expected,
                current,
            } => {
                let current = match current.map(|c| self.decrypt(c)).transpose() {
                    Ok(current) => current,
                    Err(e) => return e,
                };
                StoreError::Conflict {
                    key,
                    expected,
                    current,
                }
            }
            other => other,
        }
    }
}

#[async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner
            .get(key)
            .await?
            .map(|kv| self.decrypt(kv))
            .transpose()
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let mut response = self.inner.range(request).await?;
        response.kvs = response
            .kvs
            .into_iter()
            .map(|kv| self.decrypt(kv))
            .collect::<Result<_>>()?;
        Ok(response)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        let value = self.encrypt(key, value)?;
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64> {
        let value = self.encrypt(key, value)?;
        self.inner
            .update(key, value, expected_revision)
            .await
            .map_err(|e| self.decrypt_conflict(e))
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(i64, KeyValue)> {
        let (revision, kv) = self
            .inner
            .delete(key, expected_revision)
            .await
            .map_err(|e| self.decrypt_conflict(e))?;
        Ok((revision, self.decrypt(kv)?))
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let stream = self.inner.watch(prefix, after_revision).await?;
        let prefixes = self.prefixes.clone();
        let decryptor = EncryptedStore {
            inner: self.inner.clone(),
            prefixes,
        };
        Ok(Box::pin(stream.map(move |event| {
            event.and_then(|event| decryptor.decrypt_event(event))
        })))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }

    async fn is_stale(&self, key: &str) -> Result<bool> {
        let Some(providers) = self.providers(key) else {
            return Ok(false);
        };
        Ok(self
            .inner
            .get(key)
            .await?
            .is_some_and(|kv| !providers.is_current(&kv.value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY32: &str = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Pz8/Pz8="; // 32 bytes
    const OTHER32: &str = "YW5vdGhlciBrZXkgb2YgdGhpcnR5LXR3byBieXRlcyE="; // 32 bytes

    fn providers(yaml_providers: &str) -> Providers {
        let text = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{yaml_providers}"
        );
        let config = EncryptionConfig::parse(&text).expect("parses");
        config.rules[0].1.clone()
    }

    #[test]
    fn every_cipher_round_trips_and_hides_the_value() {
        for cipher in ["aescbc", "aesgcm", "secretbox"] {
            let p = providers(&format!(
                "  - {cipher}:\n      keys:\n      - name: k1\n        secret: {KEY32}\n"
            ));
            let key = "/registry/secrets/default/s";
            let stored = p.encrypt(key, b"password123").expect("encrypt");
            let prefix = format!("k8s:enc:{cipher}:v1:k1:");
            assert!(stored.starts_with(prefix.as_bytes()), "{cipher}");
            assert!(!stored.windows(11).any(|w| w == b"password123"), "{cipher}");
            assert_eq!(p.decrypt(key, &stored).expect("decrypt"), b"password123");
        }
    }

    #[test]
    fn rotation_reads_old_keys_and_identity_reads_plain_values() {
        let old = providers(&format!(
            "  - aescbc:\n      keys:\n      - name: old\n        secret: {KEY32}\n"
        ));
        let key = "/registry/secrets/default/s";
        let stored = old.encrypt(key, b"v").expect("encrypt");
        let rotated = providers(&format!(
            "  - secretbox:\n      keys:\n      - name: new\n        secret: {OTHER32}\n  - aescbc:\n      keys:\n      - name: old\n        secret: {KEY32}\n  - identity: {{}}\n"
        ));
        assert_eq!(
            rotated.decrypt(key, &stored).expect("old key still read"),
            b"v"
        );
        assert!(rotated
            .encrypt(key, b"v")
            .expect("encrypt")
            .starts_with(b"k8s:enc:secretbox:v1:new:"));
        assert_eq!(
            rotated.decrypt(key, b"{\"plain\":1}").expect("identity"),
            b"{\"plain\":1}"
        );
        // Without identity, a plain value is an error, as is a key no longer configured.
        assert!(old.decrypt(key, b"{}").is_err());
        let new_only = providers(&format!(
            "  - secretbox:\n      keys:\n      - name: new\n        secret: {OTHER32}\n"
        ));
        let message = new_only.decrypt(key, &stored).unwrap_err();
        assert!(message.contains("no aescbc key named \"old\""), "{message}");
    }

    #[test]
    fn aes_gcm_values_are_bound_to_their_key() {
        let p = providers(&format!(
            "  - aesgcm:\n      keys:\n      - name: k\n        secret: {KEY32}\n"
        ));
        let stored = p.encrypt("/registry/secrets/a/x", b"v").expect("encrypt");
        assert!(p.decrypt("/registry/secrets/b/x", &stored).is_err());
    }

    #[test]
    fn bad_configurations_are_refused() {
        let parse = |providers: &str| {
            EncryptionConfig::parse(&format!(
                "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
            ))
        };
        assert!(
            parse("  - aescbc:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n").is_err()
        );
        assert!(parse("  - kms:\n      name: x\n").is_err());
        assert!(parse("  []\n").is_err() || parse("").is_err());
        assert!(EncryptionConfig::parse("kind: Something\n").is_err());
    }
}
