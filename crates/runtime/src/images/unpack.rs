//! Unpacking one layer tarball into its own directory, in overlayfs's format:
//! the OCI whiteout `.wh.NAME` becomes a 0/0 character device `NAME`, and the
//! opaque marker `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on
//! its directory. The layer directories are then stacked as overlay lower dirs,
//! so the kernel applies deletions exactly as the image spec describes.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Opens `blob` and returns a reader of the uncompressed tar stream, detecting
/// gzip by its magic bytes (media types lie often enough that magic is safer).
pub fn open_layer(blob: &Path) -> Result<Box<dyn Read>> {
    let f = std::fs::File::open(blob).path_ctx("open layer", blob)?;
    let mut r = BufReader::new(f);
    let head = r.fill_buf().path_ctx("read layer", blob)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(Error::InvalidArgument(format!(
            "layer {} is zstd-compressed, which is not supported yet",
            blob.display()
        )))
    } else {
        Ok(Box::new(r))
    }
}

/// Clean relative path of a tar entry, or `None` if it tries to escape the root.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Unpacks the tar stream `tar` into `dest` (which must exist and be empty),
/// converting whiteouts to overlayfs's representation.
pub fn unpack_layer(tar: impl Read, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive.entries().path_ctx("read layer tar", dest)?;
    for entry in entries {
        let mut entry = entry.path_ctx("read layer tar entry", dest)?;
        let raw = entry
            .path()
            .path_ctx("read layer tar entry path", dest)?
            .into_owned();
        let Some(rel) = clean(&raw) else {
            tracing::warn!(path = %raw.display(), "skipping layer entry outside the root");
            continue;
        };
        let Some(file_name) = rel.file_name().map(|f| f.to_string_lossy().into_owned()) else {
            continue; // the root itself
        };
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        if file_name == OPAQUE_MARKER {
            std::fs::create_dir_all(&parent).path_ctx("create dir", &parent)?;
            set_xattr(&parent, "trusted.overlay.opaque", b"y")?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            std::fs::create_dir_all(&parent).path_ctx("create dir", &parent)?;
            let target = parent.join(hidden);
            let _ = std::fs::remove_file(&target);
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .path_ctx("mknod whiteout", &target)?;
            continue;
        }
        entry
            .unpack_in(dest)
            .ctx(|| format!("unpack {} into {}", rel.display(), dest.display()))?;
    }
    Ok(())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {} has a NUL", path.display())))?;
    let n = CString::new(name).map_err(|_| Error::Internal("xattr name".into()))?;
    // SAFETY: both strings are NUL-terminated and live across the call.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("setxattr {name} on {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, name, *d).expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, name, &[][..]).expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn rejects_escapes() {
        assert_eq!(clean(Path::new("../x")), None);
        assert_eq!(clean(Path::new("/a/./b")), Some(PathBuf::from("a/b")));
    }

    #[test]
    fn whiteouts_become_overlay_markers() {
        // mknod and trusted.* xattrs need root; the integration tests cover that
        // path end to end, so skip quietly here when unprivileged.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tar_of(&[
            ("etc/", None),
            ("etc/hello", Some(b"hi")),
            ("etc/.wh.gone", Some(b"")),
            ("opt/", None),
            ("opt/.wh..wh..opq", Some(b"")),
        ]);
        unpack_layer(&t[..], dir.path()).expect("unpack");
        assert_eq!(
            std::fs::read(dir.path().join("etc/hello")).expect("read"),
            b"hi"
        );
        let md = std::fs::symlink_metadata(dir.path().join("etc/gone")).expect("whiteout");
        assert!(md.file_type().is_char_device());
        assert!(!dir.path().join("opt/.wh..wh..opq").exists());
    }
}
