//! Image garbage collection, as upstream's kubelet does it: every period the image
//! filesystem's usage is read (the filesystem the runtime's `ImageFsInfo` names); at or
//! above `--image-gc-high-threshold` percent, unused images are removed, least recently
//! used first, until usage is back at `--image-gc-low-threshold`. An image is in use
//! while any container (running or not) was made from it or mounts it as an image
//! volume (as the container's CRI status reports its mounts); one this kubelet first saw
//! less than `--minimum-image-ttl-duration` ago, or one the runtime pins, stays.
//! Last use is this kubelet's own memory, as upstream's: a restarted kubelet counts
//! every image as used when it starts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use skiff_runtime::proto;

use crate::cri::Cri;
use crate::error::{Error, Result};

/// How often the collector looks (upstream's fixed 5 minutes).
pub const PERIOD: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub struct ImageGcPolicy {
    /// Usage (percent of the image filesystem) at which collection starts; 100 turns
    /// it off.
    pub high_threshold_percent: u8,
    /// Usage collection brings the filesystem down to.
    pub low_threshold_percent: u8,
    /// Images first seen more recently than this are kept.
    pub minimum_age: Duration,
}

impl ImageGcPolicy {
    /// Upstream's checks of the thresholds.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.high_threshold_percent > 100 || self.low_threshold_percent > 100 {
            return Err(
                "--image-gc-high-threshold and --image-gc-low-threshold must be between 0 and 100"
                    .into(),
            );
        }
        if self.low_threshold_percent > self.high_threshold_percent {
            return Err(format!(
                "--image-gc-low-threshold ({}) must not exceed --image-gc-high-threshold ({})",
                self.low_threshold_percent, self.high_threshold_percent
            ));
        }
        Ok(())
    }

    /// The bytes to free on a filesystem of `capacity` with `available` free: none
    /// below the high threshold, else down to the low one.
    fn bytes_to_free(&self, capacity: u64, available: u64) -> u64 {
        if capacity == 0 || self.high_threshold_percent >= 100 {
            return 0;
        }
        let used_percent = 100 - available.saturating_mul(100) / capacity;
        if used_percent < u64::from(self.high_threshold_percent) {
            return 0;
        }
        let allowed_free =
            u128::from(capacity) * u128::from(100 - self.low_threshold_percent) / 100;
        u64::try_from(allowed_free)
            .unwrap_or(u64::MAX)
            .saturating_sub(available)
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    last_used: Instant,
}

/// What one collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    pub wanted: u64,
    pub freed: u64,
}

/// The collector: the runtime and what it has seen of each image.
pub struct ImageGc {
    cri: Cri,
    policy: ImageGcPolicy,
    seen: HashMap<String, Seen>,
}

/// Whether a container made from `image`, or mounting it, exists (by ID, digest or
/// name: an image volume's image is whatever the kubelet named it by).
fn in_use(image: &proto::Image, used: &HashSet<String>) -> bool {
    used.contains(&image.id)
        || image
            .repo_digests
            .iter()
            .chain(&image.repo_tags)
            .any(|d| used.contains(d))
}

/// The images `container` holds on to: the one it was made from and those it mounts
/// as image volumes (which upstream's image manager counts as in use too).
fn images_of(container: &proto::Container, status: &proto::ContainerStatus) -> Vec<String> {
    let mounted = status
        .mounts
        .iter()
        .filter_map(|m| m.image.as_ref())
        .flat_map(|i| [i.image.clone(), i.user_specified_image.clone()]);
    [container.image_id.clone(), container.image_ref.clone()]
        .into_iter()
        .chain(mounted)
        .filter(|id| !id.is_empty())
        .collect()
}

impl ImageGc {
    pub fn new(cri: Cri, policy: ImageGcPolicy) -> ImageGc {
        ImageGc {
            cri,
            policy,
            seen: HashMap::new(),
        }
    }

    /// Notes new images, refreshes the last use of those in use, forgets removed ones.
    fn detect(&mut self, images: &[proto::Image], used: &HashSet<String>, now: Instant) {
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.seen.retain(|id, _| present.contains(id.as_str()));
        for image in images {
            let seen = self.seen.entry(image.id.clone()).or_insert(Seen {
                first: now,
                last_used: now,
            });
            if in_use(image, used) {
                seen.last_used = now;
            }
        }
    }

    /// The images that may go, least recently used first (then first seen first).
    fn candidates<'a>(
        &self,
        images: &'a [proto::Image],
        used: &HashSet<String>,
        now: Instant,
    ) -> Vec<&'a proto::Image> {
        let mut candidates: Vec<(&proto::Image, Seen)> = images
            .iter()
            .filter(|i| !i.pinned && !in_use(i, used))
            .filter_map(|i| Some((i, *self.seen.get(&i.id)?)))
            .filter(|(_, seen)| {
                now.saturating_duration_since(seen.first) >= self.policy.minimum_age
            })
            .collect();
        candidates.sort_by_key(|(_, seen)| (seen.last_used, seen.first));
        candidates.into_iter().map(|(image, _)| image).collect()
    }

    /// Reads the images and those containers use, noting what is new and what is used.
    /// Image volumes are only in each container's status, so every container's is read;
    /// one that cannot be read fails the survey rather than free what it may mount.
    async fn survey(&mut self, now: Instant) -> Result<(Vec<proto::Image>, HashSet<String>)> {
        let images = self.cri.images().await?;
        let mut used = HashSet::new();
        for container in self.cri.all_containers().await? {
            let status = match self.cri.container_status(&container.id).await {
                Ok(status) => status,
                // Gone meanwhile: holds nothing any more.
                Err(e) if e.is_cri_not_found() => continue,
                Err(e) => return Err(e),
            };
            used.extend(images_of(&container, &status));
        }
        self.detect(&images, &used, now);
        Ok((images, used))
    }

    /// Removes candidates, least recently used first, until `wanted` bytes are freed;
    /// returns the bytes freed.
    async fn remove(
        &mut self,
        images: &[proto::Image],
        used: &HashSet<String>,
        now: Instant,
        wanted: u64,
    ) -> u64 {
        let mut freed = 0;
        let candidates: Vec<proto::Image> = self
            .candidates(images, used, now)
            .into_iter()
            .cloned()
            .collect();
        for image in candidates {
            if freed >= wanted {
                break;
            }
            tracing::info!(image = %image.id, tags = ?image.repo_tags, size = image.size, "removing unused image");
            match self.cri.remove_image(&image.id).await {
                Ok(()) => {
                    freed += image.size;
                    self.seen.remove(&image.id);
                }
                Err(error) => tracing::warn!(image = %image.id, %error, "removing image failed"),
            }
        }
        freed
    }

    /// One collection: reads usage, removes what it must.
    pub async fn collect(&mut self) -> Result<Collected> {
        let now = Instant::now();
        let (images, used) = self.survey(now).await?;
        let mountpoint = self.cri.image_fs_mountpoint().await?;
        let (space, _) = crate::eviction::filesystem(Path::new(&mountpoint))
            .ok_or_else(|| Error::Config(format!("statfs {mountpoint} failed")))?;
        let wanted = self.policy.bytes_to_free(space.capacity, space.available);
        let mut collected = Collected { wanted, freed: 0 };
        if wanted > 0 {
            collected.freed = self.remove(&images, &used, now, wanted).await;
        }
        Ok(collected)
    }

    /// Removes every image that may go, whatever the thresholds (the eviction
    /// manager's reclaim under disk pressure); returns the bytes freed.
    pub async fn remove_all_unused(&mut self) -> Result<u64> {
        let now = Instant::now();
        let (images, used) = self.survey(now).await?;
        Ok(self.remove(&images, &used, now, u64::MAX).await)
    }
}

/// The collector, shared by its periodic run and the eviction manager.
pub type SharedImageGc = std::sync::Arc<tokio::sync::Mutex<ImageGc>>;

/// Collects every `period`.
pub async fn run(collector: SharedImageGc, period: Duration) {
    loop {
        let collected = collector.lock().await.collect().await;
        match collected {
            Ok(c) if c.freed < c.wanted => tracing::warn!(
                wanted = c.wanted,
                freed = c.freed,
                "image garbage collection could not free the required amount: every other image is in use, pinned or too new"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "image garbage collection failed"),
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(high: u8, low: u8, minimum_age: u64) -> ImageGcPolicy {
        ImageGcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            minimum_age: Duration::from_secs(minimum_age),
        }
    }

    fn image(id: &str, size: u64) -> proto::Image {
        proto::Image {
            id: id.into(),
            size,
            ..Default::default()
        }
    }

    #[test]
    fn frees_only_above_the_high_threshold_and_down_to_the_low_one() {
        let p = policy(85, 80, 0);
        // 84 % used: nothing.
        assert_eq!(p.bytes_to_free(1000, 160), 0);
        // 90 % used: down to 80 %, so 100 bytes.
        assert_eq!(p.bytes_to_free(1000, 100), 100);
        // Off at 100.
        assert_eq!(policy(100, 80, 0).bytes_to_free(1000, 0), 0);
        assert!(policy(80, 85, 0).validate().is_err());
        assert!(policy(101, 85, 0).validate().is_err());
        assert!(policy(85, 80, 0).validate().is_ok());
    }

    #[test]
    fn image_volumes_count_as_in_use() {
        let container = proto::Container {
            image_ref: "sha256:own".into(),
            ..Default::default()
        };
        let volume = |image: &str, named: &str| proto::Mount {
            container_path: "/volume".into(),
            image: Some(proto::ImageSpec {
                image: image.into(),
                user_specified_image: named.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = proto::ContainerStatus {
            mounts: vec![
                proto::Mount {
                    container_path: "/data".into(),
                    host_path: "/var/lib/data".into(),
                    ..Default::default()
                },
                volume("sha256:mounted", "registry.example/kitten:1.7"),
                volume("registry.example/by-name:1", ""),
            ],
            ..Default::default()
        };
        let used: HashSet<String> = images_of(&container, &status).into_iter().collect();
        let with_tag = |id: &str, tag: &str| proto::Image {
            repo_tags: vec![tag.into()],
            ..image(id, 10)
        };
        for kept in [
            image("sha256:own", 10),
            image("sha256:mounted", 10),
            with_tag("sha256:named", "registry.example/by-name:1"),
        ] {
            assert!(in_use(&kept, &used), "{}", kept.id);
        }
        assert!(!in_use(&image("sha256:other", 10), &used));
        // A runtime that reports no mounts (containerd 1.6): only its own image.
        let no_mounts = proto::ContainerStatus::default();
        let used: HashSet<String> = images_of(&container, &no_mounts).into_iter().collect();
        assert!(!in_use(&image("sha256:mounted", 10), &used));
    }

    #[tokio::test]
    async fn least_recently_used_unused_old_enough_images_go_first() {
        let cri = Cri::connect("/nonexistent.sock").unwrap_or_else(|e| panic!("{e}"));
        let mut gc = ImageGc::new(cri, policy(85, 80, 60));
        let start = Instant::now();
        let images = vec![
            image("old-unused", 10),
            image("recently-used", 10),
            image("in-use", 10),
            proto::Image {
                pinned: true,
                ..image("pinned", 10)
            },
        ];
        // All seen at start; "recently-used" in use until 100 s.
        let used_then: HashSet<String> = ["recently-used".to_string(), "in-use".to_string()].into();
        gc.detect(&images, &used_then, start);
        gc.detect(&images, &used_then, start + Duration::from_secs(100));
        let used_now: HashSet<String> = ["in-use".to_string()].into();
        let now = start + Duration::from_secs(200);
        gc.detect(&images, &used_now, now);
        let order: Vec<&str> = gc
            .candidates(&images, &used_now, now)
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(order, ["old-unused", "recently-used"]);
        // An image first seen 30 s ago is too new at a 60 s minimum age.
        let newcomer = vec![image("newcomer", 10)];
        gc.detect(&newcomer, &used_now, now - Duration::from_secs(30));
        assert!(gc.candidates(&newcomer, &used_now, now).is_empty());
        // Removed images are forgotten.
        assert!(!gc.seen.contains_key("old-unused"));
    }
}
