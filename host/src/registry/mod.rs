//! Components from OCI registries: what `oci://REGISTRY/REPOSITORY:TAG` or
//! `@sha256:DIGEST` means, pulled with the ecosystem's client (`oci-client`:
//! the distribution protocol, the registry token flow) and trusted no
//! further than it is checked:
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

pub mod store;

use crate::config::manifest::RegistrySettings;
use crate::config::source::{OciRef, is_loopback_registry};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
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

/// Attempts per pull when the registry fails transiently.
const ATTEMPTS: u32 = 4;

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
    /// Certificates trusted besides the system's (`registry_ca_file`).
    roots: Vec<Certificate>,
    /// For manifests only: `oci-client` reads a manifest's body whole, with
    /// no bound, and a hostile registry's endless manifest must not be
    /// held; blobs go through `oci-client`.
    http: reqwest::Client,
    settings: RegistrySettings,
    store: Option<Store>,
    stats: PullStats,
}

impl Puller {
    /// A puller with `settings`, keeping what it pulls in `store_dir` (none:
    /// every start pulls again).
    pub fn new(
        settings: RegistrySettings,
        store_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        // rustls with ring, installed once for the process (a second call
        // finds it installed, which is fine). Deprecated for want of
        // post-quantum key exchange, which a registry pull does not need;
        // ring builds without the C toolchain aws-lc needs.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = Vec::new();
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                anyhow::anyhow!("host.registry_ca_file: cannot read {}: {e}", ca.display())
            })?;
            roots.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        let mut http = reqwest::Client::builder()
            .read_timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(USER_AGENT);
        for root in &roots {
            let cert = reqwest::Certificate::from_pem(&root.data)
                .map_err(|e| anyhow::anyhow!("host.registry_ca_file: {e}"))?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| anyhow::anyhow!("cannot configure the registry client: {e}"))?;
        let store = match store_dir {
            Some(dir) => match Store::open(dir) {
                Ok(store) => Some(store),
                Err(e) => {
                    warn!(dir = %dir.display(), "no store for pulled components (each start pulls again): {e}");
                    None
                }
            },
            None => None,
        };
        Ok(Puller {
            roots,
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
    /// there, else pulled (retried with backoff while the registry fails
    /// transiently). With `stale_ok`, a tag the registry cannot resolve
    /// now falls back to the digest it last resolved to, if that is
    /// stored (a start or reload with the registry down).
    pub async fn fetch(&self, reference: &OciRef, stale_ok: bool) -> Result<Fetched, PullError> {
        let started = Instant::now();
        let result = self.fetch_uncounted(reference, stale_ok).await;
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
        stale_ok: bool,
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
        let error = loop {
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
            if attempt == ATTEMPTS {
                break error;
            }
            warn!(component = %reference, attempt, "pull failed, retrying in {backoff:?}: {error}");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        };
        let error = format!("{error} (tried {ATTEMPTS} times)");
        if stale_ok
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

    /// One attempt: the manifest, then the component.
    async fn pull(&self, wanted: &OciRef) -> Result<Fetched, PullError> {
        let reference = match &wanted.digest {
            Some(digest) => Reference::with_digest(
                wanted.registry.clone(),
                wanted.repository.clone(),
                digest.clone(),
            ),
            None => Reference::with_tag(
                wanted.registry.clone(),
                wanted.repository.clone(),
                wanted.tag.clone().unwrap_or_default(),
            ),
        };
        let auth = self.credentials(&wanted.registry);
        let client = self.client_for(&wanted.registry)?;
        let token = client
            .auth(&reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(classify)?;
        let manifest = self.manifest(&reference, wanted, &auth, token).await?;
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
            None => blob(&client, &reference, &layer).await?,
        };
        if let Some(store) = &self.store {
            let kept = store
                .put(&layer.digest, &bytes)
                .and_then(|()| store.put(&digest, &manifest))
                .and_then(|()| match wanted.digest {
                    None => store.set_tag(&tagged(wanted), &digest),
                    Some(_) => Ok(()),
                });
            if let Err(e) = kept {
                warn!(component = %wanted, "cannot keep the pulled component in the store: {e}");
            }
        }
        Ok(Fetched {
            reference: wanted.pinned(&digest),
            bytes,
        })
    }

    /// The manifest's bytes, read up to [`MAX_MANIFEST_SIZE`].
    async fn manifest(
        &self,
        reference: &Reference,
        wanted: &OciRef,
        auth: &RegistryAuth,
        token: Option<String>,
    ) -> Result<Vec<u8>, PullError> {
        let scheme = if self.plain_http(&wanted.registry) {
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            reference.resolve_registry(),
            reference.repository(),
            reference.digest().or(reference.tag()).unwrap_or_default()
        );
        let mut request = self.http.get(&url).header(
            reqwest::header::ACCEPT,
            format!("{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.index.v1+json"),
        );
        request = match (token, auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Anonymous) => request,
        };
        let mut response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let why = format!("the registry answered {status} for the manifest {url}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                PullError::Unavailable(why)
            } else {
                PullError::Refused(why)
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if body.len() + chunk.len() > MAX_MANIFEST_SIZE {
                return Err(PullError::Refused(format!(
                    "the manifest is larger than {MAX_MANIFEST_SIZE} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// An `oci-client` for one pull from `registry`: plain HTTP for it
    /// if it is on loopback or listed, TLS otherwise. (Made per pull: the
    /// client's list of plain-HTTP registries is fixed when it is made,
    /// and a loopback registry's port is only known from the reference.)
    fn client_for(&self, registry: &str) -> Result<oci_client::Client, PullError> {
        let plain = if self.plain_http(registry) {
            vec![registry.to_owned()]
        } else {
            Vec::new()
        };
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain),
            extra_root_certificates: self.roots.clone(),
            read_timeout: Some(self.settings.timeout),
            connect_timeout: Some(self.settings.timeout.min(Duration::from_secs(10))),
            platform_resolver: None,
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        oci_client::Client::try_from(config)
            .map_err(|e| PullError::Refused(format!("cannot configure the registry client: {e}")))
    }

    /// A failed request, as retried: a timeout named as the setting that
    /// set it.
    fn unreachable(&self, error: &reqwest::Error) -> PullError {
        PullError::Unavailable(if error.is_timeout() {
            format!(
                "the registry did not answer within {:?} (host.registry_timeout)",
                self.settings.timeout
            )
        } else {
            format!("cannot reach the registry: {error}")
        })
    }

    /// Whether `registry` is reached over plain HTTP: loopback ones, and
    /// those the operator lists.
    fn plain_http(&self, registry: &str) -> bool {
        is_loopback_registry(registry) || self.settings.insecure.iter().any(|r| r == registry)
    }

    /// The credentials for `registry` from the Docker `config.json` (the
    /// configured one, else the user's), anonymous if none.
    fn credentials(&self, registry: &str) -> RegistryAuth {
        let path = self
            .settings
            .credentials
            .clone()
            .or_else(default_docker_config);
        let Some(path) = path else {
            return RegistryAuth::Anonymous;
        };
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                if self.settings.credentials.is_some() {
                    warn!(file = %path.display(), "cannot read registry credentials, pulling anonymously: {e}");
                }
                return RegistryAuth::Anonymous;
            }
        };
        match docker_credential::get_credential_from_reader(file, registry) {
            Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                RegistryAuth::Basic(user, password)
            }
            Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
                RegistryAuth::Bearer(token)
            }
            Err(_) => RegistryAuth::Anonymous,
        }
    }
}

/// The component layer, streamed into a buffer bounded by its declared
/// size, and checked against its digest.
async fn blob(
    client: &oci_client::Client,
    reference: &Reference,
    layer: &OciDescriptor,
) -> Result<Vec<u8>, PullError> {
    let declared = u64::try_from(layer.size).unwrap_or(0);
    let mut sink = Bounded::new(declared);
    let pulled = client.pull_blob(reference, layer, &mut sink).await;
    if sink.overflowed {
        return Err(PullError::Refused(format!(
            "the registry sent more than the component's declared {declared} bytes"
        )));
    }
    pulled.map_err(classify)?;
    let digest = format!("sha256:{:x}", sink.hasher.finalize());
    if digest != layer.digest {
        return Err(PullError::Refused(format!(
            "the registry sent bytes whose digest is {digest}, not the layer's {}",
            layer.digest
        )));
    }
    if sink.bytes.len() as u64 != declared {
        return Err(PullError::Refused(format!(
            "the registry sent {} bytes, not the layer's declared {declared}",
            sink.bytes.len()
        )));
    }
    Ok(sink.bytes)
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

/// How an `oci-client` error is retried: network trouble, server errors
/// and throttling are transient; the rest (a digest mismatch, not found,
/// not authorized) is an answer.
fn classify(error: oci_client::errors::OciDistributionError) -> PullError {
    use oci_client::errors::OciDistributionError as E;
    let transient = match &error {
        E::RequestError(_) | E::IoError(_) => true,
        E::ServerError { code, .. } => *code >= 500 || *code == 429,
        _ => false,
    };
    let why = error.to_string();
    if transient {
        PullError::Unavailable(why)
    } else {
        PullError::Refused(why)
    }
}

/// A blob's destination: a buffer that takes at most `limit` bytes (the
/// layer's declared size, itself at most `max_component_size`) and hashes
/// what it takes. Past the limit it fails the write, which stops the pull.
struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
    hasher: Sha256,
    overflowed: bool,
}

impl Bounded {
    fn new(limit: u64) -> Self {
        Bounded {
            // The declared size, itself at most max_component_size: the
            // buffer never grows (nor doubles) past it.
            bytes: Vec::with_capacity(usize::try_from(limit).unwrap_or(0)),
            limit,
            hasher: Sha256::new(),
            overflowed: false,
        }
    }
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.limit {
            self.overflowed = true;
            return Poll::Ready(Err(std::io::Error::other(
                "more bytes than the layer declared",
            )));
        }
        self.hasher.update(buf);
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

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

    #[tokio::test]
    async fn a_blob_sink_refuses_bytes_past_its_bound() {
        use tokio::io::AsyncWriteExt;
        let mut sink = Bounded::new(4);
        sink.write_all(b"abcd").await.unwrap();
        assert!(sink.write_all(b"e").await.is_err());
        assert!(sink.overflowed);
        assert_eq!(sink.bytes, b"abcd");
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
