//! The local content-addressed store of pulled artifacts, in the cache
//! directory: `blobs/sha256/HEX` holds manifests and components by digest
//! (so a digest pulled once is never pulled again), `tags/` the digest each
//! tag last resolved to (so a host restarted with its registry down starts
//! from what it ran). Every write is atomic: a file written whole beside its
//! name, synced, then renamed over it; a reader finds the old file, the new
//! one, or none, never part of one. Bounded: past `max_bytes`, the blobs
//! used longest ago go first (never the ones just stored), so a fleet that
//! swaps through many versions does not fill its volume.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The store's directory and its writer's temporary-name counter.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The most its blobs may hold.
    max_bytes: u64,
    /// Makes each temporary file's name unique within the process (the
    /// process id makes it unique between hosts sharing the directory).
    next_temp: AtomicU64,
}

impl Store {
    /// Opens (making it if needed) the store in `dir`, holding at most
    /// `max_bytes` of blobs.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Store> {
        for sub in ["blobs/sha256", "tags", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        // What a write cut short (a crash, a kill) left: never read, so
        // removed, except what another live host is writing now.
        for entry in fs::read_dir(dir.join("tmp"))?.map_while(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let writer = name
                .split('.')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok());
            let alive = writer.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Store {
            dir: dir.to_owned(),
            max_bytes,
            next_temp: AtomicU64::new(0),
        })
    }

    /// The content stored under `digest`, if any, checked against it: a
    /// file that does not hash to its name (a damaged disk, a hand edit)
    /// is removed and reported missing, so it is pulled again.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path).ok()?;
        if sha256_digest(&bytes) != digest {
            let _ = fs::remove_file(&path);
            return None;
        }
        // Used now: the last to go when the store is pruned.
        if let Ok(file) = fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some(bytes)
    }

    /// Stores `bytes` under `digest` (which the caller has checked they
    /// hash to).
    pub fn put(&self, digest: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| io::Error::other(format!("{digest:?} is not a sha256 digest")))?;
        if path.is_file() {
            return Ok(());
        }
        self.write_atomically(&path, bytes)
    }

    /// Removes the blobs used longest ago until the rest hold at most the
    /// store's bound, keeping those in `keep` (what was just stored).
    pub fn prune(&self, keep: &[&str]) {
        let dir = self.dir.join("blobs/sha256");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let mut blobs: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|(_, len, _)| len).sum();
        blobs.sort();
        for (_, len, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if keep
                .iter()
                .any(|d| name.as_deref() == d.strip_prefix("sha256:"))
            {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
                tracing::info!(blob = %path.display(), "removed from the component store, past its size limit");
            }
        }
    }

    /// The digest tag `location:tag` last resolved to, if recorded.
    pub fn tag(&self, tagged: &str) -> Option<String> {
        let text = fs::read_to_string(self.tag_path(tagged)).ok()?;
        let digest = text.trim();
        crate::config::source::valid_digest(digest).then(|| digest.to_owned())
    }

    /// Records that tag `location:tag` resolved to `digest`.
    pub fn set_tag(&self, tagged: &str, digest: &str) -> io::Result<()> {
        self.write_atomically(&self.tag_path(tagged), format!("{digest}\n").as_bytes())
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        // Only a well-formed digest becomes a file name: nothing a
        // registry sends can name a path outside the store.
        crate::config::source::valid_digest(digest).then(|| {
            self.dir
                .join("blobs/sha256")
                .join(&digest["sha256:".len()..])
        })
    }

    /// A tag's file: named by the hash of `location:tag`, which may hold
    /// any character a file name cannot.
    fn tag_path(&self, tagged: &str) -> PathBuf {
        let name = sha256_digest(tagged.as_bytes());
        self.dir.join("tags").join(&name["sha256:".len()..])
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .dir
            .join("tmp")
            .join(format!("{}.{n}", std::process::id()));
        let written = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp, path)?;
            // The rename itself made durable.
            if let Some(parent) = path.parent() {
                fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

/// `sha256:` and the lowercase hex SHA-256 of `bytes`: an OCI digest.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcphost-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn stored_content_comes_back_by_its_digest_and_survives_a_reopen() {
        let dir = scratch("roundtrip");
        let digest = sha256_digest(b"component");
        Store::open(&dir, 1 << 20)
            .unwrap()
            .put(&digest, b"component")
            .unwrap();
        let store = Store::open(&dir, 1 << 20).unwrap();
        assert_eq!(store.get(&digest).as_deref(), Some(&b"component"[..]));
        store.set_tag("reg/echo:v1", &digest).unwrap();
        assert_eq!(store.tag("reg/echo:v1"), Some(digest));
        assert_eq!(store.tag("reg/echo:v2"), None);
        assert!(fs::read_dir(dir.join("tmp")).unwrap().next().is_none());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stored_file_that_does_not_match_its_digest_is_dropped() {
        let dir = scratch("damaged");
        let store = Store::open(&dir, 1 << 20).unwrap();
        let digest = sha256_digest(b"component");
        store.put(&digest, b"component").unwrap();
        let file = dir.join("blobs/sha256").join(&digest[7..]);
        fs::write(&file, b"tampered").unwrap();
        assert_eq!(store.get(&digest), None);
        assert!(!file.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn past_its_bound_the_store_drops_what_was_used_longest_ago() {
        let dir = scratch("bound");
        let store = Store::open(&dir, 25).unwrap();
        let digests: Vec<String> = (0..4u8)
            .map(|i| {
                let bytes = [i; 10];
                let digest = sha256_digest(&bytes);
                store.put(&digest, &bytes).unwrap();
                // Distinct, ordered use times.
                let path = dir.join("blobs/sha256").join(&digest[7..]);
                let at = std::time::SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(1000 + u64::from(i));
                fs::File::options()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_modified(at)
                    .unwrap();
                digest
            })
            .collect();
        // The oldest is kept when named; the next oldest go.
        store.prune(&[&digests[0]]);
        let left: Vec<bool> = digests.iter().map(|d| store.get(d).is_some()).collect();
        assert_eq!(left, [true, false, false, true]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_malformed_digest_names_no_file() {
        let dir = scratch("names");
        let store = Store::open(&dir, 1 << 20).unwrap();
        assert!(store.put("sha256:../../etc/passwd", b"x").is_err());
        assert_eq!(store.get("sha256:../../etc/passwd"), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
