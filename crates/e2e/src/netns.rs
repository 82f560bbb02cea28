//! Helpers for tests that build hosts out of network namespaces (the proxy's and the
//! NetworkPolicy enforcer's real-kernel tests): whether they can run here, running the
//! `ip`/`nft` lines that build them, and moving a thread into one.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Why a real-kernel test cannot run here (not root, or one of `tools` — each a program
/// and an argument that makes it print its version — missing); `None` when it can.
pub fn unavailable(tools: &[[&str; 2]]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    tools
        .iter()
        .find(|[program, arg]| Command::new(program).arg(arg).output().is_err())
        .map(|[program, _]| format!("`{program}` not found"))
}

/// Runs a command given as one whitespace-separated line; panics with its stderr if it
/// fails.
pub fn sh(line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let Some((program, rest)) = args.split_first() else {
        panic!("an empty command line");
    };
    let out = Command::new(program)
        .args(rest)
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into the network namespace `ns` (made by `ip netns add`).
pub fn enter(ns: &str) -> io::Result<()> {
    let file = File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: a valid fd for a netns file; only the calling thread changes namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
