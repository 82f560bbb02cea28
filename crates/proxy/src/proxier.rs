//! One sync: model → render → diff against what was last applied → apply. Holds the only
//! state that survives between syncs: the rules the kernel last accepted. The kernel
//! mechanism is a [`Backend`] (nftables or iptables); everything else (when to rewrite
//! everything, failure handling, metrics) is shared.

use std::time::{Duration, Instant};

use crate::apply::Apply;
use crate::metrics::Metrics;
use crate::model::{Model, RenderConfig};
use crate::nftables::Nftables;
use crate::Error;

/// How often the whole table is rewritten even when nothing seems to have changed, to
/// repair edits made behind the proxy's back (upstream's nftables mode uses one hour).
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// A kernel mechanism for Services: renders the model into rules and writes the
/// transactions that move the kernel from one rendering to the next.
pub trait Backend: Send + 'static {
    /// The complete desired state, as a value that can be diffed against the last one.
    type Rules: Send + 'static;

    /// What logs call the mode.
    const NAME: &'static str;

    fn render(&self, model: &Model, config: &RenderConfig) -> Self::Rules;

    /// Writes everything when what the kernel holds is unknown (at start, after a failure).
    fn full_transaction(&self, new: &Self::Rules) -> String;

    /// Moves the kernel from `old` to `new`: only what differs, or with `rewrite` everything
    /// (repairing edits made behind our back). `None` when there is nothing to do.
    fn update_transaction(
        &self,
        old: &Self::Rules,
        new: &Self::Rules,
        rewrite: bool,
    ) -> Option<String>;

    /// Sets the mode's gauges after `rules` were applied.
    fn record(&self, rules: &Self::Rules, metrics: &Metrics);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// Everything was written.
    Full,
    /// Only what changed was written.
    Partial,
    /// Nothing changed; the kernel tool was not run.
    Noop,
}

impl SyncKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
            SyncKind::Noop => "noop",
        }
    }
}

pub struct Proxier<A: Apply, B: Backend = Nftables> {
    backend: B,
    config: RenderConfig,
    applier: A,
    /// What the kernel holds, as far as we know; `None` at start and after a failure,
    /// which makes the next sync replace the whole table.
    applied: Option<B::Rules>,
    /// The model behind `applied`: what UDP flows may still be NATed to.
    applied_model: Option<Model>,
    last_full: Option<Instant>,
    full_sync_period: Duration,
    metrics: Option<Metrics>,
}

impl<A: Apply> Proxier<A, Nftables> {
    /// A proxier in nftables mode.
    pub fn new(config: RenderConfig, applier: A) -> Proxier<A, Nftables> {
        Proxier::with_backend(Nftables, config, applier)
    }
}

impl<A: Apply, B: Backend> Proxier<A, B> {
    pub fn with_backend(backend: B, config: RenderConfig, applier: A) -> Proxier<A, B> {
        Proxier {
            backend,
            config,
            applier,
            applied: None,
            applied_model: None,
            last_full: None,
            full_sync_period: FULL_SYNC_PERIOD,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_full_sync_period(mut self, period: Duration) -> Self {
        self.full_sync_period = period;
        self
    }

    /// The rules last applied successfully.
    pub fn applied(&self) -> Option<&B::Rules> {
        self.applied.as_ref()
    }

    /// Brings the kernel to the state `model` describes.
    pub fn sync(&mut self, model: &Model) -> Result<SyncKind, Error> {
        let start = Instant::now();
        let desired = self.backend.render(model, &self.config);
        let (kind, transaction) = match &self.applied {
            None => (
                SyncKind::Full,
                Some(self.backend.full_transaction(&desired)),
            ),
            Some(old) => {
                let rewrite = self
                    .last_full
                    .is_none_or(|t| t.elapsed() >= self.full_sync_period);
                match self.backend.update_transaction(old, &desired, rewrite) {
                    Some(tx) if rewrite => (SyncKind::Full, Some(tx)),
                    Some(tx) => (SyncKind::Partial, Some(tx)),
                    None => (SyncKind::Noop, None),
                }
            }
        };
        if kind == SyncKind::Full {
            self.applier.before_full_sync();
        }
        let result = match &transaction {
            Some(tx) => self.applier.apply(tx),
            None => Ok(()),
        };
        if let Some(m) = &self.metrics {
            m.record_sync(kind.label(), result.is_ok(), start);
        }
        match result {
            Ok(()) => {
                if kind == SyncKind::Full {
                    self.last_full = Some(Instant::now());
                }
                if let Some(m) = &self.metrics {
                    self.backend.record(&desired, m);
                    m.services.set(model.services.len() as i64);
                }
                self.applied = Some(desired);
                // Known even across failed syncs: the flows were made by rules once applied.
                if let Some(previous) = &self.applied_model {
                    let stale = crate::conntrack::stale_entries(previous, model);
                    if !stale.is_empty() {
                        self.applier.forget_flows(&stale);
                    }
                }
                self.applied_model = Some(model.clone());
                Ok(kind)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::Recorder;
    use crate::testutil::{model_of, service_port};

    #[test]
    fn full_then_partial_then_noop_and_full_again_after_failure() {
        let recorder = Recorder::default();
        let mut proxier = Proxier::new(RenderConfig::default(), recorder.clone());
        let one = model_of([service_port("ns", "web", "10.96.0.50", &["10.88.1.2"])]);
        let two = model_of([service_port(
            "ns",
            "web",
            "10.96.0.50",
            &["10.88.1.2", "10.88.2.2"],
        )]);
        assert_eq!(proxier.sync(&one).expect("sync"), SyncKind::Full);
        assert_eq!(proxier.sync(&two).expect("sync"), SyncKind::Partial);
        assert_eq!(proxier.sync(&two).expect("sync"), SyncKind::Noop);
        assert_eq!(recorder.transactions().len(), 2);
        assert!(!recorder.transactions()[1].contains("delete table"));

        recorder.fail_next();
        assert!(proxier.sync(&one).is_err());
        assert!(proxier.applied().is_none());
        assert_eq!(proxier.sync(&one).expect("sync"), SyncKind::Full);
        let txs = recorder.transactions();
        assert!(txs[txs.len() - 1].contains("delete table ip skiff-proxy"));
    }

    #[test]
    fn periodic_full_resync_rewrites_without_dropping_the_table() {
        let recorder = Recorder::default();
        let mut proxier = Proxier::new(RenderConfig::default(), recorder.clone())
            .with_full_sync_period(Duration::ZERO);
        let one = model_of([service_port("ns", "web", "10.96.0.50", &["10.88.1.2"])]);
        proxier.sync(&one).expect("sync");
        assert_eq!(proxier.sync(&one).expect("sync"), SyncKind::Full);
        let tx = recorder.transactions().pop().expect("tx");
        assert!(!tx.contains("delete table"));
        assert!(tx.contains("flush chain ip skiff-proxy services"));
    }

    #[test]
    fn iptables_mode_goes_through_the_same_sync_machinery() {
        use crate::iptables::Iptables;
        let recorder = Recorder::default();
        let mut proxier =
            Proxier::with_backend(Iptables, RenderConfig::default(), recorder.clone());
        let one = model_of([service_port("ns", "web", "10.96.0.50", &["10.88.1.2"])]);
        let two = model_of([service_port(
            "ns",
            "web",
            "10.96.0.50",
            &["10.88.1.2", "10.88.2.2"],
        )]);
        assert_eq!(proxier.sync(&one).expect("sync"), SyncKind::Full);
        assert_eq!(proxier.sync(&two).expect("sync"), SyncKind::Partial);
        assert_eq!(proxier.sync(&two).expect("sync"), SyncKind::Noop);
        let txs = recorder.transactions();
        assert_eq!(txs.len(), 2);
        assert!(txs[0].contains(":KUBE-MARK-MASQ - [0:0]"));
        assert!(
            !txs[1].contains("KUBE-MARK-MASQ - [0:0]") && !txs[1].contains("*filter"),
            "{}",
            txs[1]
        );
        assert_eq!(recorder.full_syncs(), 1);

        recorder.fail_next();
        assert!(proxier.sync(&one).is_err());
        assert_eq!(proxier.sync(&one).expect("sync"), SyncKind::Full);
        assert_eq!(
            recorder.full_syncs(),
            2,
            "announced again after the failure"
        );
    }
}
