//! The few privileged system operations the runtime does itself (everything
//! else is runc's job): overlay and bind mounts, namespace files, cgroup
//! directories. Kept together so the rest of the logic has no raw syscalls.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{IoContext, Result};

/// Mounts an overlay at `target` with `lower` (top layer first).
pub fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .path_ctx("mount overlay on", target)
}

/// Mounts a read-only overlay of `lower` (top layer first, at least two: overlayfs
/// wants two lower directories when it has no upper one) at `target`.
pub fn mount_overlay_readonly(lower: &[PathBuf], target: &Path) -> Result<()> {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={}", lower.join(":"));
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .path_ctx("mount read-only overlay on", target)
}

/// Bind-mounts `src` onto `target` (a file or directory that must exist).
pub fn bind(src: &Path, target: &Path) -> Result<()> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("bind {} on {}", src.display(), target.display()))
}

/// Lazily unmounts `target` if it is mounted; absent or unmounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).path_ctx("unmount", target),
    }
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == p)
}

/// Whether `path` is a namespace (a file of the kernel's `nsfs`, as a bind-mounted
/// `/proc/PID/ns/*` entry is), with one `statfs`.
pub fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Removes the cgroup directory `path` (e.g. `/kubepods/ID`) from every
/// hierarchy; runc removes container cgroups, this removes the pod level.
pub fn remove_cgroup(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
        return;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(rel);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove cgroup");
            }
        }
    }
}

/// The memory cgroup directory of a cgroups path (v1 layout).
pub fn memory_cgroup(path: &str) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join("memory")
        .join(path.trim_start_matches('/'))
}

/// This process's `oom_score_adj`: the floor for containers' values.
pub fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub fn process_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Whether process `pid` was started with `arg` as its first argument (our
/// shim modes): guards against acting on a reused pid.
pub fn process_runs(pid: i32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(arg.as_bytes()))
        .unwrap_or(false)
}

/// Connects to `port` on the loopback of the network namespace at `netns` (IPv4 first,
/// then IPv6), as a port forward into a pod does. The namespace switch happens on a
/// thread of its own, which ends with the connection made: threads that go on running
/// other work must stay in the host's namespace.
pub async fn connect_in_netns(netns: &Path, port: u16) -> std::io::Result<std::net::TcpStream> {
    let netns = netns.to_path_buf();
    let (answer, connected) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-connect".into())
        .spawn(move || {
            let _ = answer.send(connect_from_this_thread(&netns, port));
        })?;
    connected
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("netns connect thread died")))
}

fn connect_from_this_thread(netns: &Path, port: u16) -> std::io::Result<std::net::TcpStream> {
    let namespace = std::fs::File::open(netns)?;
    nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)?;
    let timeout = std::time::Duration::from_secs(10);
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v4, timeout)
        .or_else(|_| std::net::TcpStream::connect_timeout(&v6, timeout))
}

/// Runs `use_path` with a short name for `path` (`/proc/self/fd/N/<file name>`, through
/// an open handle on its directory): a unix socket's path may not exceed 107 bytes, and
/// state directories named by 64-digit ids under a test's temporary root do.
pub fn with_short_path<T>(
    path: &Path,
    use_path: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return use_path(path);
    };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name);
    let result = use_path(&short);
    drop(handle);
    result
}

/// Sets a terminal's size through its master side (the process on it gets SIGWINCH).
pub fn set_window_size(master: std::os::fd::RawFd, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which outlives the call.
    unsafe {
        libc::ioctl(master, libc::TIOCSWINSZ, &size);
    }
}

/// Receives the file descriptor another process sends over `stream` with SCM_RIGHTS
/// (runc's `--console-socket` hands over a terminal's master side so).
pub fn receive_fd(
    stream: &std::os::unix::net::UnixStream,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel has just installed this descriptor in our table
                // for us alone.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other("no file descriptor in the message"))
}
