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
    /// The hash of the manifest's text last applied or seen, so an event
    /// that leaves it as it was (a neighbour file, a touch) reloads nothing.
    seen: Option<[u8; 32]>,
}

impl ManifestWatcher {
    /// Starts watching the directory of the manifest at `path` now (so no
    /// change after this call is missed).
    pub fn new(control: Arc<Control>, path: &Path) -> notify::Result<Self> {
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
        let seen = text_hash(&path);
        Ok(ManifestWatcher {
            control,
            path,
            _watcher: watcher,
            events,
            seen,
        })
    }

    /// Reloads as the manifest changes, until the host stops.
    pub async fn run(mut self) {
        while self.events.recv().await.is_some() {
            // Let a burst settle: quiet for MANIFEST_SETTLE, at most
            // MANIFEST_SETTLE_MAX after its first event.
            let deadline = tokio::time::Instant::now() + MANIFEST_SETTLE_MAX;
            loop {
                let quiet = tokio::time::Instant::now() + MANIFEST_SETTLE;
                match tokio::time::timeout_at(quiet.min(deadline), self.events.recv()).await {
                    Ok(Some(())) if tokio::time::Instant::now() < deadline => {}
                    Ok(None) => return,
                    _ => break,
                }
            }
            let Some(now) = text_hash(&self.path) else {
                warn!(
                    file = %self.path.display(),
                    "the manifest changed and cannot be read: nothing changed"
                );
                continue;
            };
            if self.seen == Some(now) {
                continue;
            }
            self.seen = Some(now);
            info!(file = %self.path.display(), "the manifest changed: reloading");
            match self.control.reload().await {
                Ok(report) => info!(?report, "manifest change applied"),
                Err(e) => error!("the manifest changed and is not applied, nothing changed: {e}"),
            }
        }
    }
}

/// The SHA-256 of the file at `path` (through any links), if readable.
fn text_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|text| Sha256::digest(&text).into())
}
