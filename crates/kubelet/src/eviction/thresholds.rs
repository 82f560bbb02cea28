//! Eviction signals and thresholds, parsed from the kubelet's flags as upstream's
//! `ParseThresholdConfig` reads them: `--eviction-hard` and `--eviction-soft`
//! statements (`signal<quantity` or `signal<percent%`), each soft one with its
//! `--eviction-soft-grace-period` (`signal=duration`), and `--eviction-minimum-reclaim`
//! (`signal=quantity|percent%`) for any signal.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

/// The node condition a signal's met threshold sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PidPressure => "PIDPressure",
        }
    }
}

impl Signal {
    const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    fn parse(name: &str) -> Result<Signal, String> {
        Signal::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| format!("unsupported eviction signal {name}"))
    }

    /// The resource a pod is evicted to reclaim, as upstream names it in messages.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::PidAvailable => Condition::PidPressure,
            _ => Condition::DiskPressure,
        }
    }

    /// Whether the signal's amounts are bytes (written with binary suffixes) rather than
    /// counts (inodes, process IDs: decimal ones), as upstream builds its quantities.
    fn in_bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::NodeFsAvailable | Signal::ImageFsAvailable
        )
    }

    /// An amount of this signal written as upstream's quantities print.
    pub fn quantity(self, value: u64) -> String {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        if !self.in_bytes() {
            return skiff_quantity::format_milli(value.saturating_mul(1000));
        }
        // Upstream's binary quantities fall back to decimal below 1Ki, and to plain
        // digits where no binary suffix divides them.
        if value < 1024 || value % 1024 == 0 {
            skiff_quantity::format_binary(value)
        } else {
            value.to_string()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Quantity(u64),
    Percent(f64),
}

impl Amount {
    fn parse(text: &str, statement: &str) -> Result<Amount, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let percent: f64 = percent
                .parse()
                .map_err(|_| format!("invalid percentage in eviction statement {statement:?}"))?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(format!(
                    "eviction percentage threshold {statement:?} must be >= 0% and <= 100%"
                ));
            }
            return Ok(Amount::Percent(percent));
        }
        let value = skiff_quantity::parse_value(text)
            .map_err(|e| format!("eviction statement {statement:?}: {e}"))?;
        let value = u64::try_from(value)
            .map_err(|_| format!("eviction threshold {statement:?} must be positive"))?;
        Ok(Amount::Quantity(value))
    }

    /// The amount, given what the signal's resource has in all.
    pub fn of(&self, capacity: u64) -> u64 {
        match *self {
            Amount::Quantity(q) => q,
            Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    fn is_zero(&self) -> bool {
        match *self {
            Amount::Quantity(q) => q == 0,
            Amount::Percent(p) => p == 0.0,
        }
    }
}

/// One signal's reading: what is available of how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// One threshold: a hard one acts as soon as it is met, a soft one once it has been met
/// for its grace period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub amount: Amount,
    /// `None` for a hard threshold.
    pub grace_period: Option<Duration>,
    /// Once acted on, the threshold counts as met until this much more is available.
    pub min_reclaim: Option<Amount>,
}

impl Threshold {
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_none()
    }

    /// The amount below which the threshold is met.
    pub fn limit(&self, capacity: u64) -> u64 {
        self.amount.of(capacity)
    }

    /// Whether `observed` meets the threshold; with `enforce_min_reclaim`, whether it
    /// has not yet reclaimed its minimum beyond it.
    pub fn met(&self, observed: &HashMap<Signal, Observation>, enforce_min_reclaim: bool) -> bool {
        observed.get(&self.signal).is_some_and(|o| {
            let reclaim = match (enforce_min_reclaim, self.min_reclaim) {
                (true, Some(min)) => min.of(o.capacity),
                _ => 0,
            };
            o.available < self.limit(o.capacity).saturating_add(reclaim)
        })
    }
}

/// The kubelet's eviction flags, as given.
#[derive(Debug, Clone, Default)]
pub struct ThresholdFlags<'a> {
    pub hard: &'a str,
    pub soft: &'a str,
    pub soft_grace_period: &'a str,
    pub minimum_reclaim: &'a str,
}

/// Every threshold the flags configure, hard ones first.
pub fn parse(flags: &ThresholdFlags) -> Result<Vec<Threshold>, String> {
    let grace_periods = statements(flags.soft_grace_period, '=', |text, statement| {
        skiff_quantity::parse_duration(text.trim())
            .map_err(|e| format!("eviction grace period {statement:?}: {e}"))
    })?;
    let minimum_reclaims = statements(flags.minimum_reclaim, '=', Amount::parse)?;
    let mut thresholds = Vec::new();
    for (text, soft) in [(flags.hard, false), (flags.soft, true)] {
        for (signal, amount) in statements(text, '<', Amount::parse)? {
            // Upstream ignores a threshold of nothing: it could never be met.
            if amount.is_zero() {
                continue;
            }
            let grace_period = if soft {
                let period = grace_periods
                    .iter()
                    .find(|(s, _)| *s == signal)
                    .map(|g| g.1);
                Some(period.ok_or_else(|| {
                    format!(
                        "grace period must be specified for the soft eviction threshold {}",
                        signal.name()
                    )
                })?)
            } else {
                None
            };
            thresholds.push(Threshold {
                signal,
                amount,
                grace_period,
                min_reclaim: minimum_reclaims
                    .iter()
                    .find(|(s, _)| *s == signal)
                    .map(|m| m.1),
            });
        }
    }
    Ok(thresholds)
}

/// Comma-separated `signal<operator>value` statements, each signal at most once.
fn statements<T>(
    text: &str,
    operator: char,
    value: impl Fn(&str, &str) -> Result<T, String>,
) -> Result<Vec<(Signal, T)>, String> {
    let mut parsed: Vec<(Signal, T)> = Vec::new();
    for statement in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = statement.split_once(operator).ok_or_else(|| {
            format!("invalid eviction statement {statement:?}: expected signal{operator}value")
        })?;
        let signal = Signal::parse(name.trim())?;
        if parsed.iter().any(|(s, _)| *s == signal) {
            return Err(format!(
                "found duplicate eviction threshold for signal {}",
                signal.name()
            ));
        }
        parsed.push((signal, value(rest, statement)?));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(
        hard: &'a str,
        soft: &'a str,
        grace: &'a str,
        reclaim: &'a str,
    ) -> ThresholdFlags<'a> {
        ThresholdFlags {
            hard,
            soft,
            soft_grace_period: grace,
            minimum_reclaim: reclaim,
        }
    }

    #[test]
    fn hard_and_soft_thresholds_parse_as_upstream_writes_them() {
        let parsed = parse(&flags(super::super::DEFAULT_HARD, "", "", "")).unwrap_or_default();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[0].signal, Signal::MemoryAvailable);
        assert_eq!(parsed[0].amount, Amount::Quantity(100 << 20));
        assert!(parsed[0].is_hard());
        assert_eq!(parsed[1].amount, Amount::Percent(10.0));

        let parsed = parse(&flags(
            "memory.available<100Mi",
            "memory.available<1Gi, pid.available<10%",
            "memory.available=1m30s,pid.available=5s",
            "memory.available=500Mi,nodefs.available=5%",
        ))
        .unwrap_or_default();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].min_reclaim, Some(Amount::Quantity(500 << 20)));
        assert_eq!(parsed[1].grace_period, Some(Duration::from_secs(90)));
        assert_eq!(parsed[1].min_reclaim, Some(Amount::Quantity(500 << 20)));
        assert_eq!(parsed[2].signal, Signal::PidAvailable);
        assert_eq!(parsed[2].grace_period, Some(Duration::from_secs(5)));
        assert_eq!(parsed[2].min_reclaim, None);
    }

    #[test]
    fn bad_statements_are_refused_and_empty_thresholds_ignored() {
        let refused = |f: ThresholdFlags| parse(&f).err().unwrap_or_default();
        assert_eq!(
            refused(flags("memory.free<1Gi", "", "", "")),
            "unsupported eviction signal memory.free"
        );
        assert!(
            refused(flags("memory.available>1Gi", "", "", "")).contains("expected signal<value")
        );
        assert!(refused(flags("nodefs.available<120%", "", "", "")).contains("<= 100%"));
        assert!(refused(flags("memory.available<-1Gi", "", "", "")).contains("must be positive"));
        assert!(refused(flags(
            "memory.available<1Gi,memory.available<2Gi",
            "",
            "",
            ""
        ))
        .contains("duplicate"));
        assert_eq!(
            refused(flags("", "memory.available<1Gi", "", "")),
            "grace period must be specified for the soft eviction threshold memory.available"
        );
        assert!(refused(flags("", "", "memory.available=soon", "")).contains("grace period"));
        assert_eq!(
            parse(&flags("memory.available<0,nodefs.available<0%", "", "", "")),
            Ok(vec![])
        );
    }

    #[test]
    fn minimum_reclaim_keeps_a_threshold_met_until_it_is_reclaimed() {
        let threshold = parse(&flags(
            "memory.available<100",
            "",
            "",
            "memory.available=50",
        ))
        .unwrap_or_default()[0];
        let at = |available| {
            HashMap::from([(
                Signal::MemoryAvailable,
                Observation {
                    available,
                    capacity: 1000,
                },
            )])
        };
        assert!(threshold.met(&at(99), false));
        assert!(!threshold.met(&at(120), false));
        assert!(threshold.met(&at(120), true));
        assert!(!threshold.met(&at(150), true));
    }

    #[test]
    fn quantities_print_as_upstreams() {
        let memory = Signal::MemoryAvailable;
        assert_eq!(memory.quantity(100 << 20), "100Mi");
        assert_eq!(memory.quantity(51200 * 1024 + 1024), "51201Ki");
        assert_eq!(memory.quantity(1_500_001), "1500001");
        assert_eq!(memory.quantity(1000), "1k");
        assert_eq!(Signal::PidAvailable.quantity(32768), "32768");
        assert_eq!(Signal::PidAvailable.quantity(2000), "2k");
        assert_eq!(Signal::NodeFsInodesFree.quantity(0), "0");
    }
}
