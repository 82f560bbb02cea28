//! Handing transactions to the kernel. Behind a trait so the sync logic is tested by
//! capturing transactions, and the real-kernel test can run `nft` or `iptables-restore`
//! inside a network namespace.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use crate::iptables::{delete_stale_chains, JUMPS};
use crate::Error;

/// Applies one transaction (an `nft -f -` script, or `iptables-restore` input), or fails.
pub trait Apply: Send + 'static {
    fn apply(&mut self, transaction: &str) -> Result<(), Error>;

    /// Called before a transaction that writes everything, for appliers that keep state
    /// outside their transactions (iptables' jumps from the built-in chains) and should
    /// check it again then.
    fn before_full_sync(&mut self) {}

    /// Deletes connection-tracking entries that would keep UDP traffic on a stale path
    /// (see [`crate::conntrack`]), in the kernel this applier programs.
    fn forget_flows(&mut self, _deletions: &[crate::conntrack::Deletion]) {}
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
    fn forget_flows(&mut self, deletions: &[crate::conntrack::Deletion]) {
        // Whatever runs nft, minus nft: the same namespace for conntrack.
        let prefix = &self.argv[..self.argv.len().saturating_sub(1)];
        crate::conntrack::delete(prefix, deletions);
    }

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

/// Runs `iptables-restore --noflush` (and `iptables`, `iptables-save`) behind a command
/// prefix such as `ip netns exec NAME`. Its first transaction (and the first after a
/// failure) also deletes the per-service chains an earlier run left, found with
/// `iptables-save`; after each full sync it makes sure the built-in chains jump to ours
/// ([`JUMPS`]): those are the host's chains, so each jump is checked with `-C` and
/// inserted only when missing, never rewritten.
#[derive(Clone, Debug)]
pub struct IptablesCommand {
    prefix: Vec<String>,
    /// `-legacy` for the legacy (x_tables) tools, empty for the system's default.
    variant: &'static str,
    /// Whether what earlier runs left is unknown: iptables-save is slow with many rules,
    /// so it runs only then, not on the periodic full syncs, which know the last state.
    scan_stale: bool,
    /// Whether the next transaction is a full sync after which the jumps are checked.
    check_jumps: bool,
}

impl IptablesCommand {
    /// `prefix` runs before each iptables tool; empty for the host's own tables.
    pub fn new<I, S>(prefix: I) -> IptablesCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        IptablesCommand {
            prefix: prefix.into_iter().map(Into::into).collect(),
            variant: "",
            scan_stale: true,
            check_jumps: true,
        }
    }

    /// The same with the legacy x_tables tools (`iptables-legacy-restore`…), for hosts
    /// whose other rules live there: both backends at once make a confusing firewall.
    pub fn legacy(mut self) -> IptablesCommand {
        self.variant = "-legacy";
        self
    }

    fn run(&self, tool: &str, args: &[&str], input: Option<&str>) -> Result<Output, Error> {
        // `iptables-save` → `iptables-legacy-save`.
        let program = match tool.split_once('-') {
            Some((base, rest)) => format!("{base}{}-{rest}", self.variant),
            None => format!("{tool}{}", self.variant),
        };
        let argv: Vec<&str> = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain([program.as_str()])
            .chain(args.iter().copied())
            .collect();
        let spawn_error = |source| Error::Spawn {
            program: argv[0].to_string(),
            source,
        };
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let written = match (child.stdin.take(), input) {
            (Some(mut stdin), Some(input)) => stdin.write_all(input.as_bytes()),
            _ => Ok(()),
        };
        let output = child.wait_with_output().map_err(spawn_error)?;
        written.map_err(spawn_error)?;
        Ok(output)
    }

    fn run_ok(&self, program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
        let output = self.run(program, args, input)?;
        if !output.status.success() {
            return Err(Error::Iptables {
                command: format!("{program} {}", args.join(" ")),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn ensure_jumps(&self) -> Result<(), Error> {
        for jump in JUMPS {
            let mut args = vec!["-w", "-t", jump.table, "-C", jump.chain];
            args.extend_from_slice(jump.rule);
            if self.run("iptables", &args, None)?.status.success() {
                continue;
            }
            args[3] = "-I";
            self.run_ok("iptables", &args, None)?;
            tracing::info!(
                table = jump.table,
                chain = jump.chain,
                "inserted the jump to the service proxy's chains"
            );
        }
        Ok(())
    }
}

impl Default for IptablesCommand {
    fn default() -> Self {
        IptablesCommand::new(Vec::<String>::new())
    }
}

impl Apply for IptablesCommand {
    fn apply(&mut self, transaction: &str) -> Result<(), Error> {
        let result = self.apply_inner(transaction);
        if result.is_err() {
            self.scan_stale = true;
            self.check_jumps = true;
        }
        result
    }

    fn before_full_sync(&mut self) {
        self.check_jumps = true;
    }

    fn forget_flows(&mut self, deletions: &[crate::conntrack::Deletion]) {
        crate::conntrack::delete(&self.prefix, deletions);
    }
}

impl IptablesCommand {
    fn apply_inner(&mut self, transaction: &str) -> Result<(), Error> {
        let input = if self.scan_stale {
            let mut saved = String::new();
            for table in ["filter", "nat"] {
                saved.push_str(&self.run_ok("iptables-save", &["-t", table], None)?);
            }
            delete_stale_chains(transaction, &saved)
        } else {
            transaction.to_string()
        };
        self.run_ok("iptables-restore", &["-w", "--noflush"], Some(&input))?;
        self.scan_stale = false;
        if std::mem::take(&mut self.check_jumps) {
            self.ensure_jumps()?;
        }
        Ok(())
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
    full_syncs: usize,
}

impl Recorder {
    pub fn transactions(&self) -> Vec<String> {
        self.lock().transactions.clone()
    }

    /// How many times a full sync was announced ([`Apply::before_full_sync`]).
    pub fn full_syncs(&self) -> usize {
        self.lock().full_syncs
    }

    pub fn fail_next(&self) {
        self.lock().fail_next = true;
    }

    /// Waits (30 s at most) for a transaction after the first `skip` that satisfies
    /// `want`, and returns its index; panics with every transaction seen otherwise. For
    /// tests that drive a whole sync loop.
    pub async fn wait_for(&self, skip: usize, what: &str, want: impl Fn(&str) -> bool) -> usize {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let txs = self.transactions();
            if let Some(i) = txs.iter().skip(skip).position(|tx| want(tx)) {
                return skip + i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no transaction {what} within 30 s; got:\n{}",
                txs.join("\n----\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
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

    fn before_full_sync(&mut self) {
        self.lock().full_syncs += 1;
    }
}
