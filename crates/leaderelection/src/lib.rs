//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` package does it: the holder renews `renewTime` every retry period;
//! others take the lease over once they have seen it unchanged for a whole lease
//! duration (measured on their own clock, so clock skew between machines does not
//! matter). Writes are compare-and-swap on `resourceVersion`, so two candidates cannot
//! both win.
//!
//! The scheduler and the controller manager both use it, each with its own Lease in
//! `kube-system`.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LeaderError {
    #[error("lost the lease {0}: could not renew it within the renew deadline")]
    Lost(String),
}

/// A candidate's identity, as upstream forms it: unique per process on this host.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}_{}_{nanos:08x}", std::process::id())
}

/// Upstream's defaults: 15s lease, 10s renew deadline, 2s retry period.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: String) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A candidate for one lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The last lease record seen and when it was first seen in that state.
    observed: Option<(LeaseSpec, Instant)>,
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    fn our_spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let ours =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(&self.config.identity);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now_micro())
            },
            renew_time: Some(now_micro()),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew; `Ok(true)` if we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let lease = match self.api.get_opt(&self.config.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.our_spec(None)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observed = created.spec.map(|s| (s, Instant::now()));
                        Ok(true)
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| {
            seen.holder_identity != spec.holder_identity || seen.renew_time != spec.renew_time
        });
        if changed {
            self.observed = Some((spec.clone(), Instant::now()));
        }
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.config.identity;
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.config.lease_duration);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= duration);
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let mut updated = lease;
        updated.spec = Some(self.our_spec(Some(&spec)));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                self.observed = written.spec.map(|s| (s, Instant::now()));
                Ok(true)
            }
            // Someone else wrote first: they hold it (or renewed) this round.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Blocks until this candidate holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired lease");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "lease acquire attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews until a renewal fails for longer than the renew deadline.
    pub async fn keep_renewing(&mut self) -> LeaderError {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => return LeaderError::Lost(self.config.name.clone()),
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            if last_ok.elapsed() > self.config.renew_deadline {
                return LeaderError::Lost(self.config.name.clone());
            }
        }
    }

    /// Releases the lease on an orderly stop, so a successor need not wait it out.
    pub async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await {
            let Some(spec) = lease.spec.as_mut() else {
                return;
            };
            if spec.holder_identity.as_deref() != Some(&self.config.identity) {
                return;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now_micro());
            let _ = self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await;
        }
    }
}

/// Runs `work` only while holding the lease. Returns when `work` ends or the lease is
/// lost (then `work` is dropped, as upstream's components exit on losing leadership).
pub async fn run_as_leader<F, T>(
    client: Client,
    config: LeaseConfig,
    work: F,
) -> Result<T, LeaderError>
where
    F: Future<Output = T>,
{
    let mut elector = LeaderElector::new(client, config);
    elector.acquire().await;
    let outcome = {
        let renew = elector.keep_renewing();
        tokio::pin!(renew);
        tokio::pin!(work);
        tokio::select! {
            lost = &mut renew => Err(lost),
            done = &mut work => Ok(done),
        }
    };
    if outcome.is_ok() {
        elector.release().await;
    }
    outcome
}
