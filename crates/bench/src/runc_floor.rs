//! The floor under every runtime built on runc: `runc run --detach` of a ready bundle
//! (busybox's `sleep` on a read-only root, runc's default namespaces), timed until runc
//! returns with the process running. No image, overlay, CNI network or cgroup hierarchy
//! is set up, so a CRI runtime's start can only come close to it from above.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::stats::{ms, percentile, Results};

/// Start times by bare runc, one at a time and many at once.
pub struct RuncFloor {
    one_at_a_time: Vec<Duration>,
    at_once: Vec<Duration>,
}

/// A bundle and runc state of their own under a temp dir; every container started is
/// deleted when this is dropped.
struct Bundle {
    dir: tempfile::TempDir,
    runc: PathBuf,
}

impl Bundle {
    fn prepare() -> Result<Bundle> {
        let runc = skiff_runtime::server::find_binary(Path::new("runc"))?;
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-runc")
            .tempdir()
            .context("temp dir for the runc bundle")?;
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).context("creating the bundle's rootfs")?;
        // The tests' prerequisite: Debian's busybox-static, which needs no libraries.
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .context("copying /bin/busybox (install busybox-static) into the bundle")?;
        let spec = std::process::Command::new(&runc)
            .arg("spec")
            .arg("--bundle")
            .arg(dir.path())
            .output()
            .context("running runc spec")?;
        if !spec.status.success() {
            bail!("runc spec: {}", String::from_utf8_lossy(&spec.stderr));
        }
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).context("reading runc's default config.json")?,
        )
        .context("parsing runc's default config.json")?;
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["/bin/busybox", "sleep", "3600"]);
        config["root"] = json!({"path": "rootfs", "readonly": true});
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
            .context("writing the bundle's config.json")?;
        Ok(Bundle { dir, runc })
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts container `id`; the time until `runc run --detach` returned.
    async fn run(&self, id: &str) -> Result<Duration> {
        // A detached container keeps runc's stdio: a pipe would never close, so runc's
        // complaints go to a file.
        let errors = self.dir.path().join(format!("{id}.err"));
        let started = Instant::now();
        let status = tokio::process::Command::new(&self.runc)
            .arg("--root")
            .arg(self.state())
            .args(["run", "--detach", "--bundle"])
            .arg(self.dir.path())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors).context("runc's error file")?)
            .status()
            .await
            .context("running runc run")?;
        let took = started.elapsed();
        if !status.success() {
            let said = std::fs::read_to_string(&errors).unwrap_or_default();
            bail!("runc run {id}: {said}");
        }
        Ok(took)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let Ok(containers) = std::fs::read_dir(self.state()) else {
            return;
        };
        for container in containers.flatten() {
            let _ = std::process::Command::new(&self.runc)
                .arg("--root")
                .arg(self.state())
                .args(["delete", "--force"])
                .arg(container.file_name())
                .output();
        }
    }
}

/// `count` containers one at a time, then `parallel` at once.
pub async fn measure(count: usize, parallel: usize) -> Result<RuncFloor> {
    let bundle = Bundle::prepare()?;
    let mut one_at_a_time = Vec::with_capacity(count);
    for i in 0..count {
        one_at_a_time.push(bundle.run(&format!("floor-{i}")).await?);
    }
    let at_once = futures::future::join_all((0..parallel).map(|i| {
        let bundle = &bundle;
        async move { bundle.run(&format!("parallel-{i}")).await }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    Ok(RuncFloor {
        one_at_a_time,
        at_once,
    })
}

impl RuncFloor {
    /// The floor's own numbers.
    pub fn results(&self) -> Results {
        let mut results = Results::default();
        results.latency("runc run --detach, one at a time", &self.one_at_a_time);
        results.latency(
            &format!("runc run --detach, {} at once, each", self.at_once.len()),
            &self.at_once,
        );
        results
    }

    /// How far a runtime's CRI floor (already in `results`) sits above runc's: its p50
    /// over runc's, one at a time and at once.
    pub fn compare(&self, results: &mut Results) {
        let rows = [
            (
                "CRI floor: sandbox + container started p50".to_string(),
                &self.one_at_a_time,
                "CRI floor over bare runc, one at a time, p50",
            ),
            (
                format!(
                    "CRI floor: {} sandboxes + containers at once, each p50",
                    self.at_once.len()
                ),
                &self.at_once,
                "CRI floor over bare runc, at once, p50",
            ),
        ];
        for (cri_row, runc_samples, ratio_row) in rows {
            let runc = ms(percentile(runc_samples, 50.0));
            if let Some(cri) = results.get(&cri_row).map(|m| m.value) {
                if runc > 0.0 {
                    results.push(ratio_row, "x", cri / runc);
                }
            }
        }
    }
}
