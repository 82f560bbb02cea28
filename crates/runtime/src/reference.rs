//! Image reference parsing and normalisation, as upstream's
//! `github.com/distribution/reference` does it: `busybox` is
//! `docker.io/library/busybox:latest`.

use crate::error::{Error, Result};

pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `name`; a name without tag nor digest gets `:latest`.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument(format!("image reference {name:?}: {why}"));
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match name.split_once('@') {
            Some((r, d)) => {
                if !d.contains(':') {
                    return Err(bad("malformed digest"));
                }
                (r, Some(d.to_string()))
            }
            None => (name, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        let (registry, repository) = match path.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), path.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() || repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository must be lowercase and non-empty"));
        }
        if matches!(&tag, Some(t) if t.is_empty()) {
            return Err(bad("empty tag"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for the given manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        Reference::parse(s)
            .map(|r| r.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn normalises_like_upstream() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(n("index.docker.io/foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(
            n("registry.k8s.io/e2e-test-images/busybox:1.36.1-1"),
            "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
        );
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(n("127.0.0.1:5000/x/y:t"), "127.0.0.1:5000/x/y:t");
        assert_eq!(
            n("busybox@sha256:abcd"),
            "docker.io/library/busybox@sha256:abcd"
        );
        assert!(n("Busybox").contains("lowercase"));
    }
}
