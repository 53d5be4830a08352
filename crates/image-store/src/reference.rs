//! Docker image references: `busybox`, `host:5000/a/b:tag`, `name@sha256:...`.
//!
//! The grammar is the one of the Docker distribution project: a reference is a name, an optional `:tag` and an
//! optional `@digest`. A first path component with a `.` or a `:`, or exactly `localhost`, is a registry host;
//! otherwise the registry is `docker.io`, where one-component names live under `library/`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry that references without a host name refer to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;

/// A normalised image reference. It always has a tag or a digest (a bare name gets `latest`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not a valid reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

fn err(input: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn is_domain(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

/// `alpha-numeric (separator alpha-numeric)*` with separators `.`, `_`, `__` or one or more `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(err(input, "empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| err(input, e.to_string()))?),
            ),
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(err(input, format!("invalid tag {t:?}")));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err(input, "empty name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder)) if is_domain(first) => {
                if !valid_domain(first) {
                    return Err(err(input, format!("invalid registry host {first:?}")));
                }
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if path.len() > MAX_NAME_LEN {
            return Err(err(input, "repository name longer than 255 characters"));
        }
        for c in path.split('/') {
            if !valid_path_component(c) {
                let hint = if c.bytes().any(|b| b.is_ascii_uppercase()) {
                    " (repository names must be lowercase)"
                } else {
                    ""
                };
                return Err(err(
                    input,
                    format!("invalid repository name component {c:?}{hint}"),
                ));
            }
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
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
}

impl Reference {
    /// Builds a reference from parts that are already valid (a registry host, a repository path).
    pub fn new(registry: &str, repository: &str, tag: Option<&str>, digest: Option<Digest>) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        }
    }

    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if there is one, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short name people type: `busybox` for `docker.io/library/busybox`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to a digest (the tag dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(p("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("busybox:1.36").to_string(), "docker.io/library/busybox:1.36");
        assert_eq!(p("user/app").to_string(), "docker.io/user/app:latest");
        assert_eq!(
            p("docker.io/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            p("index.docker.io/library/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(p("busybox").familiar_name(), "busybox");
        assert_eq!(p("user/app").familiar_name(), "user/app");
    }

    #[test]
    fn hosts_and_ports() {
        let r = p("127.0.0.1:5000/a/b:v1");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/a/b");
        let r = p("localhost/x");
        assert_eq!(r.registry(), "localhost");
        assert_eq!(p("localhost:5000/x").tag(), Some("latest"));
    }

    #[test]
    fn digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("busybox@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_ref(), d);
        let r = p(&format!("busybox:1@{d}"));
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.manifest_ref(), d);
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "/a",
            "a/",
            "busybox@sha256:123",
            "host:99999/a",
            "a_-b",
            "-a",
            "a..b",
            &"a".repeat(256),
            "bad host.com/a",
            "busybox:tag with space",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn separators() {
        for good in ["a.b", "a_b", "a__b", "a---b", "a-b/c.d_e"] {
            assert!(good.parse::<Reference>().is_ok(), "{good}");
        }
    }
}
