//! Components from OCI registries: what `oci://REGISTRY/REPOSITORY:TAG` or
//! `@sha256:DIGEST` means, pulled over the distribution protocol and
//! trusted no further than it is checked. The ecosystem's crates carry the
//! formats: `oci-client`'s OCI types (manifests, descriptors), `http-auth`
//! for the registry's auth challenge, `docker_credential` for credentials.
//! The three requests of a pull (the token, the manifest, the component)
//! are made here, with `reqwest`, because every body must be read under a
//! bound: `oci-client`'s own client reads a token response, a manifest and
//! an error body whole, so a hostile registry (or the token service it
//! names) could make the host hold whatever it sends.
//!
//! - the artifact must be the Wasm OCI layout `wkg oci push`, `wash push`
//!   and `spin registry push` write: an OCI image manifest whose config is
//!   `application/vnd.wasm.config.v0+json` and whose one layer is
//!   `application/wasm`;
//! - the manifest's digest is checked when pinned, every blob's always; a
//!   blob is streamed into a buffer bounded by its declared size and by
//!   `max_component_size`, so a lying registry costs at most that much
//!   memory; every request has a deadline, and transient failures are
//!   retried with backoff;
//! - what was pulled is kept in the content-addressed [`store::Store`],
//!   never pulled again, and is what a host restarted with its registry
//!   down starts from.
//!
//! Credentials come from a Docker `config.json` and are never logged.
//!
//! Its parts: this file fetches (the store first, retries, the checks),
//! `auth` authorises with the registry, `transfer` makes the bounded
//! requests, [`store`] keeps what was pulled.

mod auth;
pub mod store;
mod transfer;

use crate::config::ConfigError;
use crate::config::model::RegistrySettings;
use crate::config::source::OciRef;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::{Store, sha256_digest};
use tracing::{info, warn};

/// An OCI image manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The Wasm OCI layout's config media type.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The Wasm OCI layout's layer (and artifact) media type.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// The largest manifest read: a Wasm artifact's is under 1 KiB.
const MAX_MANIFEST_SIZE: usize = 64 * 1024;

/// How the host names itself to registries.
const USER_AGENT: &str = concat!("tcphost/", env!("CARGO_PKG_VERSION"));

/// How hard a fetch tries, and what it may fall back to.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// Attempts while the registry fails transiently (with backoff).
    pub attempts: u32,
    /// Whether a tag the registry cannot resolve now may run as the digest
    /// it last resolved to, if stored.
    pub stale_ok: bool,
}

impl FetchPolicy {
    /// A start: one attempt (the tenant is retried in the background, and
    /// a slow registry delays the start by one deadline at most); a tag
    /// falls back to its last digest.
    pub const START: FetchPolicy = FetchPolicy {
        attempts: 1,
        stale_ok: true,
    };
    /// A reload: retried; a tag whose registry is down keeps what runs.
    pub const RELOAD: FetchPolicy = FetchPolicy {
        attempts: 4,
        stale_ok: true,
    };
    /// A swap asked for: retried, and fresh (a swap to a tag means the tag
    /// as it is now).
    pub const SWAP: FetchPolicy = FetchPolicy {
        attempts: 4,
        stale_ok: false,
    };
}

/// The first retry's delay; each next one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Why a component could not be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry answered, and what it answered cannot be run: another
    /// digest than the pinned one, bytes that do not hash to their digest,
    /// too large, not a Wasm component artifact, not found, not allowed.
    /// Retrying changes nothing.
    #[error("{0}")]
    Refused(String),
    /// The registry could not be reached or did not answer in time, even
    /// after retries: a later attempt may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// A component pulled (or found in the store).
#[derive(Debug)]
pub struct Fetched {
    /// The reference, pinned to the manifest digest that was pulled.
    pub reference: OciRef,
    /// The component's bytes, checked against the layer's digest.
    pub bytes: Vec<u8>,
}

/// Pull counters, for the metrics.
#[derive(Debug, Default)]
pub struct PullStats {
    /// Components pulled from a registry.
    pub pulled: AtomicU64,
    /// Components found in the store (nothing pulled).
    pub stored: AtomicU64,
    /// Pulls that failed (after their retries).
    pub failed: AtomicU64,
    /// Bytes of components pulled from registries.
    pub bytes: AtomicU64,
    /// Time spent pulling, in microseconds.
    pub micros: AtomicU64,
}

/// Pulls components as [`RegistrySettings`] say.
pub struct Puller {
    /// TLS with the system's roots (and `registry_ca_file`), deadlines on
    /// connecting and on each read; redirects followed (a blob is often
    /// served from elsewhere), credentials dropped on a redirect to
    /// another host.
    http: reqwest::Client,
    settings: RegistrySettings,
    store: Option<Store>,
    stats: PullStats,
}

impl Puller {
    /// A puller with `settings`, keeping what it pulls in the store in the
    /// directory given, up to the size given (none: every start pulls
    /// again).
    pub fn new(
        settings: RegistrySettings,
        store: Option<(&std::path::Path, u64)>,
    ) -> anyhow::Result<Self> {
        // rustls with ring, installed once for the process (a second call
        // finds it installed, which is fine). Deprecated for want of
        // post-quantum key exchange, which a registry pull does not need;
        // ring builds without the C toolchain aws-lc needs.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest::Client::builder()
            .read_timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(USER_AGENT);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                ConfigError(format!(
                    "host.registry_ca_file: cannot read {}: {e}",
                    ca.display()
                ))
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ConfigError(format!("host.registry_ca_file {}: {e}", ca.display())))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| anyhow::anyhow!("cannot configure the registry client: {e}"))?;
        let store = match store {
            Some((dir, max_bytes)) => match Store::open(dir, max_bytes) {
                Ok(store) => Some(store),
                Err(e) => {
                    warn!(dir = %dir.display(), "no store for pulled components (each start pulls again): {e}");
                    None
                }
            },
            None => None,
        };
        Ok(Puller {
            http,
            settings,
            store,
            stats: PullStats::default(),
        })
    }

    /// The pull counters.
    pub fn stats(&self) -> &PullStats {
        &self.stats
    }

    /// The settings pulls follow.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The component `reference` names: from the store when its digest is
    /// there, else pulled, as `policy` says (see [`FetchPolicy`]).
    pub async fn fetch(
        &self,
        reference: &OciRef,
        policy: FetchPolicy,
    ) -> Result<Fetched, PullError> {
        let started = Instant::now();
        let result = self.fetch_uncounted(reference, policy).await;
        match &result {
            Ok((_, true)) => {
                self.stats.stored.fetch_add(1, Ordering::Relaxed);
            }
            Ok((fetched, false)) => {
                self.stats.pulled.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes
                    .fetch_add(fetched.bytes.len() as u64, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.stats.micros.fetch_add(micros, Ordering::Relaxed);
                info!(
                    component = %fetched.reference,
                    bytes = fetched.bytes.len(),
                    ms = started.elapsed().as_millis(),
                    "pulled component"
                );
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                warn!(component = %reference, "cannot pull component: {e}");
            }
        }
        result.map(|(fetched, _)| fetched)
    }

    /// [`Puller::fetch`], saying whether the store served it.
    async fn fetch_uncounted(
        &self,
        reference: &OciRef,
        policy: FetchPolicy,
    ) -> Result<(Fetched, bool), PullError> {
        if let Some(digest) = &reference.digest
            && let Some(bytes) = self.stored(digest)
        {
            return Ok((
                Fetched {
                    reference: reference.clone(),
                    bytes,
                },
                true,
            ));
        }
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        let mut error = loop {
            let pulled = tokio::time::timeout(self.settings.timeout, self.pull(reference)).await;
            let error = match pulled {
                Ok(Ok(fetched)) => return Ok((fetched, false)),
                Ok(Err(PullError::Refused(why))) => return Err(PullError::Refused(why)),
                Ok(Err(PullError::Unavailable(why))) => why,
                Err(_) => format!(
                    "the registry did not answer within {:?} (host.registry_timeout)",
                    self.settings.timeout
                ),
            };
            if attempt >= policy.attempts {
                break error;
            }
            warn!(component = %reference, attempt, "pull failed, retrying in {backoff:?}: {error}");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        };
        if policy.attempts > 1 {
            error = format!("{error} (tried {attempt} times)");
        }
        if policy.stale_ok
            && reference.digest.is_none()
            && let Some(store) = &self.store
            && let Some(digest) = store.tag(&tagged(reference))
            && let Some(bytes) = self.stored(&digest)
        {
            let reference = reference.pinned(&digest);
            warn!(
                component = %reference,
                "registry unavailable ({error}): starting from the digest this tag last resolved to"
            );
            return Ok((Fetched { reference, bytes }, true));
        }
        Err(PullError::Unavailable(error))
    }

    /// The component whose manifest `digest` and layer are both stored.
    fn stored(&self, digest: &str) -> Option<Vec<u8>> {
        let store = self.store.as_ref()?;
        let manifest = store.get(digest)?;
        let layer = wasm_layer(&manifest, self.settings.max_component_size).ok()?;
        store.get(&layer.digest)
    }

    /// One attempt: authorisation, the manifest, then the component.
    async fn pull(&self, wanted: &OciRef) -> Result<Fetched, PullError> {
        let authorization = self.authorize(wanted).await?;
        let manifest = self.manifest(wanted, &authorization).await?;
        let digest = sha256_digest(&manifest);
        if let Some(pinned) = &wanted.digest
            && *pinned != digest
        {
            return Err(PullError::Refused(format!(
                "the registry served a manifest whose digest is {digest}, not the {pinned} asked for"
            )));
        }
        let layer =
            wasm_layer(&manifest, self.settings.max_component_size).map_err(PullError::Refused)?;
        let bytes = match self.store.as_ref().and_then(|s| s.get(&layer.digest)) {
            Some(bytes) => bytes,
            None => self.blob(wanted, &layer, &authorization).await?,
        };
        if let Some(store) = &self.store {
            let kept = store
                .put(&layer.digest, &bytes)
                .and_then(|()| store.put(&digest, &manifest))
                .and_then(|()| match (&wanted.tag, &wanted.digest) {
                    (Some(_), None) => store.set_tag(&tagged(wanted), &digest),
                    _ => Ok(()),
                });
            match kept {
                Ok(()) => store.prune(&[&layer.digest, &digest]),
                Err(e) => {
                    warn!(component = %wanted, "cannot keep the pulled component in the store: {e}");
                }
            }
        }
        Ok(Fetched {
            reference: wanted.pinned(&digest),
            bytes,
        })
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn default_docker_config() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// How a tag is recorded in the store: `registry/repository:tag`.
fn tagged(reference: &OciRef) -> String {
    format!(
        "{}:{}",
        reference.location(),
        reference.tag.as_deref().unwrap_or_default()
    )
}

/// The one `application/wasm` layer of a Wasm OCI artifact's `manifest`,
/// refused if the manifest is anything else or the layer larger than
/// `max_size`.
fn wasm_layer(manifest: &[u8], max_size: u64) -> Result<OciDescriptor, String> {
    let parsed: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
    if parsed
        .media_type
        .as_deref()
        .is_some_and(|t| t != MANIFEST_MEDIA_TYPE)
    {
        return Err(format!(
            "the manifest's media type is {:?}, not {MANIFEST_MEDIA_TYPE} (an image index or another kind of artifact)",
            parsed.media_type.unwrap_or_default()
        ));
    }
    if parsed.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(format!(
            "the artifact's config is {:?}, not {WASM_CONFIG_MEDIA_TYPE}: not a Wasm component artifact",
            parsed.config.media_type
        ));
    }
    let [layer] = parsed.layers.as_slice() else {
        return Err(format!(
            "the artifact has {} layers; a Wasm component artifact has one",
            parsed.layers.len()
        ));
    };
    if layer.media_type != WASM_LAYER_MEDIA_TYPE {
        return Err(format!(
            "the layer is {:?}, not {WASM_LAYER_MEDIA_TYPE}",
            layer.media_type
        ));
    }
    // A "foreign" layer's URLs would have the host fetch from wherever the
    // registry says: refused.
    if layer.urls.as_ref().is_some_and(|urls| !urls.is_empty()) {
        return Err("the layer names URLs to fetch it from elsewhere: refused".to_owned());
    }
    if !crate::config::source::valid_digest(&layer.digest) {
        return Err(format!(
            "the layer's digest {:?} is not a sha256 digest",
            layer.digest
        ));
    }
    let size = u64::try_from(layer.size).map_err(|_| "the layer's size is negative".to_owned())?;
    if size > max_size {
        return Err(format!(
            "the component is {size} bytes, more than host.max_component_size ({max_size})"
        ));
    }
    Ok(layer.clone())
}

/// A registry's non-success answer, as retried: server errors and
/// throttling are transient; the rest (not found, not authorised) is an
/// answer.
fn answered(status: reqwest::StatusCode, url: &str) -> PullError {
    let why = format!("the registry answered {status} for {url}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        PullError::Unavailable(why)
    } else {
        PullError::Refused(why)
    }
}

/// The most read of a small answer (the API check, a token).
const SMALL_BODY: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[(&str, i64)]) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|(media, size)| {
                serde_json::json!({
                    "mediaType": media,
                    "digest": sha256_digest(b"x"),
                    "size": size,
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": WASM_LAYER_MEDIA_TYPE,
            "config": {"mediaType": config, "digest": sha256_digest(b"{}"), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn the_wasm_oci_layout_is_accepted_and_nothing_else() {
        let good = manifest(WASM_CONFIG_MEDIA_TYPE, &[(WASM_LAYER_MEDIA_TYPE, 1)]);
        assert_eq!(wasm_layer(&good, 10).unwrap().size, 1);
        for (bad, why) in [
            (
                manifest(
                    "application/vnd.oci.image.config.v1+json",
                    &[(WASM_LAYER_MEDIA_TYPE, 1)],
                ),
                "not a Wasm component",
            ),
            (manifest(WASM_CONFIG_MEDIA_TYPE, &[]), "0 layers"),
            (
                manifest(
                    WASM_CONFIG_MEDIA_TYPE,
                    &[(WASM_LAYER_MEDIA_TYPE, 1), (WASM_LAYER_MEDIA_TYPE, 1)],
                ),
                "2 layers",
            ),
            (
                manifest(
                    WASM_CONFIG_MEDIA_TYPE,
                    &[("application/vnd.oci.image.layer.v1.tar", 1)],
                ),
                "not application/wasm",
            ),
            (
                manifest(WASM_CONFIG_MEDIA_TYPE, &[(WASM_LAYER_MEDIA_TYPE, 11)]),
                "more than host.max_component_size",
            ),
            (b"not json".to_vec(), "not an OCI image manifest"),
        ] {
            let err = wasm_layer(&bad, 10).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn allow_lists_match_a_registry_or_a_repository_and_what_is_beneath_it() {
        let settings = RegistrySettings {
            allowed: vec!["ghcr.io/acme".into(), "127.0.0.1:5000".into()],
            ..RegistrySettings::default()
        };
        for (spec, allowed) in [
            ("oci://ghcr.io/acme:v1", true),
            ("oci://ghcr.io/acme/echo:v1", true),
            ("oci://ghcr.io/acmecorp/echo:v1", false),
            ("oci://ghcr.io/other/echo:v1", false),
            ("oci://127.0.0.1:5000/anything/at/all:v1", true),
            ("oci://127.0.0.1:5001/echo:v1", false),
        ] {
            let reference: OciRef = spec.parse().unwrap();
            assert_eq!(settings.allows(&reference), allowed, "{spec}");
        }
    }
}
