//! Pod volumes on the host: `emptyDir`, `hostPath`, `configMap`, `secret`,
//! `downwardAPI` and `projected`, laid out under
//! `<root-dir>/pods/<uid>/volumes/<plugin>/<name>` as upstream lays them, and
//! the CRI mounts of a container's `volumeMounts`. Image volumes (KEP-4639) have
//! nothing on the host: their mounts name the pulled image, which the runtime mounts.
//!
//! ConfigMap, Secret, downward API and projected volumes are written the way
//! upstream's atomic writer does: the files live in a timestamped directory,
//! `..data` is a symlink to it and each top-level entry is a symlink through
//! `..data`, so a later rewrite swaps one symlink.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};
use skiff_runtime::proto;

use crate::env::{PodFacts, Sources};
use crate::error::{Error, Result};

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// Where the pod's `emptyDir` volume `name` lives.
pub fn empty_dir_path(root: &Path, uid: &str, name: &str) -> PathBuf {
    plugin_dir(root, uid, "empty-dir", name)
}

fn plugin_dir(root: &Path, uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(root, uid)
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

/// The pulled images of the image volumes a container mounts, by volume name.
pub type ImageVolumes = HashMap<String, proto::ImageSpec>;

/// Files of one volume: relative path → (content, mode).
type Files = BTreeMap<String, (Vec<u8>, u32)>;

fn key_files(
    data: &BTreeMap<String, String>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
    optional: bool,
) -> Result<Files> {
    let mut files = Files::new();
    match items {
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        let mode = it.mode.map_or(default_mode, |m| m as u32);
                        files.insert(it.path.clone(), (v.clone().into_bytes(), mode));
                    }
                    None if optional => {}
                    None => {
                        return Err(Error::Config(format!(
                            "configmap references non-existent config key: {} ({what})",
                            it.key
                        )))
                    }
                }
            }
        }
        None => {
            for (k, v) in data {
                files.insert(k.clone(), (v.clone().into_bytes(), default_mode));
            }
        }
    }
    Ok(files)
}

/// The files a configMap/secret/downwardAPI/projected volume holds.
fn projected_files(
    pod: &Pod,
    vol: &Volume,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<Option<Files>> {
    let mut files = Files::new();
    if let Some(cm) = &vol.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        let optional = cm.optional == Some(true);
        match sources.config_maps.get(&cm.name).cloned().flatten() {
            Some(data) => files.extend(key_files(
                &data,
                cm.items.as_ref(),
                mode,
                &cm.name,
                optional,
            )?),
            None if optional => {}
            None => {
                return Err(Error::Config(format!(
                    "configmap \"{}\" not found",
                    cm.name
                )))
            }
        }
        return Ok(Some(files));
    }
    if let Some(s) = &vol.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let optional = s.optional == Some(true);
        match sources.secrets.get(&name).cloned().flatten() {
            Some(data) => files.extend(key_files(&data, s.items.as_ref(), mode, &name, optional)?),
            None if optional => {}
            None => return Err(Error::Config(format!("secret \"{name}\" not found"))),
        }
        return Ok(Some(files));
    }
    if let Some(d) = &vol.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        for it in d.items.iter().flatten() {
            if let Some(f) = &it.field_ref {
                let v =
                    crate::env::field_value(pod, &f.field_path, facts).map_err(Error::Config)?;
                files.insert(
                    it.path.clone(),
                    (v.into_bytes(), it.mode.map_or(mode, |m| m as u32)),
                );
            }
        }
        return Ok(Some(files));
    }
    if let Some(p) = &vol.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let optional = cm.optional == Some(true);
                match sources.config_maps.get(&cm.name).cloned().flatten() {
                    Some(data) => files.extend(key_files(
                        &data,
                        cm.items.as_ref(),
                        mode,
                        &cm.name,
                        optional,
                    )?),
                    None if optional => {}
                    None => {
                        return Err(Error::Config(format!(
                            "configmap \"{}\" not found",
                            cm.name
                        )))
                    }
                }
            }
            if let Some(s) = &src.secret {
                let optional = s.optional == Some(true);
                match sources.secrets.get(&s.name).cloned().flatten() {
                    Some(data) => {
                        files.extend(key_files(&data, s.items.as_ref(), mode, &s.name, optional)?)
                    }
                    None if optional => {}
                    None => return Err(Error::Config(format!("secret \"{}\" not found", s.name))),
                }
            }
            if let Some(d) = &src.downward_api {
                for it in d.items.iter().flatten() {
                    if let Some(f) = &it.field_ref {
                        let v = crate::env::field_value(pod, &f.field_path, facts)
                            .map_err(Error::Config)?;
                        files.insert(
                            it.path.clone(),
                            (v.into_bytes(), it.mode.map_or(mode, |m| m as u32)),
                        );
                    }
                }
            }
            if let Some(t) = &src.service_account_token {
                let key = crate::env::token_key(&vol.name, &t.path);
                let token = sources
                    .tokens
                    .get(&key)
                    .ok_or_else(|| Error::Config(format!("no service account token for {key}")))?;
                // Tokens are secrets: readable by the owner only, whatever the mode.
                files.insert(t.path.clone(), (token.clone().into_bytes(), mode & 0o600));
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// Writes `files` into `dir` through a fresh `..data` directory.
fn write_atomic(dir: &Path, files: &Files) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let stamp = format!("..{}", jiff::Timestamp::now().as_nanosecond());
    let data_dir = dir.join(&stamp);
    for (rel, (content, mode)) in files {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Config(format!("invalid path {rel:?} in volume")));
        }
        let path = data_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("create {}", parent.display())))?;
        }
        std::fs::write(&path, content).map_err(Error::io(format!("write {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(Error::io(format!("chmod {}", path.display())))?;
    }
    std::fs::create_dir_all(&data_dir)
        .map_err(Error::io(format!("create {}", data_dir.display())))?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(Error::io("symlink ..data_tmp"))?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(Error::io("rename ..data"))?;
    let tops: std::collections::BTreeSet<&str> =
        files.keys().filter_map(|k| k.split('/').next()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)
                .map_err(Error::io(format!("symlink {}", link.display())))?;
        }
    }
    // Entries that disappeared, and the previous data directory.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(name.as_str()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

/// Prepares every volume of the pod; returns each volume's host path.
pub fn prepare(
    root: &Path,
    pod: &Pod,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<HashMap<String, PathBuf>> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let mut out = HashMap::new();
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if vol.image.is_some() {
            continue;
        }
        let path = if let Some(empty_dir) = &vol.empty_dir {
            let d = empty_dir_path(root, uid, &vol.name);
            std::fs::create_dir_all(&d).map_err(Error::io(format!("create {}", d.display())))?;
            if empty_dir.medium.as_deref() == Some("Memory") {
                let size = empty_dir
                    .size_limit
                    .as_ref()
                    .and_then(|q| skiff_quantity::parse_value(&q.0).ok());
                mount_tmpfs(&d, size)?;
            }
            // On disk the size limit is not enforced (upstream evicts the pod instead).
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
                .map_err(Error::io(format!("chmod {}", d.display())))?;
            d
        } else if let Some(hp) = &vol.host_path {
            let p = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => {
                    std::fs::create_dir_all(&p)
                        .map_err(Error::io(format!("create {}", p.display())))?;
                }
                "FileOrCreate" if !p.exists() => {
                    std::fs::write(&p, b"")
                        .map_err(Error::io(format!("create {}", p.display())))?;
                }
                "Directory" if !p.is_dir() => {
                    return Err(Error::Config(format!(
                        "hostPath type check failed: {} is not a directory",
                        hp.path
                    )))
                }
                "File" if !p.is_file() => {
                    return Err(Error::Config(format!(
                        "hostPath type check failed: {} is not a file",
                        hp.path
                    )))
                }
                _ => {}
            }
            p
        } else {
            let plugin = if vol.config_map.is_some() {
                "configmap"
            } else if vol.secret.is_some() {
                "secret"
            } else if vol.downward_api.is_some() {
                "downward-api"
            } else {
                "projected"
            };
            match projected_files(pod, vol, sources, facts)? {
                Some(files) => {
                    let d = plugin_dir(root, uid, plugin, &vol.name);
                    write_atomic(&d, &files)?;
                    d
                }
                None => {
                    tracing::warn!(volume = %vol.name, "volume type not supported yet; using an empty directory");
                    let d = plugin_dir(root, uid, "unsupported", &vol.name);
                    std::fs::create_dir_all(&d)
                        .map_err(Error::io(format!("create {}", d.display())))?;
                    d
                }
            }
        };
        out.insert(vol.name.clone(), path);
    }
    Ok(out)
}

/// The CRI mounts of a container's `volumeMounts` (with `subPath`): host paths, or
/// for an image volume its image (from `images`) and sub path, always read-only.
pub fn mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
    images: &ImageVolumes,
    env: &[(String, String)],
) -> Result<Vec<proto::Mount>> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let sub_path = match m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            Some(expr) => Some(expand_sub_path(expr, env)?),
            None => m.sub_path.clone(),
        }
        .filter(|sp| !sp.is_empty());
        if let Some(sp) = &sub_path {
            if sp.starts_with('/') {
                return Err(Error::Config(format!(
                    "error SubPath `{sp}` must not be an absolute path"
                )));
            }
            if sp.split('/').any(|c| c == "..") {
                return Err(Error::Config(format!(
                    "unable to provision SubPath `{sp}`: must not contain '..'"
                )));
            }
        }
        if let Some(image) = images.get(&m.name) {
            // The runtime mounts image volumes read-only whatever is asked; saying so
            // keeps a runtime that honours only `readonly` from mounting them writable.
            out.push(proto::Mount {
                container_path: m.mount_path.clone(),
                readonly: true,
                image: Some(image.clone()),
                image_sub_path: sub_path.unwrap_or_default(),
                ..Default::default()
            });
            continue;
        }
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| Error::Config(format!("volume {:?} not found", m.name)))?;
        let host = match sub_path.as_deref() {
            Some(sp) => {
                let p = base.join(sp);
                if !p.exists() {
                    std::fs::create_dir_all(&p)
                        .map_err(Error::io(format!("create {}", p.display())))?;
                }
                p
            }
            _ => base.clone(),
        };
        out.push(proto::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only == Some(true),
            ..Default::default()
        });
    }
    Ok(out)
}

/// A `subPathExpr` with the container's environment substituted, as upstream expands
/// it: every variable it names must have a value.
fn expand_sub_path(expr: &str, env: &[(String, String)]) -> Result<String> {
    let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let expanded = crate::env::expand(expr, &|name: &str| {
        let value = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty());
        if value.is_none() {
            missing.borrow_mut().insert(name.to_string());
        }
        Some(value.unwrap_or_default())
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(Error::Config(format!(
            "missing value for {}",
            names.join(", ")
        )));
    }
    if expanded.contains('`') {
        return Err(Error::Config(format!(
            "unable to provision SubPath `{expanded}`: must not contain backticks"
        )));
    }
    Ok(expanded)
}

/// Mounts a tmpfs on a memory-backed emptyDir's directory, unless one is there already
/// (a restarted kubelet prepares the volumes of running pods again).
fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<()> {
    if skiff_runtime::sys::is_mounted(dir) {
        return Ok(());
    }
    let options = size.map(|bytes| format!("size={bytes}"));
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        options.as_deref(),
    )
    .map_err(|e| Error::io(format!("mount tmpfs on {}", dir.display()))(e.into()))
}

/// Removes the pod's directory (volumes are plain directories, nothing is
/// mounted there; hostPath volumes live elsewhere and are left alone).
pub fn cleanup(root: &Path, uid: &str) {
    // Memory-backed emptyDirs are tmpfs mounts: unmounted first, so that removing the
    // directory does not stop at them.
    let empty_dirs = pod_dir(root, uid)
        .join("volumes")
        .join("kubernetes.io~empty-dir");
    for entry in std::fs::read_dir(&empty_dirs)
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Err(e) = skiff_runtime::sys::unmount(&entry.path()) {
            tracing::warn!(dir = %entry.path().display(), error = %e, "unmounting an emptyDir failed");
        }
    }
    let d = pod_dir(root, uid);
    if let Err(e) = std::fs::remove_dir_all(&d) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %d.display(), error = %e, "removing pod directory failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, PodSpec, VolumeMount};

    #[test]
    fn configmap_volume_is_written_atomically_and_rewritten() {
        let root = tempfile::tempdir().expect("tmp");
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u".into());
        pod.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "cm".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ])),
        );
        let vols = prepare(root.path(), &pod, &sources, &PodFacts::default()).expect("prepare");
        let d = &vols["cfg"];
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "1");
        sources.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([("a".to_string(), "3".to_string())])),
        );
        prepare(root.path(), &pod, &sources, &PodFacts::default()).expect("again");
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "3");
        assert!(!d.join("b").exists());
        let dirs = std::fs::read_dir(d)
            .expect("ls")
            .flatten()
            .filter(|e| e.path().is_dir() && !e.path().is_symlink())
            .count();
        assert_eq!(dirs, 1, "old data directory removed");
        let c = Container {
            volume_mounts: Some(vec![VolumeMount {
                name: "cfg".into(),
                mount_path: "/etc/cfg".into(),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let m = mounts(&c, &vols, &ImageVolumes::new(), &[]).expect("mounts");
        assert_eq!(m[0].container_path, "/etc/cfg");
        assert!(m[0].readonly);
        cleanup(root.path(), "u");
        assert!(!pod_dir(root.path(), "u").exists());
    }

    #[test]
    fn image_volumes_are_mounted_by_the_runtime_read_only() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": [
                {"name": "img", "mountPath": "/volume"},
                {"name": "img", "mountPath": "/etc-only", "subPathExpr": "$(DIR)", "readOnly": false}
            ]
        }))
        .expect("container");
        let spec = proto::ImageSpec {
            image: "sha256:1234".into(),
            user_specified_image: "kitten:1.7".into(),
            ..Default::default()
        };
        let images = ImageVolumes::from([("img".to_string(), spec.clone())]);
        let env = vec![("DIR".to_string(), "etc".to_string())];
        let m = mounts(&c, &HashMap::new(), &images, &env).expect("mounts");
        assert_eq!(m.len(), 2);
        for (mount, (path, sub_path)) in m.iter().zip([("/volume", ""), ("/etc-only", "etc")]) {
            assert_eq!(mount.container_path, path);
            assert_eq!(mount.image.as_ref(), Some(&spec));
            assert_eq!(mount.image_sub_path, sub_path);
            assert!(mount.host_path.is_empty() && mount.readonly);
        }
        let escaping = vec![("DIR".to_string(), "../etc".to_string())];
        assert!(mounts(&c, &HashMap::new(), &images, &escaping)
            .expect_err("..")
            .to_string()
            .contains("must not contain '..'"));
    }

    #[test]
    fn sub_path_expressions_expand_from_the_environment() {
        let env = vec![("POD_NAME".to_string(), "web-0".to_string())];
        assert_eq!(
            expand_sub_path("logs/$(POD_NAME)", &env).expect("expands"),
            "logs/web-0"
        );
        assert_eq!(
            expand_sub_path("$(NOPE)/x", &env)
                .expect_err("missing")
                .to_string(),
            Error::Config("missing value for NOPE".into()).to_string()
        );
        assert!(expand_sub_path("$(POD_NAME)`", &env).is_err());
        let root = tempfile::tempdir().expect("tmp");
        let vols = HashMap::from([("v".to_string(), root.path().to_path_buf())]);
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": [{"name": "v", "mountPath": "/m", "subPathExpr": "$(POD_NAME)"}]
        }))
        .expect("container");
        let m = mounts(&c, &vols, &ImageVolumes::new(), &env).expect("mounts");
        assert_eq!(
            m[0].host_path,
            root.path().join("web-0").display().to_string()
        );
        let absolute = vec![("POD_NAME".to_string(), "/etc".to_string())];
        assert!(mounts(&c, &vols, &ImageVolumes::new(), &absolute)
            .expect_err("absolute")
            .to_string()
            .contains("must not be an absolute path"));
    }
}
