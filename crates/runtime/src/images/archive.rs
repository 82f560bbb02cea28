//! `skiff images import`: loading an image archive into the store.
//!
//! Two formats are accepted, told apart by their contents:
//! - an OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/…`), as
//!   `skopeo copy … oci-archive:` or our `scripts/build-test-images.sh` make;
//!   every blob is verified against the digest in its name;
//! - a `docker save` archive (`manifest.json` with `Config`, `Layers` and
//!   `RepoTags`), whose files are hashed on the way in and described by a
//!   manifest we write (Docker schema 2 media types).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::store::{sha256_hex, ImageRecord, ImageStore};
use crate::error::{Error, IoContext, Result};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

#[cfg(test)]
mod tests {
    #[test]
    fn normal_paths() {
        use std::path::Path;
        assert_eq!(super::normal(Path::new("./a/b")), "a/b");
        assert_eq!(super::normal(Path::new("b/../a/layer.tar")), "a/layer.tar");
        assert_eq!(super::normal(Path::new("../../x")), "x");
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The archive-relative form of `p`: `..` climbs (never above the root),
/// `.` and `/` vanish.
fn normal(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Imports every image in the archive at `path`; returns their records.
pub fn import_archive(store: &ImageStore, path: &Path) -> Result<Vec<ImageRecord>> {
    let f = std::fs::File::open(path).path_ctx("open archive", path)?;
    import_reader(store, f).map_err(|e| match e {
        Error::Io { context, source } => Error::Io {
            context: format!("import {}: {context}", path.display()),
            source,
        },
        other => other,
    })
}

/// Imports from a tar stream (see [`import_archive`]).
pub fn import_reader(store: &ImageStore, r: impl Read) -> Result<Vec<ImageRecord>> {
    let mut archive = tar::Archive::new(r);
    // name in the archive -> digest of its content (blobs and docker files)
    let mut files: HashMap<String, (String, u64)> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut index_json: Option<Vec<u8>> = None;
    let mut docker_manifest: Option<Vec<u8>> = None;
    let here = PathBuf::from("archive");
    for entry in archive.entries().path_ctx("read tar", &here)? {
        let mut entry = entry.path_ctx("read tar entry", &here)?;
        let name = normal(&entry.path().path_ctx("tar entry path", &here)?);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                let resolved = if kind.is_symlink() {
                    normal(&base.join(&target))
                } else {
                    normal(&target)
                };
                links.insert(name, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        match name.as_str() {
            "index.json" | "manifest.json" => {
                let mut buf = Vec::new();
                entry
                    .read_to_end(&mut buf)
                    .path_ctx("read", Path::new(&name))?;
                if name == "index.json" {
                    index_json = Some(buf);
                } else {
                    docker_manifest = Some(buf);
                }
            }
            "oci-layout" | "repositories" => {}
            _ => {
                let expected = name
                    .strip_prefix("blobs/sha256/")
                    .map(|h| format!("sha256:{h}"));
                let (digest, size) = store.put_blob(&mut entry, expected.as_deref())?;
                files.insert(name, (digest, size));
            }
        }
    }
    let lookup = |name: &str| -> Result<(String, u64)> {
        let mut n = normal(Path::new(name));
        for _ in 0..8 {
            if let Some(hit) = files.get(&n) {
                return Ok(hit.clone());
            }
            match links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        Err(Error::InvalidArgument(format!("archive lacks {name}")))
    };

    let mut out = Vec::new();
    if let Some(m) = docker_manifest {
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&m).map_err(|e| Error::json("parse manifest.json", e))?;
        for e in entries {
            let (config_digest, config_size) = lookup(&e.config)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (d, s) = lookup(l)?;
                layers.push(serde_json::json!({"mediaType": DOCKER_LAYER, "digest": d, "size": s}));
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": config_size},
                "layers": layers,
            });
            let bytes =
                serde_json::to_vec(&manifest).map_err(|e| Error::json("encode manifest", e))?;
            let want = format!("sha256:{}", sha256_hex(&bytes));
            let (md, _) = store.put_blob(&bytes[..], Some(&want))?;
            out.push(store.add_image(&md, &e.repo_tags.unwrap_or_default())?);
        }
        return Ok(out);
    }
    let Some(index) = index_json else {
        return Err(Error::InvalidArgument(
            "not an image archive: neither index.json (OCI layout) nor manifest.json (docker save) found"
                .into(),
        ));
    };
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&index).map_err(|e| Error::json("parse index.json", e))?;
    // Group the index's names by manifest digest: an OCI layout lists one entry
    // per name, and several may point at the same manifest.
    let mut by_manifest: Vec<(String, Vec<String>)> = Vec::new();
    for desc in index.manifests() {
        let digest = resolve_platform(store, desc)?;
        let mut names = Vec::new();
        if let Some(ann) = desc.annotations() {
            for key in [
                "io.containerd.image.name",
                "org.opencontainers.image.ref.name",
            ] {
                // A bare tag ("latest") names no repository: only full references count.
                if let Some(n) = ann.get(key).filter(|n| n.contains('/')) {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
            }
        }
        match by_manifest.iter_mut().find(|(d, _)| *d == digest) {
            Some((_, ns)) => ns.extend(names),
            None => by_manifest.push((digest, names)),
        }
    }
    for (digest, names) in by_manifest {
        out.push(store.add_image(&digest, &names)?);
    }
    Ok(out)
}

/// Follows image indexes down to the linux/amd64 manifest.
fn resolve_platform(store: &ImageStore, desc: &oci_spec::image::Descriptor) -> Result<String> {
    let digest = desc.digest().to_string();
    let bytes = store.read_blob(&digest)?;
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe =
        serde_json::from_slice(&bytes).map_err(|e| Error::json("parse manifest", e))?;
    if probe.manifests.is_none() {
        return Ok(digest);
    }
    let idx: oci_spec::image::ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| Error::json("parse nested index", e))?;
    let pick = idx
        .manifests()
        .iter()
        .find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
            })
        })
        .or_else(|| idx.manifests().iter().find(|m| m.platform().is_none()))
        .ok_or_else(|| Error::NotFound(format!("linux/amd64 manifest in index {digest}")))?;
    resolve_platform(store, pick)
}
