//! The requests of a pull: each under a deadline, its body read under a
//! bound (the manifest's, the token's, a component's declared size and
//! `max_component_size`), over TLS unless the registry is a loopback or a
//! listed one.

use super::auth::Authorization;
use super::*;
use crate::config::source::{OciRef, is_loopback_registry};
use oci_client::manifest::OciDescriptor;
use sha2::{Digest, Sha256};

/// A blob's destination: a buffer that takes at most `limit` bytes (the
/// layer's declared size, itself at most `max_component_size`) and hashes
/// what it takes.
pub(super) struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
    hasher: Sha256,
    overflowed: bool,
}

impl Bounded {
    pub(super) fn new(limit: u64) -> Self {
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

impl Bounded {
    /// Takes `chunk`, unless it would pass the limit (then nothing more is
    /// taken).
    pub(super) fn take(&mut self, chunk: &[u8]) -> bool {
        if self.overflowed || self.bytes.len() as u64 + chunk.len() as u64 > self.limit {
            self.overflowed = true;
            return false;
        }
        self.hasher.update(chunk);
        self.bytes.extend_from_slice(chunk);
        true
    }
}

impl Puller {
    /// `http://REGISTRY` or `https://REGISTRY`.
    pub(super) fn base_url(&self, registry: &str) -> String {
        let scheme = if self.plain_http(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{registry}")
    }

    /// `GET` with `request`, its body read up to `limit` bytes (past it,
    /// refused): the status, the headers and the body.
    pub(super) async fn get(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
        what: &str,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), PullError> {
        let mut response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(PullError::Refused(format!(
                    "the registry sent more than {limit} bytes for {what}"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }

    /// The manifest's bytes, read up to [`MAX_MANIFEST_SIZE`].
    pub(super) async fn manifest(
        &self,
        wanted: &OciRef,
        authorization: &Authorization,
    ) -> Result<Vec<u8>, PullError> {
        let reference = wanted
            .digest
            .as_deref()
            .or(wanted.tag.as_deref())
            .unwrap_or_default();
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url(&wanted.registry),
            wanted.repository
        );
        let request = authorization.apply(self.http.get(&url).header(
            reqwest::header::ACCEPT,
            format!("{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.index.v1+json"),
        ));
        let (status, _, body) = self.get(request, MAX_MANIFEST_SIZE, "the manifest").await?;
        if !status.is_success() {
            return Err(answered(status, &url));
        }
        Ok(body)
    }

    /// The component layer, streamed into a buffer bounded by its declared
    /// size (itself at most `max_component_size`), and checked against its
    /// digest and size.
    pub(super) async fn blob(
        &self,
        wanted: &OciRef,
        layer: &OciDescriptor,
        authorization: &Authorization,
    ) -> Result<Vec<u8>, PullError> {
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.base_url(&wanted.registry),
            wanted.repository,
            layer.digest
        );
        let mut response = authorization
            .apply(self.http.get(&url))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(answered(status, &url));
        }
        let declared = u64::try_from(layer.size).unwrap_or(0);
        let mut sink = Bounded::new(declared);
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if !sink.take(&chunk) {
                return Err(PullError::Refused(format!(
                    "the registry sent more than the component's declared {declared} bytes"
                )));
            }
        }
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

    /// A failed request, as retried: a timeout named as the setting that
    /// set it.
    pub(super) fn unreachable(&self, error: &reqwest::Error) -> PullError {
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
    pub(super) fn plain_http(&self, registry: &str) -> bool {
        is_loopback_registry(registry) || self.settings.insecure.iter().any(|r| r == registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_sink_refuses_bytes_past_its_bound() {
        let mut sink = Bounded::new(4);
        assert!(sink.take(b"abcd"));
        assert!(!sink.take(b"e"));
        assert!(!sink.take(b""), "nothing more once past the bound");
        assert_eq!(sink.bytes, b"abcd");
    }
}
