//! The kubelet's events about pods and their containers, with upstream's reasons and
//! messages (`Pulling`, `Pulled`, `Created`, `Started`, `Killing`, `BackOff`, `Failed`,
//! `Unhealthy`, `Evicted`), so that `kubectl describe pod` tells what the node did.
//! A container's events name it in `fieldPath` (`spec.containers{name}`), as upstream's
//! do. Writing one never holds up the pod's worker: each goes out on a task of its own.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;

use crate::spec::ContainerKind;

/// Where a container sits in its pod's spec, as events name it.
pub fn field_path(kind: &ContainerKind, name: &str) -> String {
    let list = match kind {
        ContainerKind::App => "containers",
        ContainerKind::Init => "initContainers",
        ContainerKind::Ephemeral { .. } => "ephemeralContainers",
    };
    format!("spec.{list}{{{name}}}")
}

/// Records an event about `pod`, or about one of its containers (`container`: its kind
/// and name).
pub fn record(
    events: &skiff_events::Events,
    pod: &Pod,
    container: Option<(&ContainerKind, &str)>,
    warning: bool,
    reason: &str,
    note: String,
) {
    let mut regarding = pod.object_ref(&());
    regarding.field_path = container.map(|(kind, name)| field_path(kind, name));
    let (events, reason) = (events.clone(), reason.to_string());
    tokio::spawn(async move { events.about(regarding, warning, &reason, note).await });
}

/// A duration as Go prints one truncated to milliseconds (`1.234s`, `523ms`), as the
/// `Pulled` event reports pull times.
pub fn millis(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (minutes, rest) = (ms / 60_000, ms % 60_000);
    let seconds = format!("{}.{:03}", rest / 1000, rest % 1000);
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_named_by_their_place_in_the_spec() {
        assert_eq!(
            field_path(&ContainerKind::App, "web"),
            "spec.containers{web}"
        );
        assert_eq!(
            field_path(&ContainerKind::Init, "setup"),
            "spec.initContainers{setup}"
        );
        assert_eq!(
            field_path(&ContainerKind::Ephemeral { target: None }, "debugger"),
            "spec.ephemeralContainers{debugger}"
        );
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(millis(Duration::from_micros(523_400)), "523ms");
        assert_eq!(millis(Duration::from_millis(1234)), "1.234s");
        assert_eq!(millis(Duration::from_millis(1200)), "1.2s");
        assert_eq!(millis(Duration::from_secs(2)), "2s");
        assert_eq!(millis(Duration::from_millis(61_500)), "1m1.5s");
        assert_eq!(millis(Duration::from_secs(60)), "1m0s");
    }
}
