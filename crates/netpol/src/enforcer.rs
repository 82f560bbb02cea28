//! One sync: model → rendered table → applied when it differs from what the kernel was
//! last given. Holds the only state that survives between syncs.

use std::time::{Duration, Instant};

use skiff_proxy::Apply;

use crate::metrics::{Metrics, SyncLabels};
use crate::model::Model;
use crate::nftables::{full_transaction, render};
use crate::Error;

/// How often the table is rewritten even when nothing changed, to repair edits made
/// behind the enforcer's back.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// The whole table was replaced, in one transaction.
    Full,
    /// Nothing changed; nft was not run.
    Noop,
}

impl SyncKind {
    fn label(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Noop => "noop",
        }
    }
}

pub struct Enforcer<A: Apply> {
    applier: A,
    /// The transaction the kernel last accepted; `None` at start and after a failure.
    applied: Option<String>,
    last_write: Option<Instant>,
    resync_period: Duration,
    metrics: Option<Metrics>,
}

impl<A: Apply> Enforcer<A> {
    pub fn new(applier: A) -> Enforcer<A> {
        Enforcer {
            applier,
            applied: None,
            last_write: None,
            resync_period: RESYNC_PERIOD,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_resync_period(mut self, period: Duration) -> Self {
        self.resync_period = period;
        self
    }

    /// The transaction last applied successfully.
    pub fn applied(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    /// Brings the kernel to the state `model` describes.
    pub fn sync(&mut self, model: &Model) -> Result<SyncKind, Error> {
        let start = Instant::now();
        let ruleset = render(model);
        let tx = full_transaction(&ruleset);
        let fresh = self
            .last_write
            .is_some_and(|t| t.elapsed() < self.resync_period);
        if fresh && self.applied.as_deref() == Some(tx.as_str()) {
            self.record(SyncKind::Noop, true, start);
            return Ok(SyncKind::Noop);
        }
        let result = self.applier.apply(&tx).map_err(Error::from);
        self.record(SyncKind::Full, result.is_ok(), start);
        match result {
            Ok(()) => {
                if let Some(m) = &self.metrics {
                    m.policies.set(model.policies as i64);
                    m.isolated_pods.set(model.pods.len() as i64);
                    m.rules.set(ruleset.rule_count() as i64);
                    m.elements.set(ruleset.element_count() as i64);
                }
                self.applied = Some(tx);
                self.last_write = Some(Instant::now());
                Ok(SyncKind::Full)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }

    fn record(&self, kind: SyncKind, ok: bool, start: Instant) {
        if let Some(m) = &self.metrics {
            m.syncs
                .get_or_create(&SyncLabels {
                    kind: kind.label().into(),
                    result: if ok { "ok" } else { "error" }.into(),
                })
                .inc();
            m.sync_duration.observe(start.elapsed().as_secs_f64());
        }
    }
}
