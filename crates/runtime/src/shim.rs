//! The two small processes the runtime leaves behind, so that containers
//! outlive it (the role conmon plays for CRI-O):
//!
//! - the **container monitor** (`__skiff-shim STATE_DIR`): makes itself a child
//!   subreaper, runs `runc create` with its stdout/stderr on pipes it holds,
//!   reports `ok PID` (or the error) on its stdout to the runtime, then copies
//!   the container's output to the CRI log file and, when the container's init
//!   exits, writes `exit.json` (code, time, OOM) into STATE_DIR;
//! - the **sandbox holder** (`__skiff-sandbox`), for pods that share one PID
//!   namespace (and pods with no namespace of their own, whose liveness it marks):
//!   started by the runtime already inside the pod's fresh namespaces, it brings up
//!   `lo`, forks the pod's PID 1 and reaps until SIGTERM. Other pods need no
//!   process: their namespaces live on in bind mounts.
//!
//! Both are the calling binary re-executed: `skiff`'s `main` must call
//! [`main_if_shim`] before anything else (before starting a tokio runtime).
//! All state they share with the runtime is in files, so a restarted runtime
//! finds everything again.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::runc::Runc;

pub const SHIM_ARG: &str = "__skiff-shim";
pub const SANDBOX_ARG: &str = "__skiff-sandbox";

/// What the runtime tells a monitor, written to `STATE_DIR/shim.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub runc_binary: PathBuf,
    pub runc_root: PathBuf,
    pub log_path: Option<PathBuf>,
    /// The container's memory cgroup directory, read for OOM kills at exit.
    pub memory_cgroup: Option<PathBuf>,
    /// The container reads stdin: the monitor holds a pipe to it, fed by attached
    /// clients.
    #[serde(default)]
    pub stdin: bool,
    /// Stdin closes when the first attached client closes its side.
    #[serde(default)]
    pub stdin_once: bool,
    /// The container runs on a terminal: runc hands the monitor the terminal's master
    /// side, whose output is the container's stdout and whose input is its stdin.
    #[serde(default)]
    pub tty: bool,
}

/// Written by the monitor when the container's init exits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub exit_code: i32,
    /// Unix nanoseconds.
    pub finished_at: i64,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub signal: Option<i32>,
}

pub const EXIT_FILE: &str = "exit.json";
pub const PID_FILE: &str = "init.pid";
pub const SHIM_CONFIG: &str = "shim.json";
/// The monitor's pid, written by the runtime when it starts one.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The monitor's attach socket in STATE_DIR. Each client gets the container's output
/// from then on, framed as `[stream][length: u32 big-endian][bytes]` with stream 1 for
/// stdout and 2 for stderr, until the container exits; what a client sends goes to the
/// container's stdin (if it has one), and shutting down its sending side closes stdin
/// for a `stdin_once` container.
pub const ATTACH_SOCKET: &str = "attach.sock";
pub const ATTACH_STDOUT: u8 = 1;
pub const ATTACH_STDERR: u8 = 2;
/// The monitor's resize socket in STATE_DIR, for a container on a terminal: each line
/// a client sends, `<width> <height>`, sets the terminal's size.
pub const RESIZE_SOCKET: &str = "resize.sock";

/// If this process was started as a shim or sandbox holder, runs it and
/// returns its exit code; otherwise returns `None` at once.
pub fn main_if_shim() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    let first = args.next()?;
    match first.to_str()? {
        SHIM_ARG => {
            let dir = args.next().map(PathBuf::from)?;
            Some(match run_monitor(&dir) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff shim: {e:#}");
                    1
                }
            })
        }
        SANDBOX_ARG => Some(run_holder()),
        _ => None,
    }
}

pub fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// One line of the CRI log format: `<RFC3339Nano> <stream> <P|F> <content>`.
pub fn format_log_line(
    ts: jiff::Timestamp,
    stream: &str,
    partial: bool,
    content: &[u8],
) -> Vec<u8> {
    let mut out = format!("{ts} {stream} {} ", if partial { "P" } else { "F" }).into_bytes();
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Longest line written before splitting it into `P` records, as containerd.
const MAX_LINE: usize = 16 * 1024;

fn copy_log(
    mut from: impl Read,
    stream: &'static str,
    to: Arc<Mutex<Option<std::fs::File>>>,
    attached: Option<&Attached>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let emit = |line: &[u8], partial: bool| {
        let rec = format_log_line(jiff::Timestamp::now(), stream, partial, line);
        if let Ok(mut g) = to.lock() {
            if let Some(f) = g.as_mut() {
                let _ = f.write_all(&rec);
            }
        }
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(attached) = attached {
            let number = if stream == "stdout" {
                ATTACH_STDOUT
            } else {
                ATTACH_STDERR
            };
            attached.broadcast(number, &buf[..n]);
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            emit(&pending[..i], false);
            pending.drain(..=i);
        }
        while pending.len() >= MAX_LINE {
            emit(&pending[..MAX_LINE], true);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        emit(&pending, false);
    }
}

/// The clients attached to a container's stdio.
struct Attached {
    clients: Mutex<Vec<std::os::unix::net::UnixStream>>,
    stdin: Mutex<Option<std::fs::File>>,
    stdin_once: bool,
}

/// How long a write to an attached client may block the container's output before the
/// client is dropped.
const ATTACH_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Attached {
    fn broadcast(&self, stream: u8, data: &[u8]) {
        let mut frame = Vec::with_capacity(data.len() + 5);
        frame.push(stream);
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        if let Ok(mut clients) = self.clients.lock() {
            clients.retain_mut(|client| client.write_all(&frame).is_ok());
        }
    }

    /// Accepts clients until the listener fails (the monitor exits with the container).
    fn serve(self: Arc<Self>, listener: std::os::unix::net::UnixListener) {
        for client in listener.incoming().flatten() {
            let Ok(writer) = client.try_clone() else {
                continue;
            };
            let _ = writer.set_write_timeout(Some(ATTACH_WRITE_TIMEOUT));
            if let Ok(mut clients) = self.clients.lock() {
                clients.push(writer);
            }
            let attached = self.clone();
            std::thread::spawn(move || attached.feed_stdin(client));
        }
    }

    /// Copies what a client sends into the container's stdin.
    fn feed_stdin(&self, mut client: std::os::unix::net::UnixStream) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Ok(mut stdin) = self.stdin.lock() else {
                return;
            };
            if let Some(pipe) = stdin.as_mut() {
                if pipe.write_all(&buf[..n]).is_err() {
                    *stdin = None;
                }
            }
        }
        if self.stdin_once {
            if let Ok(mut stdin) = self.stdin.lock() {
                *stdin = None;
            }
        }
    }

    /// The container has exited and its output is complete: clients are let go.
    fn close(&self) {
        if let Ok(mut clients) = self.clients.lock() {
            for client in clients.drain(..) {
                let _ = client.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Where runc hands over a new container's terminal (`runc create --console-socket`).
/// Its path is passed to runc, so it cannot be one of our `/proc/self/fd` short names:
/// a name of its own in the temporary directory, removed once used.
struct ConsoleSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    fn listen() -> anyhow::Result<ConsoleSocket> {
        use anyhow::Context;
        let path = std::env::temp_dir().join(format!("skiff-console-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("bind {}", path.display()))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The terminal's master side, which runc has sent by the time `create` returns.
    fn receive(&self) -> anyhow::Result<OwnedFd> {
        use anyhow::Context;
        self.listener
            .set_nonblocking(true)
            .context("console socket")?;
        let (stream, _) = self.listener.accept().context("runc sent no terminal")?;
        stream.set_nonblocking(false).context("console socket")?;
        crate::sys::receive_fd(&stream).context("receive the terminal from runc")
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves [`RESIZE_SOCKET`] for the container's terminal until the monitor exits.
fn serve_resizes(dir: &Path, master: OwnedFd) -> anyhow::Result<()> {
    use anyhow::Context;
    let socket = dir.join(RESIZE_SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener =
        crate::sys::with_short_path(&socket, |path| std::os::unix::net::UnixListener::bind(path))
            .context("bind the resize socket")?;
    let master = Arc::new(master);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let master = master.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(client)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut numbers = line.split_whitespace().map(str::parse::<u16>);
                    if let (Some(Ok(width)), Some(Ok(height))) = (numbers.next(), numbers.next()) {
                        crate::sys::set_window_size(master.as_raw_fd(), width, height);
                    }
                }
            });
        }
    });
    Ok(())
}

static REOPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_reopen(_: libc::c_int) {
    REOPEN.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn open_log(p: &Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .with_context(|| format!("open log {}", p.display()))
}

fn run_monitor(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;

    let cfg: ShimConfig =
        serde_json::from_slice(&std::fs::read(dir.join(SHIM_CONFIG)).context("read shim.json")?)
            .context("parse shim.json")?;
    // Orphaned container inits re-parent to us, so we can wait for them.
    nix::sys::prctl::set_child_subreaper(true).context("become subreaper")?;

    let log = match &cfg.log_path {
        Some(p) => Some(open_log(p)?),
        None => None,
    };
    let log = Arc::new(Mutex::new(log));
    // SIGUSR1 asks us to reopen the log (ReopenContainerLog, after the kubelet
    // rotated it). Block it now so the copier threads inherit the block and
    // only the main thread, in waitpid, sees it.
    let mut usr1 = nix::sys::signal::SigSet::empty();
    usr1.add(nix::sys::signal::Signal::SIGUSR1);
    usr1.thread_block().context("block SIGUSR1")?;
    let (stdin_for_container, stdin_pipe) = if cfg.stdin && !cfg.tty {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        (std::process::Stdio::from(r), Some(std::fs::File::from(w)))
    } else {
        (std::process::Stdio::null(), None)
    };
    let attached = Arc::new(Attached {
        clients: Mutex::new(Vec::new()),
        stdin: Mutex::new(stdin_pipe),
        stdin_once: cfg.stdin_once,
    });
    let socket = dir.join(ATTACH_SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener =
        crate::sys::with_short_path(&socket, |path| std::os::unix::net::UnixListener::bind(path))
            .context("bind the attach socket")?;
    {
        let attached = attached.clone();
        std::thread::spawn(move || attached.serve(listener));
    }
    let runc = Runc {
        binary: cfg.runc_binary.clone(),
        root: cfg.runc_root.clone(),
    };
    let pid_file = dir.join(PID_FILE);
    let runc_log = dir.join("runc.log");
    let mut create = runc.std_command();
    create
        .arg("--log")
        .arg(&runc_log)
        .arg("create")
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(&pid_file);
    // Output: the terminal's master side, or a pipe each for stdout and stderr. The
    // Command (and its copies of the write ends) is dropped once runc has created the
    // container, so EOF (EIO on a terminal) means the container's output is complete.
    let (status, outputs) = if cfg.tty {
        let console = ConsoleSocket::listen()?;
        let status = create
            .arg("--console-socket")
            .arg(&console.path)
            .arg(&cfg.id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("spawn runc create")?;
        let mut outputs = Vec::new();
        if status.success() {
            let master = console.receive()?;
            if cfg.stdin {
                let input = master.try_clone().context("terminal input")?;
                if let Ok(mut stdin) = attached.stdin.lock() {
                    *stdin = Some(std::fs::File::from(input));
                }
            }
            serve_resizes(dir, master.try_clone().context("terminal size")?)?;
            outputs.push(("stdout", std::fs::File::from(master)));
        }
        (status, outputs)
    } else {
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        let status = create
            .arg(&cfg.id)
            .stdin(stdin_for_container)
            .stdout(std::process::Stdio::from(out_w))
            .stderr(std::process::Stdio::from(err_w))
            .status()
            .context("spawn runc create")?;
        let outputs = vec![
            ("stdout", std::fs::File::from(out_r)),
            ("stderr", std::fs::File::from(err_r)),
        ];
        (status, outputs)
    };
    drop(create);
    let copiers: Vec<_> = outputs
        .into_iter()
        .map(|(stream, from)| {
            let log = log.clone();
            let attached = attached.clone();
            std::thread::spawn(move || copy_log(from, stream, log, Some(&attached)))
        })
        .collect();
    let mut report = std::io::stdout();
    if !status.success() {
        let msg = std::fs::read_to_string(&runc_log)
            .ok()
            .and_then(|l| {
                l.lines().rev().find(|x| x.contains("error")).map(|x| {
                    match serde_json::from_str::<serde_json::Value>(x) {
                        Ok(v) => v
                            .get("msg")
                            .and_then(|m| m.as_str())
                            .unwrap_or(x)
                            .to_string(),
                        Err(_) => x.to_string(),
                    }
                })
            })
            .unwrap_or_else(|| format!("runc create exited with {status}"));
        let _ = writeln!(report, "error {msg}");
        return Ok(());
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .context("read pid file")?
        .trim()
        .parse()
        .context("parse pid file")?;
    writeln!(report, "ok {pid}").context("report to runtime")?;
    report.flush().ok();
    // Detach from the runtime's pipe: it may exit, and we must not get SIGPIPE.
    if let Ok(devnull) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&devnull);
    }

    // No SA_RESTART: the signal must interrupt waitpid so we can act on it.
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_reopen),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGUSR1, &action) }
        .context("install SIGUSR1 handler")?;
    usr1.thread_unblock().context("unblock SIGUSR1")?;
    let init = Pid::from_raw(pid);
    let (exit_code, signal) = loop {
        if REOPEN.swap(false, std::sync::atomic::Ordering::SeqCst) {
            if let Some(p) = &cfg.log_path {
                match open_log(p) {
                    Ok(f) => {
                        if let Ok(mut g) = log.lock() {
                            *g = Some(f);
                        }
                    }
                    Err(e) => eprintln!("skiff shim: reopen log: {e:#}"),
                }
            }
        }
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p == init => break (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == init => {
                break (128 + sig as i32, Some(sig as i32))
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                // Not our child after all (no subreaper?): poll for its end.
                while nix::sys::signal::kill(init, None).is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                break (-1, None);
            }
            Err(e) => return Err(e).context("waitpid"),
        }
    };
    let finished_at = now_nanos();
    let oom_killed = cfg
        .memory_cgroup
        .as_ref()
        .and_then(|c| std::fs::read_to_string(c.join("memory.oom_control")).ok())
        .is_some_and(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .any(|n| n.trim() != "0")
        });
    for copier in copiers {
        let _ = copier.join();
    }
    attached.close();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(dir.join(RESIZE_SOCKET));
    if let Ok(mut g) = log.lock() {
        if let Some(f) = g.as_mut() {
            let _ = f.sync_all();
        }
    }
    let rec = ExitRecord {
        exit_code,
        finished_at,
        oom_killed,
        signal,
    };
    let data = serde_json::to_vec(&rec).context("encode exit")?;
    crate::images::store::write_atomic(&dir.join(EXIT_FILE), &data).context("write exit.json")?;
    Ok(())
}

pub(crate) fn set_loopback_up() -> std::io::Result<()> {
    let sock: OwnedFd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: the socket is open and req outlives both ioctls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn run_holder() -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    if let Err(e) = set_loopback_up() {
        eprintln!("skiff sandbox: bring up lo: {e}");
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGCHLD);
    if set.thread_block().is_err() {
        return 1;
    }
    // Asked for a pod PID namespace, the runtime left our children in a new one: its
    // init must be a child of ours (this process is still single-threaded: forking is
    // safe).
    let pod_init = if namespace("pid") != namespace("pid_for_children") {
        // SAFETY: single-threaded here; the child only makes async-signal-safe calls
        // before it waits for signals.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // The pod's PID 1 dies with the holder (torn down with SIGKILL).
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                return reap_until_told(&set);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => Some(child),
            Err(e) => {
                eprintln!("skiff sandbox: fork the pod's PID 1: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    // Tells the runtime that containers may start.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
            return 1;
        }
    }
    let code = reap_until_told(&set);
    if let Some(init) = pod_init {
        let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
    }
    code
}

/// The identity of one of this process's namespaces (`/proc/self/ns/<kind>`).
fn namespace(kind: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/ns/{kind}")).ok()
}

/// Reaps children (orphans included, as an init must) until SIGTERM or SIGINT.
fn reap_until_told(set: &nix::sys::signal::SigSet) -> i32 {
    use nix::sys::signal::Signal;
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(s) = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(-1),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                ) {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return 0,
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines() {
        let ts: jiff::Timestamp = "2016-10-06T00:17:09.669794202Z".parse().expect("ts");
        assert_eq!(
            format_log_line(ts, "stdout", false, b"hello"),
            b"2016-10-06T00:17:09.669794202Z stdout F hello\n"
        );
        let log = Arc::new(Mutex::new(Some(tempfile::tempfile().expect("tmp"))));
        let mut input = b"a\nbb\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 3));
        copy_log(&input[..], "stderr", log.clone(), None);
        let mut f = log.lock().expect("lock").take().expect("file");
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        let mut s = String::new();
        f.read_to_string(&mut s).expect("read");
        let tags: Vec<&str> = s
            .lines()
            .map(|l| l.split(' ').nth(2).unwrap_or(""))
            .collect();
        assert_eq!(tags, ["F", "F", "P", "F"]);
        assert!(s.lines().next().is_some_and(|l| l.ends_with(" stderr F a")));
    }
}
