//! Registry configuration in k3s's `registries.yaml` shape:
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//! configs:
//!   "127.0.0.1:5000":
//!     auth: { username: u, password: p }
//!     tls: { insecure_skip_verify: true }
//! ```
//!
//! A pull of `docker.io/library/busybox` tries each mirror endpoint in order,
//! then the registry itself. `http://` endpoints and loopback registries speak
//! plain HTTP; everything else HTTPS.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostConfig {
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Auth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Tls {
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One place to try a pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as the HTTP authority.
    pub host: String,
    pub plain_http: bool,
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

impl RegistriesConfig {
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        let data = std::fs::read_to_string(path).path_ctx("read registries config", path)?;
        serde_yaml::from_str(&data)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
    }

    /// Endpoints to try for `registry`, in order.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let mirrors = self
            .mirrors
            .get(registry)
            .or_else(|| self.mirrors.get("*"))
            .map(|m| m.endpoint.clone())
            .unwrap_or_default();
        for e in mirrors {
            let (plain, rest) = if let Some(r) = e.strip_prefix("http://") {
                (true, r)
            } else if let Some(r) = e.strip_prefix("https://") {
                (false, r)
            } else {
                (is_loopback(&e), e.as_str())
            };
            let host = rest.trim_end_matches('/').split('/').next().unwrap_or(rest);
            out.push(Endpoint {
                host: host.to_string(),
                plain_http: plain || is_loopback(host),
            });
        }
        let upstream = if registry == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        if !out.iter().any(|e| e.host == upstream) {
            out.push(Endpoint {
                plain_http: is_loopback(&upstream),
                host: upstream,
            });
        }
        out
    }

    pub fn host_config(&self, host: &str) -> Option<&HostConfig> {
        self.configs.get(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_then_upstream() {
        let c: RegistriesConfig = serde_yaml::from_str(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\", \"https://mirror.example\"]\n",
        )
        .expect("yaml");
        assert_eq!(
            c.endpoints("docker.io"),
            vec![
                Endpoint {
                    host: "127.0.0.1:5000".into(),
                    plain_http: true
                },
                Endpoint {
                    host: "mirror.example".into(),
                    plain_http: false
                },
                Endpoint {
                    host: "registry-1.docker.io".into(),
                    plain_http: false
                },
            ]
        );
        assert_eq!(
            c.endpoints("localhost:5000"),
            vec![Endpoint {
                host: "localhost:5000".into(),
                plain_http: true
            }]
        );
    }
}
