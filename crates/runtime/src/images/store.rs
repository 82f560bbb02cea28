//! The content-addressed image store.
//!
//! Layout under the runtime root:
//! - `blobs/sha256/HEX`: every manifest, config and layer blob, named by its
//!   verified digest;
//! - `layers/sha256/HEX`: a layer blob unpacked once (overlay whiteouts), shared
//!   by every image and container that uses it;
//! - `images/HEX.json`: one record per image, named by its config digest (the
//!   image id), with its names and layer list.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::reference::Reference;

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed or not).
    pub digest: String,
    pub size: u64,
}

/// What the store remembers of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:…` of the config blob: the image id, as in containerd.
    pub id: String,
    pub manifest_digest: String,
    #[serde(default)]
    pub repo_tags: Vec<String>,
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    /// Sum of the blob sizes.
    pub size: u64,
}

/// The parts of an image's config that running a container needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerDefaults {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerDefaults>,
}

/// The image store. Cheap to share behind an `Arc`; its methods do blocking
/// file work, so async callers run them in `spawn_blocking`.
pub struct ImageStore {
    root: PathBuf,
    images: Mutex<HashMap<String, ImageRecord>>,
    /// mtime of `images/` when last read: `skiff images import` may write
    /// records while a runtime process serves, so lookups re-read on change.
    loaded_at: Mutex<Option<std::time::SystemTime>>,
    /// Serialises unpacking so that a layer is unpacked once even when two
    /// pulls share it.
    unpack_lock: Mutex<()>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hex_of(digest: &str) -> Result<&str> {
    let h = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::InvalidArgument(format!("unsupported digest {digest:?}")))?;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "malformed digest {digest:?}"
        )));
    }
    Ok(h)
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root` and loads its records.
    pub fn open(root: &Path) -> Result<Self> {
        for d in ["blobs/sha256", "layers/sha256", "images", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).path_ctx("create", &p)?;
        }
        let store = ImageStore {
            root: root.to_path_buf(),
            images: Mutex::new(HashMap::new()),
            loaded_at: Mutex::new(None),
            unpack_lock: Mutex::new(()),
        };
        store.refresh()?;
        Ok(store)
    }

    /// Re-reads the image records if the directory changed since last time.
    fn refresh(&self) -> Result<()> {
        let dir = self.root.join("images");
        let mtime = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
        let mut loaded = self.loaded_at.lock().unwrap_or_else(|p| p.into_inner());
        if mtime.is_some() && *loaded == mtime {
            return Ok(());
        }
        let mut images = HashMap::new();
        for e in std::fs::read_dir(&dir).path_ctx("read", &dir)? {
            let p = e.path_ctx("read", &dir)?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let data = std::fs::read(&p).path_ctx("read", &p)?;
                match serde_json::from_slice::<ImageRecord>(&data) {
                    Ok(r) => {
                        images.insert(r.id.clone(), r);
                    }
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "skipping bad image record")
                    }
                }
            }
        }
        *self.images.lock().unwrap_or_else(|p| p.into_inner()) = images;
        *loaded = mtime;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ImageRecord>> {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "cannot re-read image records");
        }
        // A poisoned lock only means a panic elsewhere; the map is still valid.
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers/sha256").join(hex_of(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        std::fs::read(&p).path_ctx("read blob", &p)
    }

    /// Streams `r` into the store, hashing as it goes; if `expected` is given the
    /// digest must match, else the blob is refused. Returns (digest, size).
    pub fn put_blob(&self, mut r: impl Read, expected: Option<&str>) -> Result<(String, u64)> {
        if let Some(d) = expected {
            hex_of(d)?;
        }
        let tmp = tempfile_in(&self.root.join("tmp"))?;
        let (mut file, tmp_path) = tmp;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).path_ctx("read blob data for", &tmp_path)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).path_ctx("write", &tmp_path)?;
            size += n as u64;
        }
        file.sync_all().path_ctx("sync", &tmp_path)?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(exp) = expected {
            if exp != digest {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(Error::DigestMismatch {
                    what: "blob".into(),
                    expected: exp.into(),
                    actual: digest,
                });
            }
        }
        let dest = self.blob_path(&digest)?;
        std::fs::rename(&tmp_path, &dest).path_ctx("store blob", &dest)?;
        Ok((digest, size))
    }

    /// Unpacks the layer blob `digest` unless already unpacked.
    pub fn ensure_unpacked(&self, digest: &str) -> Result<PathBuf> {
        let dir = self.layer_dir(digest)?;
        let _g = self.unpack_lock.lock().unwrap_or_else(|p| p.into_inner());
        if dir.exists() {
            return Ok(dir);
        }
        let staging =
            self.root
                .join("tmp")
                .join(format!("layer-{}-{}", hex_of(digest)?, std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).path_ctx("create", &staging)?;
        let res = super::unpack::open_layer(&self.blob_path(digest)?)
            .and_then(|r| super::unpack::unpack_layer(r, &staging));
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        std::fs::rename(&staging, &dir).path_ctx("install layer", &dir)?;
        tracing::debug!(%digest, "layer unpacked");
        Ok(dir)
    }

    /// Records an image whose manifest, config and layer blobs are all in the
    /// store, unpacking its layers. `names` are full references; each moves to
    /// this image from any image that held it before.
    pub fn add_image(&self, manifest_digest: &str, names: &[String]) -> Result<ImageRecord> {
        let manifest_bytes = self.read_blob(manifest_digest)?;
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::json(format!("parse manifest {manifest_digest}"), e))?;
        let config_digest = manifest.config().digest().to_string();
        if !self.has_blob(&config_digest) {
            return Err(Error::NotFound(format!("config blob {config_digest}")));
        }
        let mut layers = Vec::new();
        let mut size = manifest.config().size();
        for l in manifest.layers() {
            let d = l.digest().to_string();
            if !self.has_blob(&d) {
                return Err(Error::NotFound(format!("layer blob {d}")));
            }
            self.ensure_unpacked(&d)?;
            size += l.size();
            layers.push(LayerRecord {
                digest: d,
                size: l.size(),
            });
        }
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for n in names {
            let r = Reference::parse(n)?;
            if let Some(t) = r.tagged() {
                tags.push(t);
            }
            digests.push(r.with_digest(manifest_digest));
        }
        let mut images = self.lock();
        let mut rec = images.get(&config_digest).cloned().unwrap_or(ImageRecord {
            id: config_digest.clone(),
            manifest_digest: manifest_digest.to_string(),
            repo_tags: vec![],
            repo_digests: vec![],
            layers: layers.clone(),
            size,
        });
        rec.manifest_digest = manifest_digest.to_string();
        rec.layers = layers;
        rec.size = size;
        // A tag names one image: take it away from whichever image had it.
        let others: Vec<String> = images
            .keys()
            .filter(|k| **k != config_digest)
            .cloned()
            .collect();
        for k in others {
            if let Some(other) = images.get_mut(&k) {
                let before = other.repo_tags.len();
                other.repo_tags.retain(|t| !tags.contains(t));
                if other.repo_tags.len() != before {
                    self.write_record(other)?;
                }
            }
        }
        for t in tags {
            if !rec.repo_tags.contains(&t) {
                rec.repo_tags.push(t);
            }
        }
        for d in digests {
            if !rec.repo_digests.contains(&d) {
                rec.repo_digests.push(d);
            }
        }
        self.write_record(&rec)?;
        images.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    fn write_record(&self, rec: &ImageRecord) -> Result<()> {
        let p = self
            .root
            .join("images")
            .join(format!("{}.json", hex_of(&rec.id)?));
        let data =
            serde_json::to_vec_pretty(rec).map_err(|e| Error::json("encode image record", e))?;
        write_atomic(&p, &data)
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Finds an image by id (`sha256:…`, or an unambiguous hex prefix of at
    /// least 12 characters), by name (normalised) or by `name@digest`.
    pub fn resolve(&self, name: &str) -> Option<ImageRecord> {
        let images = self.lock();
        if let Some(r) = images.get(name) {
            return Some(r.clone());
        }
        let hexish = name.strip_prefix("sha256:").unwrap_or(name);
        if hexish.len() >= 12 && hexish.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits = images.values().filter(|r| r.id[7..].starts_with(hexish));
            if let (Some(r), None) = (hits.next(), hits.next()) {
                return Some(r.clone());
            }
        }
        let r = Reference::parse(name).ok()?;
        let full = r.to_string();
        images
            .values()
            .find(|i| i.repo_tags.contains(&full) || i.repo_digests.contains(&full))
            .cloned()
    }

    /// The config fields a container inherits from its image.
    pub fn container_defaults(&self, image: &ImageRecord) -> Result<ContainerDefaults> {
        let data = self.read_blob(&image.id)?;
        let c: ConfigFile = serde_json::from_slice(&data)
            .map_err(|e| Error::json(format!("parse image config {}", image.id), e))?;
        Ok(c.config.unwrap_or_default())
    }

    /// Removes an image record, then every blob and unpacked layer that no other
    /// image and no layer in `in_use` references. Unknown images are not an error.
    pub fn remove(&self, name: &str, in_use: &[String]) -> Result<Option<ImageRecord>> {
        let Some(rec) = self.resolve(name) else {
            return Ok(None);
        };
        let mut images = self.lock();
        images.remove(&rec.id);
        let p = self
            .root
            .join("images")
            .join(format!("{}.json", hex_of(&rec.id)?));
        let _ = std::fs::remove_file(&p);
        let mut keep: Vec<&str> = in_use.iter().map(String::as_str).collect();
        for other in images.values() {
            keep.push(&other.id);
            keep.push(&other.manifest_digest);
            keep.extend(other.layers.iter().map(|l| l.digest.as_str()));
        }
        let mut garbage = vec![rec.id.clone(), rec.manifest_digest.clone()];
        garbage.extend(rec.layers.iter().map(|l| l.digest.clone()));
        for d in garbage.iter().filter(|d| !keep.contains(&d.as_str())) {
            if let Ok(b) = self.blob_path(d) {
                let _ = std::fs::remove_file(b);
            }
            if let Ok(l) = self.layer_dir(d) {
                if l.exists() {
                    std::fs::remove_dir_all(&l).path_ctx("remove layer", &l)?;
                }
            }
        }
        Ok(Some(rec))
    }

    /// Bytes and inodes used by blobs and unpacked layers.
    pub fn usage(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut inodes = 0;
        for d in ["blobs", "layers"] {
            du(&self.root.join(d), &mut bytes, &mut inodes);
        }
        (bytes, inodes)
    }
}

fn du(p: &Path, bytes: &mut u64, inodes: &mut u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    *inodes += 1;
    *bytes += md.blocks() * 512;
    if md.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                du(&e.path(), bytes, inodes);
            }
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<(std::fs::File, PathBuf)> {
    let p = dir.join(format!("blob-{}", uuid::Uuid::new_v4().simple()));
    let f = std::fs::File::create(&p).path_ctx("create", &p)?;
    Ok((f, p))
}

/// Writes via a temporary file and rename, so a crash never leaves half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).path_ctx("create", &tmp)?;
        f.write_all(data).path_ctx("write", &tmp)?;
        f.sync_all().path_ctx("sync", &tmp)?;
    }
    std::fs::rename(&tmp, path).path_ctx("rename into", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_blob_verifies_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ImageStore::open(dir.path()).expect("open");
        let want = format!("sha256:{}", sha256_hex(b"hello"));
        let (d, n) = s.put_blob(&b"hello"[..], Some(&want)).expect("put");
        assert_eq!((d.as_str(), n), (want.as_str(), 5));
        assert!(s.has_blob(&want));
        let wrong = format!("sha256:{}", sha256_hex(b"other"));
        assert!(matches!(
            s.put_blob(&b"hello"[..], Some(&wrong)),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!s.has_blob(&wrong));
    }
}
