//! Standalone mode: the mesh's resources from a directory of YAML files,
//! watched; every change is validated, translated and pushed. A file that
//! does not read keeps its last good resources; a resource with an error
//! is left out (the rest of the mesh carries on) and its problems logged.
//!
//! ```text
//!  DIR/*.yaml ─inotify (poll as backup)─► debounce ─► changed files re-read ─► validate ─► Index ─► Hub::set_generator ─ADS─► proxies
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use weft_crds::Resource;

use crate::index::{Index, Key};
use crate::validate::{self, Finding};
use crate::xds::Hub;

/// How often the directory is checked when no change was heard.
const POLL: Duration = Duration::from_secs(1);

/// Pushes are debounced: a save arrives as a burst of events (write,
/// rename, several files from `kubectl`-style tools or `cp -r`), and one
/// rebuild after it has been quiet for DEBOUNCE (at most DEBOUNCE_MAX after
/// the first) pushes the whole change at once. istiod waits 100 ms; file
/// events come in far tighter bursts than API-server watches, and the push
/// latency budget (p99 < 100 ms to every proxy) is spent mostly here.
const DEBOUNCE: Duration = Duration::from_millis(10);
const DEBOUNCE_MAX: Duration = Duration::from_millis(100);

/// What identifies a file's content without reading it.
type Stamp = (u64, SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?, m.len()))
}

fn hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// A file whose resources count: YAML or JSON, not hidden (editors' swap
/// and backup files are).
fn is_config_file(path: &Path) -> bool {
    !hidden(path) && matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// The YAML/JSON files of a directory tree, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !hidden(&path) {
                out.extend(files(&path));
            }
        } else if is_config_file(&path) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Reads one file's resources.
pub fn read(path: &Path) -> Result<Vec<Resource>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    weft_crds::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The directory's files as last read.
#[derive(Default)]
pub struct Workspace {
    files: BTreeMap<PathBuf, (Option<Stamp>, Vec<Arc<Resource>>)>,
}

impl Workspace {
    /// Re-reads what changed; `true` when anything did. Unreadable files
    /// are logged and keep their last good resources.
    pub fn refresh(&mut self, dir: &Path) -> bool {
        let present = files(dir);
        let mut changed = false;
        let before = self.files.len();
        let keep: std::collections::BTreeSet<&PathBuf> = present.iter().collect();
        self.files.retain(|p, _| keep.contains(p));
        changed |= self.files.len() != before;
        for path in present {
            changed |= self.update(path);
        }
        changed
    }

    /// Re-reads only `paths` (what the file watcher reported), falling
    /// back to a whole [`refresh`](Self::refresh) when one is a directory.
    /// Stat-ing every file of a large mesh on each edit was a fifth of a
    /// push's CPU.
    pub fn refresh_paths(&mut self, dir: &Path, paths: &BTreeSet<PathBuf>) -> bool {
        if paths.iter().any(|p| p.is_dir()) {
            return self.refresh(dir);
        }
        let mut changed = false;
        for path in paths {
            if is_config_file(path) {
                changed |= self.update(path.clone());
            }
        }
        changed
    }

    /// Brings one file up to date; `true` when its resources changed.
    fn update(&mut self, path: PathBuf) -> bool {
        let now = stamp(&path);
        if self.files.get(&path).is_some_and(|(s, _)| *s == now) {
            return false;
        }
        if now.is_none() {
            // Gone between the listing and now: a removal, not an error.
            return self.files.remove(&path).is_some();
        }
        match read(&path) {
            Ok(resources) => {
                self.files.insert(path, (now, resources.into_iter().map(Arc::new).collect()));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "file rejected; its last good resources stay in effect");
                // Remember the stamp so the error is logged once per change.
                let kept = self.files.remove(&path).map(|(_, r)| r).unwrap_or_default();
                self.files.insert(path, (now, kept));
                false
            }
        }
    }

    pub fn resources(&self) -> Vec<Arc<Resource>> {
        self.files.values().flat_map(|(_, r)| r.iter().cloned()).collect()
    }
}

/// What is in effect, kept across changes.
#[derive(Default)]
pub struct State {
    /// The last accepted version of every resource.
    last_good: Vec<Arc<Resource>>,
    findings: Vec<Finding>,
    validator: validate::Validator,
}

impl State {
    /// Validates the workspace and indexes what is accepted. A resource
    /// that no longer validates keeps its last good version in effect, as
    /// a Kubernetes admission webhook would have refused the edit; what
    /// changed in the findings is logged.
    pub fn rebuild(&mut self, workspace: &Workspace) -> Arc<Index> {
        let mut resources = workspace.resources();
        let first = self.validator.validate(&resources);
        // The findings are those of what was written, not of what is kept.
        let findings = first.findings.clone();
        let rejected: BTreeSet<Key> = first.errors().map(|f| f.key.clone()).collect();
        let mut kept = 0;
        if !rejected.is_empty() {
            let last_good: BTreeMap<Key, &Arc<Resource>> = self.last_good.iter().map(|r| (validate::key_of(r), r)).collect();
            for r in resources.iter_mut() {
                let key = validate::key_of(r);
                if let Some(good) = last_good.get(&key).filter(|_| rejected.contains(&key)) {
                    *r = Arc::clone(good);
                    kept += 1;
                }
            }
        }
        let validated = if kept > 0 { self.validator.validate(&resources) } else { first };
        for f in findings.iter().filter(|f| !self.findings.contains(f)) {
            match f.message.level {
                weft_crds::status::Level::Error => tracing::error!("{f}"),
                _ => tracing::warn!("{f}"),
            }
        }
        if kept > 0 {
            tracing::warn!(kept, "resources with errors keep their last good version in effect");
        }
        self.findings = findings;
        self.last_good = validated.accepted;
        Arc::new(validated.index)
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }
}

/// Whether an event can mean new content. Opening, reading and closing a
/// file unwritten cannot, and reacting to them made each read of the
/// directory (the operator's own included) wake the watcher again, a
/// rescan every DEBOUNCE for ever.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `dir` and keeps the hub's translation current, forever. A
/// change is heard at once through inotify; a slow poll backs it up
/// (network filesystems, a watch that could not be set).
pub async fn watch(dir: PathBuf, hub: Arc<Hub>, statuses: crate::status::Statuses) {
    let wake = Arc::new(tokio::sync::Notify::new());
    // What the watcher reported since the last rebuild: the paths, or that
    // only a whole rescan will do (an error, an overflowed queue).
    let heard: Arc<std::sync::Mutex<(BTreeSet<PathBuf>, bool)>> = Arc::default();
    let _watcher = {
        use notify::Watcher;
        let wake = wake.clone();
        let heard = heard.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.as_ref().is_ok_and(|e| !changes_content(&e.kind)) {
                return;
            }
            {
                let mut heard = crate::lock(&heard);
                match event {
                    Ok(e) if !e.need_rescan() && !e.paths.is_empty() => heard.0.extend(e.paths),
                    _ => heard.1 = true,
                }
            }
            wake.notify_one()
        });
        match watcher {
            Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the directory; polling it");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; polling the directory");
                None
            }
        }
    };
    let mut workspace = Workspace::default();
    let mut state = State::default();
    let mut translation: Option<Arc<crate::translate::Translation>> = None;
    // The first pass and every poll read the whole directory.
    let mut whole = true;
    loop {
        let started = std::time::Instant::now();
        let (paths, rescan) = std::mem::take(&mut *crate::lock(&heard));
        tracing::debug!(whole, rescan, paths = paths.len(), "reading the directory");
        let changed = if whole || rescan { workspace.refresh(&dir) } else { workspace.refresh_paths(&dir, &paths) };
        if changed {
            let read = started.elapsed();
            let index = state.rebuild(&workspace);
            let validated = started.elapsed();
            let services = index.services.len();
            let next = Arc::new(crate::translate::Translation::after(index, translation.as_deref()));
            let translated = started.elapsed();
            hub.set_generator(next.clone());
            let pushed = started.elapsed();
            // Status and dropping the last translation wait until the
            // proxies have their pushes under way.
            translation = Some(next);
            statuses.validated(workspace.resources().iter().map(|r| validate::key_of(r)), state.findings());
            tracing::info!(
                services,
                problems = state.findings().len(),
                read_ms = read.as_millis() as u64,
                validated_ms = validated.as_millis() as u64,
                translated_ms = translated.as_millis() as u64,
                pushed_ms = pushed.as_millis() as u64,
                "configuration applied"
            );
        }
        whole = tokio::time::timeout(POLL, wake.notified()).await.is_err();
        if !whole {
            let burst = std::time::Instant::now();
            while burst.elapsed() < DEBOUNCE_MAX && tokio::time::timeout(DEBOUNCE, wake.notified()).await.is_ok() {}
        }
    }
}
