//! The Pod Security Standards as upstream's PodSecurity admission
//! (`k8s.io/pod-security-admission`) evaluates them: the `privileged`, `baseline` and
//! `restricted` levels, each at a policy version (`latest` or `v1.X`), chosen for a
//! namespace by its `pod-security.kubernetes.io/<mode>[-version]` labels.
//!
//! Everything works on a pod's JSON (`metadata` and `spec`), so the same checks serve
//! pods and the pod templates of workload resources. Messages are upstream's, word for
//! word: clients and tests compare them.

mod checks;

use std::fmt;

use serde_json::{Map, Value};

pub use checks::{evaluate, Violation};

/// The newest policy version this crate knows; `latest` and newer versions mean it.
pub const LATEST_MINOR: u32 = 37;

pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
pub const AUDIT_LABEL: &str = "pod-security.kubernetes.io/audit";
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
pub const WARN_LABEL: &str = "pod-security.kubernetes.io/warn";
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// A Pod Security Standard, from least to most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a label's value could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("must be one of privileged, baseline, restricted")]
    Level,
    #[error("must be \"latest\" or \"v1.x\"")]
    Version,
}

impl std::str::FromStr for Level {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Level, ParseError> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(ParseError::Level),
        }
    }
}

/// A policy version: `latest`, or `v1.X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Version(Option<u32>);

impl Version {
    pub const LATEST: Version = Version(None);

    pub fn minor(minor: u32) -> Version {
        Version(Some(minor))
    }

    /// The version whose checks apply: `latest` and anything newer than this crate
    /// knows are [`LATEST_MINOR`].
    pub fn effective_minor(self) -> u32 {
        self.0.map_or(LATEST_MINOR, |m| m.min(LATEST_MINOR))
    }
}

impl std::str::FromStr for Version {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Version, ParseError> {
        if s == "latest" {
            return Ok(Version::LATEST);
        }
        let digits = s.strip_prefix("v1.").ok_or(ParseError::Version)?;
        let canonical = digits == "0" || (!digits.starts_with('0') && !digits.is_empty());
        if !canonical || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::Version);
        }
        digits
            .parse()
            .map(Version::minor)
            .map_err(|_| ParseError::Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("latest"),
            Some(minor) => write!(f, "v1.{minor}"),
        }
    }
}

/// A level at a version, shown as upstream does: `restricted:latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelVersion {
    pub level: Level,
    pub version: Version,
}

impl LevelVersion {
    pub const PRIVILEGED: LevelVersion = LevelVersion {
        level: Level::Privileged,
        version: Version::LATEST,
    };
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

/// What a namespace asks for in each mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

impl Default for Policy {
    /// Upstream's default without configuration: privileged everywhere.
    fn default() -> Self {
        Policy {
            enforce: LevelVersion::PRIVILEGED,
            audit: LevelVersion::PRIVILEGED,
            warn: LevelVersion::PRIVILEGED,
        }
    }
}

impl Policy {
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }
}

/// A label that could not be parsed: the label, its value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    pub label: &'static str,
    pub value: String,
    pub error: ParseError,
}

/// The policy a namespace's labels ask for, on top of `defaults`, as upstream reads it:
/// a bad enforce level enforces `restricted` (fail closed), a bad audit or warn level
/// means `privileged` (fail open), a bad version means `latest`; without a warn label,
/// warnings follow a stricter enforce level (and its version).
pub fn policy_from_labels(
    labels: Option<&Map<String, Value>>,
    defaults: &Policy,
) -> (Policy, Vec<LabelError>) {
    let mut policy = *defaults;
    let mut errors = Vec::new();
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        return (policy, errors);
    };
    let label = |name: &str| labels.get(name).map(|v| v.as_str().unwrap_or(""));
    let parse_level = |name: &'static str, on_error: Level, errors: &mut Vec<LabelError>| {
        label(name).map(|value| {
            value.parse::<Level>().map_err(|error| {
                errors.push(LabelError {
                    label: name,
                    value: value.to_string(),
                    error,
                });
                on_error
            })
        })
    };
    let enforce_level = parse_level(ENFORCE_LABEL, Level::Restricted, &mut errors);
    let audit_level = parse_level(AUDIT_LABEL, Level::Privileged, &mut errors);
    let warn_level = parse_level(WARN_LABEL, Level::Privileged, &mut errors);
    let mut parse_version = |name: &'static str| {
        label(name).map(|value| {
            value.parse::<Version>().unwrap_or_else(|error| {
                errors.push(LabelError {
                    label: name,
                    value: value.to_string(),
                    error,
                });
                Version::LATEST
            })
        })
    };
    let enforce_version = parse_version(ENFORCE_VERSION_LABEL);
    let audit_version = parse_version(AUDIT_VERSION_LABEL);
    let warn_version = parse_version(WARN_VERSION_LABEL);
    // Upstream reports errors label by label in this order.
    let order = [
        ENFORCE_LABEL,
        ENFORCE_VERSION_LABEL,
        AUDIT_LABEL,
        AUDIT_VERSION_LABEL,
        WARN_LABEL,
        WARN_VERSION_LABEL,
    ];
    errors.sort_by_key(|e| order.iter().position(|l| *l == e.label));

    if let Some(level) = enforce_level {
        policy.enforce.level = level.unwrap_or_else(|l| l);
    }
    if let Some(version) = enforce_version {
        policy.enforce.version = version;
    }
    if let Some(level) = audit_level {
        policy.audit.level = level.unwrap_or_else(|l| l);
    }
    if let Some(version) = audit_version {
        policy.audit.version = version;
    }
    if let Some(level) = warn_level {
        policy.warn.level = level.unwrap_or_else(|l| l);
    }
    if let Some(version) = warn_version {
        policy.warn.version = version;
    }
    let enforce_parsed = matches!(enforce_level, Some(Ok(_)));
    if warn_level.is_none() && enforce_parsed && policy.enforce.level > policy.warn.level {
        policy.warn.level = policy.enforce.level;
        if warn_version.is_none() {
            policy.warn.version = policy.enforce.version;
        }
    }
    (policy, errors)
}

/// Upstream's aggregate message: each failed check's reason, with its detail in
/// parentheses, joined by `, `.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reasons alone, joined by `, ` (what the namespace check groups pods by).
pub fn reasons(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(labels: Value) -> (Policy, Vec<LabelError>) {
        policy_from_labels(labels.as_object(), &Policy::default())
    }

    #[test]
    fn versions_parse_as_upstream() {
        assert_eq!("latest".parse(), Ok(Version::LATEST));
        assert_eq!("v1.0".parse(), Ok(Version::minor(0)));
        assert_eq!("v1.25".parse(), Ok(Version::minor(25)));
        for bad in ["v1.025", "v1.", "1.25", "v2.1", "v1.x", "v1.-1", ""] {
            assert_eq!(bad.parse::<Version>(), Err(ParseError::Version), "{bad}");
        }
        assert_eq!(Version::minor(99).effective_minor(), LATEST_MINOR);
        assert_eq!(Version::minor(22).to_string(), "v1.22");
    }

    #[test]
    fn labels_make_a_policy() {
        let (p, errors) = policy(json!({ENFORCE_LABEL: "restricted"}));
        assert!(errors.is_empty());
        assert_eq!(p.enforce.to_string(), "restricted:latest");
        // Warn follows a stricter enforce level when not set itself.
        assert_eq!(p.warn.to_string(), "restricted:latest");
        assert_eq!(p.audit.to_string(), "privileged:latest");

        let (p, _) = policy(
            json!({ENFORCE_LABEL: "baseline", ENFORCE_VERSION_LABEL: "v1.23", WARN_VERSION_LABEL: "v1.30"}),
        );
        assert_eq!(p.warn.to_string(), "baseline:v1.30");
        let (p, _) = policy(json!({ENFORCE_LABEL: "baseline", WARN_LABEL: "privileged"}));
        assert_eq!(p.warn.level, Level::Privileged);
        assert!(policy(json!({})).0.fully_privileged());
    }

    #[test]
    fn bad_labels_fail_closed_for_enforce_and_open_otherwise() {
        let (p, errors) =
            policy(json!({ENFORCE_LABEL: "strict", WARN_LABEL: "nope", AUDIT_VERSION_LABEL: "v2"}));
        assert_eq!(p.enforce.level, Level::Restricted);
        assert_eq!(p.warn.level, Level::Privileged);
        assert_eq!(p.audit.version, Version::LATEST);
        let labels: Vec<_> = errors.iter().map(|e| e.label).collect();
        assert_eq!(labels, [ENFORCE_LABEL, AUDIT_VERSION_LABEL, WARN_LABEL]);
        assert_eq!(
            errors[0].error.to_string(),
            "must be one of privileged, baseline, restricted"
        );
    }
}
