//! A local image registry for tests that pull: Debian's `docker-registry`
//! (distribution/registry) on a free loopback port, filled with `skopeo` from the test
//! image archive, open to all or behind HTTP basic auth. Loopback registries are
//! reached over plain HTTP, by Skiff's runtime and containerd alike.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The one login of a registry started with [`LocalRegistry::start_with_basic_auth`].
pub const USER: &str = "skiff";
pub const PASSWORD: &str = "pull-secret";
/// [`PASSWORD`] as bcrypt (all the registry's htpasswd takes), made once with
/// `perl -e 'print crypt("pull-secret", q($2b$05$SkiffTestRegistrySalt.u))'` so that
/// no tool is needed to make it.
const PASSWORD_BCRYPT: &str = "$2b$05$SkiffTestRegistrySalt.BFYaEdeDvUile/JVLmX//v8yG9FPfDu";

/// A running registry; killed on drop.
pub struct LocalRegistry {
    /// `127.0.0.1:PORT`, the registry's host in image references.
    pub addr: String,
    /// The login every request needs, if the registry wants one.
    pub credentials: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// An empty registry, listening.
    pub fn start() -> LocalRegistry {
        LocalRegistry::start_with(None)
    }

    /// An empty registry that answers only requests with HTTP basic auth as
    /// [`USER`]/[`PASSWORD`] (`401` and `WWW-Authenticate: Basic` otherwise).
    pub fn start_with_basic_auth() -> LocalRegistry {
        LocalRegistry::start_with(Some((USER, PASSWORD_BCRYPT)))
    }

    fn start_with(login: Option<(&str, &str)>) -> LocalRegistry {
        for (bin, pkg) in [("docker-registry", "docker-registry"), ("skopeo", "skopeo")] {
            assert!(
                skiff_runtime::server::find_binary(Path::new(bin)).is_ok(),
                "{bin} not found: install the Debian package '{pkg}' (apt-get install {pkg})"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", crate::free_port());
        let cfg = dir.path().join("config.yml");
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, bcrypt)) = login {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{bcrypt}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&cfg, config).expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("start docker-registry");
        let registry = LocalRegistry {
            addr,
            credentials: login.map(|(user, _)| (user.to_string(), PASSWORD.to_string())),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// A registry holding the test archive's busybox as `library/busybox:latest`.
    pub fn start_with_busybox() -> LocalRegistry {
        let registry = LocalRegistry::start();
        registry.push(
            &crate::busybox_archive(),
            "docker.io/library/busybox:latest",
            "library/busybox:latest",
        );
        registry
    }

    /// Copies the image `name` of the OCI archive `archive` to `repository` (with its
    /// tag) here; returns the reference to pull it by.
    pub fn push(&self, archive: &Path, name: &str, repository: &str) -> String {
        let reference = format!("{}/{repository}", self.addr);
        let mut skopeo = Command::new("skopeo");
        skopeo.args(["copy", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.credentials {
            skopeo.arg(format!("--dest-creds={user}:{password}"));
        }
        let out = skopeo
            .arg(format!("oci-archive:{}:{name}", archive.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo push of {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
