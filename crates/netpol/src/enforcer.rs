//! One sync: model → rendered table → diff against what the kernel was last given →
//! one transaction with only the differences (the whole table at start, after a failure
//! and hourly). Holds the only state that survives between syncs.

use std::time::{Duration, Instant};

use skiff_proxy::Apply;

use crate::metrics::{Metrics, SyncLabels};
use crate::model::Model;
use crate::nftables::{full_transaction, render, update_transaction, Ruleset};
use crate::Error;

/// How often the table is rewritten even when nothing changed, to repair edits made
/// behind the enforcer's back.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// The whole table was replaced, in one transaction.
    Full,
    /// Only what changed was written, in one transaction.
    Partial,
    /// Nothing changed; nft was not run.
    Noop,
}

impl SyncKind {
    fn label(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
            SyncKind::Noop => "noop",
        }
    }
}

pub struct Enforcer<A: Apply> {
    applier: A,
    /// What the kernel holds, as far as we know; `None` at start and after a failure,
    /// which makes the next sync replace the whole table.
    applied: Option<Ruleset>,
    last_full: Option<Instant>,
    resync_period: Duration,
    metrics: Option<Metrics>,
}

impl<A: Apply> Enforcer<A> {
    pub fn new(applier: A) -> Enforcer<A> {
        Enforcer {
            applier,
            applied: None,
            last_full: None,
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

    /// The ruleset last applied successfully.
    pub fn applied(&self) -> Option<&Ruleset> {
        self.applied.as_ref()
    }

    /// Brings the kernel to the state `model` describes.
    pub fn sync(&mut self, model: &Model) -> Result<SyncKind, Error> {
        let start = Instant::now();
        let ruleset = render(model);
        let rewrite = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.resync_period);
        let (kind, tx) = match &self.applied {
            Some(old) if !rewrite => match update_transaction(old, &ruleset) {
                Some(tx) => (SyncKind::Partial, tx),
                None => {
                    self.record(SyncKind::Noop, true, start);
                    return Ok(SyncKind::Noop);
                }
            },
            _ => (SyncKind::Full, full_transaction(&ruleset)),
        };
        let result = self.applier.apply(&tx).map_err(Error::from);
        self.record(kind, result.is_ok(), start);
        match result {
            Ok(()) => {
                if let Some(m) = &self.metrics {
                    m.policies.set(model.policies as i64);
                    m.isolated_pods.set(model.pods.len() as i64);
                    m.rules.set(ruleset.rule_count() as i64);
                    m.elements.set(ruleset.element_count() as i64);
                }
                if kind == SyncKind::Full {
                    self.last_full = Some(Instant::now());
                }
                self.applied = Some(ruleset);
                Ok(kind)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use crate::model::tests::{pod, policy};
    use serde_json::json;
    use skiff_proxy::Recorder;

    fn model(policies: &[k8s_openapi::api::networking::v1::NetworkPolicy]) -> Model {
        let pods = [
            pod("a", "web", json!({"app": "web"}), "10.88.0.11", "node1"),
            pod(
                "a",
                "client",
                json!({"app": "client"}),
                "10.88.0.12",
                "node1",
            ),
        ];
        build(policies, &pods, [], "node1")
    }

    #[test]
    fn full_then_partial_then_noop_and_full_again_after_failure() {
        let recorder = Recorder::default();
        let mut enforcer = Enforcer::new(recorder.clone());
        let deny = policy(
            "a",
            "deny",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}),
        );
        let allow = policy(
            "a",
            "allow",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {}}]}]}),
        );
        assert_eq!(enforcer.sync(&model(&[])).expect("sync"), SyncKind::Full);
        assert_eq!(
            enforcer
                .sync(&model(std::slice::from_ref(&deny)))
                .expect("sync"),
            SyncKind::Partial
        );
        assert_eq!(
            enforcer
                .sync(&model(&[deny.clone(), allow.clone()]))
                .expect("sync"),
            SyncKind::Partial
        );
        assert_eq!(
            enforcer.sync(&model(&[deny.clone(), allow])).expect("sync"),
            SyncKind::Noop
        );
        assert_eq!(enforcer.sync(&model(&[])).expect("sync"), SyncKind::Partial);
        let txs = recorder.transactions();
        assert_eq!(txs.len(), 4);
        assert!(txs[0].contains("delete table inet skiff-netpol"));
        assert!(txs[1..].iter().all(|tx| !tx.contains("delete table")));
        assert!(
            txs[2].contains("add set inet skiff-netpol peers-"),
            "{}",
            txs[2]
        );
        assert!(
            txs[2].contains("flush chain inet skiff-netpol ingress-"),
            "{}",
            txs[2]
        );
        assert!(
            txs[3].contains("delete set inet skiff-netpol peers-"),
            "{}",
            txs[3]
        );

        recorder.fail_next();
        assert!(enforcer.sync(&model(std::slice::from_ref(&deny))).is_err());
        assert!(enforcer.applied().is_none());
        assert_eq!(
            enforcer.sync(&model(&[deny])).expect("sync"),
            SyncKind::Full
        );
    }

    #[test]
    fn periodic_full_rewrite() {
        let recorder = Recorder::default();
        let mut enforcer = Enforcer::new(recorder.clone()).with_resync_period(Duration::ZERO);
        enforcer.sync(&model(&[])).expect("sync");
        assert_eq!(enforcer.sync(&model(&[])).expect("sync"), SyncKind::Full);
        assert_eq!(recorder.transactions().len(), 2);
    }
}
