//! Where a tenant's component comes from, as the operator writes it: a
//! built-in guest (`builtin:NAME`), a file, or an OCI artifact
//! (`oci://REGISTRY/REPOSITORY:TAG` or `@sha256:DIGEST`). One parser and one
//! printer for every place a component is named: the manifest, a swap
//! request, the command line, `/status`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// How a built-in guest is named where a component is expected.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// How a component in an OCI registry is named.
pub const OCI_PREFIX: &str = "oci://";

/// Where a tenant's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ComponentSource {
    /// A guest compiled into the host (`builtin:seed`).
    Builtin(String),
    /// A file (relative paths are resolved against the manifest's directory).
    File(PathBuf),
    /// An artifact in an OCI registry (see [`OciRef`]).
    Oci(OciRef),
}

impl ComponentSource {
    /// Reads `spec`; a path that is not absolute is taken relative to
    /// `base` (the manifest's directory, or the working directory).
    pub fn parse(spec: &str, base: &std::path::Path) -> Result<Self, String> {
        if let Some(name) = spec.strip_prefix(BUILTIN_PREFIX) {
            return Ok(ComponentSource::Builtin(name.to_owned()));
        }
        if spec.starts_with(OCI_PREFIX) {
            return spec.parse().map(ComponentSource::Oci);
        }
        if spec.is_empty() {
            return Err("names no component".into());
        }
        let path = base.join(spec);
        // Absolute, so the file watcher knows its directory.
        Ok(ComponentSource::File(
            std::path::absolute(&path).unwrap_or(path),
        ))
    }
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentSource::Builtin(name) => write!(f, "{BUILTIN_PREFIX}{name}"),
            ComponentSource::File(path) => write!(f, "{}", path.display()),
            ComponentSource::Oci(reference) => reference.fmt(f),
        }
    }
}

/// A component in an OCI registry: `oci://REGISTRY/REPOSITORY` with a
/// `:TAG`, an `@sha256:DIGEST`, or both (the digest then decides what
/// runs; the tag only says where it came from). Once loaded, a tagged
/// reference carries the digest the tag resolved to, so what runs is
/// always named by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciRef {
    /// `host[:port]`, as the registry is reached.
    pub registry: String,
    /// Slash-separated lowercase path components.
    pub repository: String,
    /// The tag, if named.
    pub tag: Option<String>,
    /// `sha256:` and 64 lowercase hex digits: the manifest's digest.
    pub digest: Option<String>,
}

impl OciRef {
    /// The same artifact, pinned to the manifest `digest`.
    pub fn pinned(&self, digest: &str) -> OciRef {
        OciRef {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// `registry/repository`, as allow-lists match it.
    pub fn location(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether the registry is reached on this machine's loopback, where
    /// plain HTTP is allowed.
    pub fn is_loopback(&self) -> bool {
        is_loopback_registry(&self.registry)
    }
}

/// Whether `registry` (`host[:port]`) names this machine's loopback.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{OCI_PREFIX}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for OciRef {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let rest = spec
            .strip_prefix(OCI_PREFIX)
            .ok_or_else(|| format!("{spec:?} does not start with {OCI_PREFIX}"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{spec:?}: expected {OCI_PREFIX}REGISTRY/REPOSITORY:TAG"))?;
        // A tag follows the last path component's colon.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        if !valid_registry(registry) {
            return Err(format!(
                "{spec:?}: {registry:?} is not a registry host[:port]"
            ));
        }
        if !valid_repository(repository) {
            return Err(format!(
                "{spec:?}: {repository:?} is not a repository (lowercase letters, digits and . _ - between slashes)"
            ));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(format!(
                "{spec:?}: {tag:?} is not a tag (up to 128 letters, digits, . _ -)"
            ));
        }
        if let Some(digest) = digest
            && !valid_digest(digest)
        {
            return Err(format!(
                "{spec:?}: {digest:?} is not a digest (sha256: and 64 lowercase hex digits)"
            ));
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "{spec:?}: name a :TAG or an @sha256:DIGEST (there is no implicit latest)"
            ));
        }
        Ok(OciRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }
}

/// `host[:port]`: a DNS name or an IP address (IPv6 in brackets).
fn valid_registry(registry: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (ip.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        };
        (valid_host(host), port)
    };
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// A DNS name (or an IPv4 address, which is one syntactically).
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The distribution specification's repository name: path components of
/// `[a-z0-9]+` joined by `.`, `_`, `__` or `-` runs.
fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|component| {
            let bytes = component.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes.iter().all(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `sha256:` and 64 lowercase hex digits (the only algorithm accepted).
pub fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4f3c1b1e0d6a9e2b8c7d5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c";

    #[test]
    fn an_oci_reference_reads_back_as_written() {
        for spec in [
            "oci://127.0.0.1:5000/guests/echo:v1".to_owned(),
            format!("oci://ghcr.io/acme/tcp/echo@{DIGEST}"),
            format!("oci://[::1]:5000/echo:1.2.3@{DIGEST}"),
            "oci://registry.example.com/a.b_c-d/e__f:latest".to_owned(),
        ] {
            let parsed: OciRef = spec.parse().unwrap();
            assert_eq!(parsed.to_string(), spec);
        }
        let r: OciRef = "oci://localhost:5000/x/y:v2".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "x/y", Some("v2"))
        );
        assert!(r.is_loopback());
    }

    #[test]
    fn a_malformed_oci_reference_is_refused_with_its_reason() {
        for (spec, why) in [
            ("oci://reg/echo", "name a :TAG"),
            ("oci://echo:v1", "REGISTRY/REPOSITORY"),
            ("oci://reg/Echo:v1", "is not a repository"),
            ("oci://reg/echo:-v1", "is not a tag"),
            ("oci://reg/echo@sha256:abc", "is not a digest"),
            ("oci://reg/echo@md5:0123", "is not a digest"),
            ("oci://reg:99999/echo:v1", "is not a registry"),
            ("oci://re g/echo:v1", "is not a registry"),
            ("oci://reg//echo:v1", "is not a repository"),
        ] {
            let err = spec.parse::<OciRef>().unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[test]
    fn every_source_prints_as_it_is_parsed() {
        let base = std::path::Path::new("/srv");
        for spec in ["builtin:echo", "/srv/guests/a.wasm", "oci://reg.io/a/b:v1"] {
            let source = ComponentSource::parse(spec, base).unwrap();
            assert_eq!(source.to_string(), spec);
        }
        assert_eq!(
            ComponentSource::parse("a.wasm", base).unwrap(),
            ComponentSource::File("/srv/a.wasm".into())
        );
    }

    #[test]
    fn loopback_registries_are_told_apart_from_remote_ones() {
        for (registry, loopback) in [
            ("127.0.0.1:5000", true),
            ("localhost", true),
            ("[::1]:5000", true),
            ("10.0.0.1:5000", false),
            ("ghcr.io", false),
            ("localhost.example.com", false),
        ] {
            assert_eq!(is_loopback_registry(registry), loopback, "{registry}");
        }
    }
}
