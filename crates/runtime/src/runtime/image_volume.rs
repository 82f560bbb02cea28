//! Image volumes (KEP-4639): a CRI mount whose `image` is set shows that image's
//! files in the container, read-only.
//!
//! The image's layers are the ones already unpacked for container root filesystems;
//! each such mount gets a read-only overlay of them under the container's directory
//! (`image-volumes/N`), which the container's spec bind-mounts (`ro`) at the mount's
//! path, or a directory of it when `image_sub_path` names one. The overlays go with the
//! container, and its record lists the layers, so removing the image while the
//! container exists leaves them in place (as containerd keeps an image volume's
//! snapshot through the removal of its image).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ContainerRecord, Runtime};
use crate::error::{Error, IoContext, Result};
use crate::proto;
use crate::sys;

/// Where a container's image volumes are mounted, under its directory.
const DIR: &str = "image-volumes";

/// The image behind one image mount, resolved when the container is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolume {
    /// The image as the kubelet named it (after a pull, its image ID).
    pub image: String,
    pub image_id: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// The directory of the image to mount; empty for its root.
    pub sub_path: String,
}

impl Runtime {
    /// The image volume `mount` asks for, if it asks for one; its image must be here.
    pub(crate) fn image_volume(&self, mount: &proto::Mount) -> Result<Option<ImageVolume>> {
        let Some(image) = mount.image.as_ref() else {
            return Ok(None);
        };
        if !mount.host_path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "mount {:?} names both a host path and an image",
                mount.container_path
            )));
        }
        let record = self.images.resolve(&image.image).ok_or_else(|| {
            Error::NotFound(format!("image {:?} of an image volume", image.image))
        })?;
        Ok(Some(ImageVolume {
            image: image.image.clone(),
            image_id: record.id.clone(),
            layers: record.layers.iter().map(|l| l.digest.clone()).collect(),
            sub_path: mount.image_sub_path.clone(),
        }))
    }

    /// Mounts the container's image volumes under `dir` and returns its config with
    /// each image mount turned into a read-only bind mount of its overlay (or sub path).
    pub(crate) fn mount_image_volumes(
        &self,
        rec: &ContainerRecord,
        dir: &Path,
        config: &proto::ContainerConfig,
    ) -> Result<proto::ContainerConfig> {
        let mut config = config.clone();
        for (i, (mount, record)) in config.mounts.iter_mut().zip(&rec.mounts).enumerate() {
            let Some(volume) = &record.image else {
                continue;
            };
            let target = dir.join(DIR).join(i.to_string());
            let empty = dir.join(DIR).join(format!("{i}-empty"));
            for d in [&target, &empty] {
                std::fs::create_dir_all(d).path_ctx("create", d)?;
            }
            // Top layer first; the empty directory at the bottom gives overlayfs the
            // two lower directories it needs without an upper one.
            let mut lower = Vec::with_capacity(volume.layers.len() + 1);
            for layer in volume.layers.iter().rev() {
                lower.push(self.images.layer_dir(layer)?);
            }
            lower.push(empty);
            sys::mount_overlay_readonly(&lower, &target)?;
            let source = if volume.sub_path.is_empty() {
                target
            } else {
                resolve_in_root(&target, &volume.sub_path).map_err(|e| match e {
                    SubPathError::Missing => Error::NotFound(format!(
                        "sub path {:?} in image {:?}",
                        volume.sub_path, volume.image
                    )),
                    SubPathError::Other(why) => Error::InvalidArgument(format!(
                        "sub path {:?} in image {:?}: {why}",
                        volume.sub_path, volume.image
                    )),
                })?
            };
            mount.host_path = source.display().to_string();
            mount.readonly = true;
            mount.image = None;
            mount.image_sub_path.clear();
        }
        Ok(config)
    }
}

/// Unmounts whatever image volumes the container in `dir` has mounted.
pub(crate) fn unmount_image_volumes(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir.join(DIR)) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        sys::unmount(&entry.path())?;
    }
    Ok(())
}

/// `sub` inside `root`, its symbolic links followed as the container would see them
/// (an absolute target starts again at `root`, `..` stops there), so that no link in
/// an image leads out of it. The result must exist.
fn resolve_in_root(root: &Path, sub: &str) -> std::result::Result<PathBuf, SubPathError> {
    const MAX_LINKS: usize = 40;
    let mut todo = parts(Path::new(sub));
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        let meta = std::fs::symlink_metadata(&candidate).map_err(|_| SubPathError::Missing)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(SubPathError::Other(
                    "too many levels of symbolic links".into(),
                ));
            }
            let target = std::fs::read_link(&candidate)
                .map_err(|e| SubPathError::Other(format!("read link: {e}")))?;
            if target.is_absolute() {
                resolved = PathBuf::new();
            }
            for p in parts(&target).into_iter().rev() {
                todo.push_front(p);
            }
            continue;
        }
        resolved.push(part);
    }
    Ok(root.join(resolved))
}

/// Why a sub path does not name a place in an image.
#[derive(Debug, PartialEq, Eq)]
enum SubPathError {
    Missing,
    Other(String),
}

/// A path's names and `..`s, in order.
fn parts(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{resolve_in_root, SubPathError};
    use std::os::unix::fs::symlink;

    #[test]
    fn sub_paths_resolve_inside_the_image() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/ssl")).expect("mkdir");
        std::fs::create_dir_all(root.join("usr/lib")).expect("mkdir");
        symlink("/usr/lib", root.join("lib")).expect("absolute link");
        symlink("../..", root.join("etc/ssl/up")).expect("relative link");
        symlink("/etc", root.join("etc/self")).expect("link");
        let resolve = |sub| resolve_in_root(root, sub);
        assert_eq!(resolve("etc"), Ok(root.join("etc")));
        assert_eq!(resolve("etc/ssl"), Ok(root.join("etc/ssl")));
        // An absolute link means the image's own /usr/lib, never the host's.
        assert_eq!(resolve("lib"), Ok(root.join("usr/lib")));
        // `..` stops at the image's root.
        assert_eq!(resolve("etc/ssl/up/usr"), Ok(root.join("usr")));
        assert_eq!(resolve("etc/self/ssl"), Ok(root.join("etc/ssl")));
        assert_eq!(resolve("not-existing"), Err(SubPathError::Missing));
        symlink("loop", root.join("loop")).expect("loop");
        assert!(matches!(resolve("loop"), Err(SubPathError::Other(_))));
    }
}
