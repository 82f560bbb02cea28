//! Handing transactions to the kernel. Behind a trait so the sync logic is tested by
//! capturing transactions, and the real-kernel test can run `nft` inside a network
//! namespace.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::Error;

/// Applies one `nft -f -` transaction atomically, or fails without changing anything.
pub trait Apply: Send + 'static {
    fn apply(&mut self, transaction: &str) -> Result<(), Error>;

    /// Called before a transaction that writes everything, for appliers that keep state
    /// outside their transactions (iptables' jumps from the built-in chains) and should
    /// check it again then.
    fn before_full_sync(&mut self) {}
}

/// Runs `nft -f -` (or any command line ending in an `nft`, such as
/// `ip netns exec NAME nft`), feeding the transaction on stdin.
#[derive(Clone, Debug)]
pub struct NftCommand {
    argv: Vec<String>,
}

impl NftCommand {
    /// `argv` is the command that runs nft; `-f -` is appended.
    pub fn new<I, S>(argv: I) -> NftCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NftCommand {
            argv: argv.into_iter().map(Into::into).collect(),
        }
    }
}

impl Default for NftCommand {
    fn default() -> Self {
        NftCommand::new(["nft"])
    }
}

impl Apply for NftCommand {
    fn apply(&mut self, transaction: &str) -> Result<(), Error> {
        let program = self.argv.first().map_or("nft", String::as_str);
        let spawn_error = |source| Error::Spawn {
            program: program.to_string(),
            source,
        };
        let mut child = Command::new(program)
            .args(&self.argv[1.min(self.argv.len())..])
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(transaction.as_bytes()),
            None => Ok(()),
        };
        let output = child.wait_with_output().map_err(spawn_error)?;
        if !output.status.success() {
            return Err(Error::Nft {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        // nft reads all of stdin before it answers, so a short write shows as its failure.
        written.map_err(spawn_error)
    }
}

/// Keeps every transaction instead of applying it; `fail_next` makes the next one fail,
/// as nft would on a kernel that refuses it.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderState>>,
}

#[derive(Debug, Default)]
struct RecorderState {
    transactions: Vec<String>,
    fail_next: bool,
}

impl Recorder {
    pub fn transactions(&self) -> Vec<String> {
        self.lock().transactions.clone()
    }

    pub fn fail_next(&self) {
        self.lock().fail_next = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Apply for Recorder {
    fn apply(&mut self, transaction: &str) -> Result<(), Error> {
        let mut state = self.lock();
        state.transactions.push(transaction.to_string());
        if std::mem::take(&mut state.fail_next) {
            return Err(Error::Nft {
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        Ok(())
    }
}
