//! Watching files for changes: the component files tenants run (a changed
//! file swaps the tenants running it) and the manifest (a changed manifest
//! is reloaded, as SIGHUP does), including a Kubernetes ConfigMap's atomic
//! update, where the kubelet swaps a `..data` symlink in the directory and
//! the file's own path never changes: both watch directories, never files.

use crate::tenancy::control::Control;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Watches the component files tenants run and swaps a tenant when its file
/// changes. Watches directories, so a file replaced by rename (the safe way
/// to update one) is seen too.
pub struct ComponentWatcher {
    control: Arc<Control>,
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    watched: Vec<PathBuf>,
    /// Changed files not acted on yet, and when each file was last acted
    /// on: one is compiled at most once per [`WATCH_INTERVAL`], so a
    /// tenant that can rewrite its file costs the host a bounded amount of
    /// compiling (a change within the interval waits for its end, and is
    /// not lost).
    pending: std::collections::BTreeSet<PathBuf>,
    acted: HashMap<PathBuf, std::time::Instant>,
}

/// The least time between two compiles of one watched file.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

impl ComponentWatcher {
    /// Starts watching the tenants' component files now (so no change after
    /// this call is missed).
    pub fn new(control: Arc<Control>) -> notify::Result<Self> {
        let (sender, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let _ = sender.send(event.paths);
            }
        })?;
        let mut this = ComponentWatcher {
            control,
            watcher,
            events,
            watched: Vec::new(),
            pending: std::collections::BTreeSet::new(),
            acted: HashMap::new(),
        };
        this.follow_tenants();
        Ok(this)
    }

    /// Watches the directories of every tenant's component file (a reload
    /// may have added some).
    fn follow_tenants(&mut self) {
        use notify::{RecursiveMode, Watcher};
        let mut dirs: Vec<PathBuf> = self
            .control
            .component_files()
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            if self.watched.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    info!(dir = %dir.display(), "watching for component changes");
                    self.watched.push(dir);
                }
                Err(e) => warn!(dir = %dir.display(), "cannot watch for component changes: {e}"),
            }
        }
    }

    /// Swaps tenants as their files change, until the host stops.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                Some(paths) = self.events.recv() => {
                    // Let a burst of writes settle, then act once per file.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let mut changed = paths;
                    while let Ok(more) = self.events.try_recv() {
                        changed.extend(more);
                    }
                    let files = self.control.component_files();
                    self.pending.extend(changed.into_iter().filter(|p| files.contains(p)));
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let now = std::time::Instant::now();
            self.acted
                .retain(|_, at| now.duration_since(*at) < WATCH_INTERVAL);
            let due: Vec<PathBuf> = self
                .pending
                .iter()
                .filter(|p| !self.acted.contains_key(*p))
                .cloned()
                .collect();
            for path in due {
                self.pending.remove(&path);
                self.acted.insert(path.clone(), std::time::Instant::now());
                self.control.component_file_changed(&path).await;
            }
            self.follow_tenants();
        }
    }
}

/// How long the manifest's directory must be quiet before a change is
/// applied: an editor's write-then-rename, or the kubelet's four steps,
/// become one reload.
pub const MANIFEST_SETTLE: Duration = Duration::from_millis(300);

/// The longest a burst of changes delays a reload.
const MANIFEST_SETTLE_MAX: Duration = Duration::from_secs(3);

/// Applies every change to the manifest file as a reload (`[host] watch`).
pub struct ManifestWatcher {
    control: Arc<Control>,
    path: PathBuf,
    /// Kept alive: dropping it stops the events.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    /// The hash of the manifest's text last applied whole (read before the
    /// reload read it, or before the host loaded it), so an event that
    /// leaves it as it was (a neighbour file, a touch) reloads nothing. A
    /// change between the two reads costs one more (identical) reload,
    /// never a missed one.
    seen: Option<[u8; 32]>,
}

impl ManifestWatcher {
    /// Starts watching the directory of the manifest at `path` now (so no
    /// change after this call is missed); `loaded` is the hash of its text
    /// as read before the host loaded it ([`manifest_hash`]), so a change
    /// made between that read and this call is applied too.
    pub fn new(
        control: Arc<Control>,
        path: &Path,
        loaded: Option<[u8; 32]>,
    ) -> notify::Result<Self> {
        use notify::{RecursiveMode, Watcher};
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let dir = path.parent().unwrap_or(Path::new("/")).to_owned();
        let (sender, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = sender.send(());
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        info!(file = %path.display(), "watching the manifest: a change is applied as a reload");
        Ok(ManifestWatcher {
            control,
            path,
            _watcher: watcher,
            events,
            seen: loaded,
        })
    }

    /// Reloads as the manifest changes, until the host stops. A reload
    /// that fails whole or in part (a pull that did not come, a new
    /// version that did not start) is tried again, from every 2 s doubling
    /// to every minute, while the file stays as it is: a replica does not
    /// stay behind its fleet for a registry's passing trouble.
    pub async fn run(mut self) {
        let mut retry: Option<Duration> = None;
        loop {
            let changed = match retry {
                Some(after) => match tokio::time::timeout(after, self.events.recv()).await {
                    Ok(None) => return,
                    Ok(Some(())) => true,
                    Err(_) => false,
                },
                None => match self.events.recv().await {
                    None => return,
                    Some(()) => true,
                },
            };
            if changed && !self.settle().await {
                return;
            }
            let Some(now) = manifest_hash(&self.path) else {
                warn!(
                    file = %self.path.display(),
                    "the manifest changed and cannot be read: nothing changed"
                );
                continue;
            };
            if self.seen == Some(now) {
                // As applied last (a neighbour file, a touch, or changed
                // back): nothing to do, nothing to retry.
                retry = None;
                continue;
            }
            info!(file = %self.path.display(), "the manifest changed: reloading");
            match self.control.reload().await {
                Ok(report) if report.failed.is_empty() => {
                    info!(?report, "manifest change applied");
                    self.seen = Some(now);
                    retry = None;
                }
                outcome => {
                    let next = retry.map_or(RETRY_FIRST, |r| (r * 2).min(RETRY_MAX));
                    match outcome {
                        Ok(report) => warn!(
                            ?report,
                            "manifest change applied in part: retrying in {next:?}"
                        ),
                        Err(e) => error!(
                            "the manifest changed and is not applied, nothing changed (retrying in {next:?}): {e}"
                        ),
                    }
                    retry = Some(next);
                }
            }
        }
    }

    /// Lets a burst settle: returns once the directory has been quiet for
    /// MANIFEST_SETTLE, at most MANIFEST_SETTLE_MAX after it began; false
    /// if the events ended (the host stops).
    async fn settle(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + MANIFEST_SETTLE_MAX;
        loop {
            let quiet = tokio::time::Instant::now() + MANIFEST_SETTLE;
            match tokio::time::timeout_at(quiet.min(deadline), self.events.recv()).await {
                Ok(Some(())) if tokio::time::Instant::now() < deadline => {}
                Ok(None) => return false,
                _ => return true,
            }
        }
    }
}

/// The first retry of a failed reload of the watched manifest.
const RETRY_FIRST: Duration = Duration::from_secs(2);

/// The longest wait between retries of a failed reload.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The SHA-256 of the file at `path` (through any links), if readable.
pub fn manifest_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|text| Sha256::digest(&text).into())
}
