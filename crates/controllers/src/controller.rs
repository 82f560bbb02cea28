//! The worker loop every controller shares: take a key from the queue, reconcile it,
//! requeue it with back-off on failure or after the delay the reconcile asked for.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;

use crate::error::Result;
use crate::queue::WorkQueue;

/// The key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a key into namespace (`None` when cluster-scoped) and name.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// A controller as upstream's are: keys in a work queue, and an idempotent reconcile of
/// each key that says when, if at all, to look at it again.
pub trait Reconcile: Send + Sync + 'static {
    fn queue(&self) -> &Arc<WorkQueue>;
    fn reconcile(&self, key: &str) -> impl Future<Output = Result<Option<Duration>>> + Send;
}

/// Runs `workers` workers of `controller` until its queue shuts down.
pub async fn run<C: Reconcile>(controller: Arc<C>, workers: usize) {
    let queue = controller.queue().clone();
    run_workers(queue, workers, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(&key).await }
    })
    .await;
}

/// Runs `workers` workers over `queue` until it shuts down. `reconcile` returns when to
/// look at the key again, if it should be (e.g. when a pod becomes available).
pub async fn run_workers<F, Fut>(queue: Arc<WorkQueue>, workers: usize, reconcile: F)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>>> + Send + 'static,
{
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                let started = std::time::Instant::now();
                let outcome = reconcile(key.clone()).await;
                match outcome {
                    Ok(requeue) => {
                        queue.forget(&key);
                        if let Some(after) = requeue {
                            queue.add_after(key.clone(), after);
                        }
                        tracing::trace!(queue = queue.name(), %key, elapsed = ?started.elapsed(), "synced");
                    }
                    Err(error) => {
                        tracing::info!(queue = queue.name(), %key, %error, "sync failed; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(split_key("ns/a"), (Some("ns"), "a"));
        assert_eq!(split_key("a"), (None, "a"));
    }
}
