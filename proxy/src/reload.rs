//! When to reload: the config file changing on disk, SIGHUP, and (through
//! `admin`) POST /reload. Every trigger ends in `Shared::reload_from_file`,
//! which validates and swaps atomically; this module only decides when.
//!
//! The watcher watches the file's directory, not the file, because the ways
//! a config is replaced mostly replace the directory entry rather than write
//! into the inode: an editor's or `mv`'s atomic rename, and a Kubernetes
//! ConfigMap update (a new timestamped directory, a `..data_tmp` symlink to
//! it renamed over `..data`, which `pgshift.yaml -> ..data/pgshift.yaml`
//! goes through). An event only says "look again": the file is re-read and
//! reloaded when its bytes differ from the last attempt, so the several
//! events of one save make one reload. A slow poll backs the watcher up for
//! the events it cannot see (the directory itself replaced, a symlink chain
//! leading elsewhere, an inotify queue overflow).

use std::ffi::{OsStr, OsString};
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::server::{Loaded, ReloadError, Shared};

/// Events this close together are one save. Short, because SPEC guarantee 5
/// wants `rollback: true` in force within 100 ms of the write.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// How long to wait for a writer that is rewriting the file in place to
/// close it, before reading anyway (a writer that never closes).
const WRITER_GRACE: Duration = Duration::from_secs(1);

/// How often the file is compared even when no event came.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// `config_file::load` refuses files larger than 16 MiB; reading one byte
/// past that is enough to notice any change it would act on.
const MAX_READ: u64 = 16 * 1024 * 1024 + 1;

/// What asked for a reload, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The watcher saw the config directory change.
    FileChange,
    /// The periodic comparison found different bytes.
    Poll,
    Sighup,
    /// POST /reload.
    Http,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::FileChange => "file change",
            Trigger::Poll => "poll",
            Trigger::Sighup => "SIGHUP",
            Trigger::Http => "POST /reload",
        }
    }
}

/// Serialises the triggers and remembers the bytes of the file at the last
/// attempt, so a change already applied by one trigger is not applied again
/// by another.
pub struct Reloader {
    shared: Arc<Shared>,
    seen: Mutex<Seen>,
}

struct Seen {
    /// The file's contents at the last reload attempt (or at start), whether
    /// or not that attempt was valid: a broken file is reported once, not on
    /// every event and poll until it is fixed.
    bytes: Option<Vec<u8>>,
    /// A read failure was already logged; cleared by the next good read.
    warned_unreadable: bool,
}

impl Reloader {
    /// `on_disk`: the file's contents when `shared`'s configuration was
    /// read from it, if known.
    pub fn new(shared: Arc<Shared>, on_disk: Option<Vec<u8>>) -> Arc<Self> {
        Arc::new(Reloader {
            shared,
            seen: Mutex::new(Seen {
                bytes: on_disk,
                warned_unreadable: false,
            }),
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reloads whatever the file says now, changed or not: an operator asked.
    /// Blocks on file IO; call from a blocking thread.
    pub fn reload(&self, trigger: Trigger) -> Result<Arc<Loaded>, ReloadError> {
        let mut seen = self.lock();
        if let Some(path) = &self.shared.config_path {
            seen.bytes = read_config(path).ok();
        }
        let result = self.shared.reload_from_file();
        log_outcome(trigger, &result);
        result
    }

    /// Reloads when the file's bytes differ from the last attempt's; `None`
    /// when there was nothing to do. Blocks on file IO.
    pub fn reload_if_changed(&self, trigger: Trigger) -> Option<Result<Arc<Loaded>, ReloadError>> {
        let path = self.shared.config_path.as_deref()?;
        let mut seen = self.lock();
        let bytes = match read_config(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                // An editor that deletes and recreates leaves a moment with
                // no file; the event that recreates it brings us back. Only
                // a poll that still cannot read it is worth a warning.
                if trigger == Trigger::Poll && !seen.warned_unreadable {
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "cannot read the configuration file; the loaded version stays in force"
                    );
                    seen.warned_unreadable = true;
                }
                return None;
            }
        };
        seen.warned_unreadable = false;
        if seen.bytes.as_deref() == Some(bytes.as_slice()) {
            return None;
        }
        seen.bytes = Some(bytes);
        let result = self.shared.reload_from_file();
        log_outcome(trigger, &result);
        Some(result)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn log_outcome(trigger: Trigger, result: &Result<Arc<Loaded>, ReloadError>) {
    match result {
        Ok(loaded) => tracing::info!(
            trigger = trigger.as_str(),
            version = loaded.version,
            rollback = loaded.config.rollback,
            "configuration reloaded"
        ),
        // `reload_from_file` has logged every reason already.
        Err(_) => tracing::warn!(trigger = trigger.as_str(), "reload rejected"),
    }
}

/// The bytes of the config file, for telling whether it changed.
pub fn read_config(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_READ)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reloads on every SIGHUP until `draining`. The caller creates `hangup`
/// before the proxy starts, so a SIGHUP during start-up cannot kill the
/// process (the default action) once it is reachable.
pub async fn reload_on_sighup(
    reloader: Arc<Reloader>,
    mut hangup: tokio::signal::unix::Signal,
    draining: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = draining.cancelled() => break,
            received = hangup.recv() => if received.is_none() { break },
        }
        let reloader = Arc::clone(&reloader);
        let _ = tokio::task::spawn_blocking(move || reloader.reload(Trigger::Sighup)).await;
    }
}

/// Reloads when the config file's bytes change, until `draining`. The
/// watch is in place when this returns; the future does the reloading.
/// Does nothing for a proxy started without a file.
pub fn watch_file(
    reloader: Arc<Reloader>,
    draining: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let wake = Arc::new(Notify::new());
    let watch = reloader.shared.config_path.as_deref().map(|path| {
        let mut watch = DirWatch::new(path, Arc::clone(&wake));
        watch.ensure();
        watch
    });
    async move {
        let Some(mut watch) = watch else {
            return;
        };
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            let trigger = tokio::select! {
                _ = draining.cancelled() => break,
                _ = wake.notified() => {
                    // The rest of this save's events arrive meanwhile; they
                    // leave at most one stored wake-up, whose check finds
                    // nothing new.
                    tokio::time::sleep(DEBOUNCE).await;
                    watch.writer_done().await;
                    Trigger::FileChange
                }
                _ = poll.tick() => {
                    watch.ensure();
                    Trigger::Poll
                }
            };
            let reloader = Arc::clone(&reloader);
            let _ = tokio::task::spawn_blocking(move || reloader.reload_if_changed(trigger)).await;
        }
    }
}

/// A non-recursive watch on the config file's directory, re-established
/// when the directory is replaced or was missing.
struct DirWatch {
    dir: PathBuf,
    name: OsString,
    wake: Arc<Notify>,
    /// The file is being rewritten in place: modified and not yet closed.
    /// Reading it now could load half of it, which may even be valid.
    writing: Arc<AtomicBool>,
    /// The watcher and the (device, inode) of the directory it watches.
    active: Option<(notify::RecommendedWatcher, (u64, u64))>,
    warned: bool,
}

impl DirWatch {
    fn new(path: &Path, wake: Arc<Notify>) -> Self {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        DirWatch {
            dir,
            name: path.file_name().unwrap_or_default().to_owned(),
            wake,
            writing: Arc::new(AtomicBool::new(false)),
            active: None,
            warned: false,
        }
    }

    /// Watches the directory now at `dir` unless already watching it.
    fn ensure(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let id = match std::fs::metadata(&self.dir) {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) => {
                self.active = None;
                self.warn_once(&e);
                return;
            }
        };
        if self
            .active
            .as_ref()
            .is_some_and(|(_, watched)| *watched == id)
        {
            return;
        }
        match self.start() {
            Ok(watcher) => {
                if self.active.is_some() {
                    tracing::info!(dir = %self.dir.display(), "config directory replaced; watching the new one");
                }
                self.active = Some((watcher, id));
                self.warned = false;
                // Whatever changed while no watch was in place is caught by
                // the poll that called us.
            }
            Err(e) => {
                self.active = None;
                self.warn_once(&e);
            }
        }
    }

    fn start(&self) -> notify::Result<notify::RecommendedWatcher> {
        let dir = self.dir.clone();
        let name = self.name.clone();
        let wake = Arc::clone(&self.wake);
        let writing = Arc::clone(&self.writing);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            let relevant = match &event {
                Ok(event) => concerns_config(event, &dir, &name),
                // Lost events (queue overflow) and the like: look again.
                Err(_) => true,
            };
            if relevant {
                if let Ok(event) = &event {
                    match event.kind {
                        EventKind::Modify(ModifyKind::Data(_)) => {
                            writing.store(true, Ordering::SeqCst)
                        }
                        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                            writing.store(false, Ordering::SeqCst)
                        }
                        _ => {}
                    }
                }
                wake.notify_one();
            }
        })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }

    /// Waits, for at most [`WRITER_GRACE`], until an in-place rewrite of
    /// the file is closed. Renames and symlink swaps never wait.
    async fn writer_done(&self) {
        let deadline = tokio::time::Instant::now() + WRITER_GRACE;
        while self.writing.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // A close we never saw (lost events) must not slow every later check.
        self.writing.store(false, Ordering::SeqCst);
    }

    fn warn_once(&mut self, error: &dyn std::fmt::Display) {
        if !self.warned {
            tracing::warn!(
                dir = %self.dir.display(),
                %error,
                "cannot watch the config directory; checking the file every {}s instead",
                POLL_EVERY.as_secs()
            );
            self.warned = true;
        }
    }
}

/// Whether an event in the config directory may have changed what the
/// config path reads. Other files there (a mismatch log, an editor's swap
/// file) are ignored, and so are opens and reads (our own included: reacting
/// to them would loop).
fn concerns_config(event: &Event, dir: &Path, name: &OsStr) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    if event.paths.is_empty() || event.need_rescan() {
        return true;
    }
    // A symlinked config (the ConfigMap layout) changes when the first
    // entry its link goes through is replaced, e.g. `..data`.
    let via = link_head(dir, name);
    event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n == name || via.as_deref() == Some(n))
    })
}

/// The first directory entry under `dir` that the symlink `dir/name` goes
/// through, if it is a symlink leading into `dir`.
fn link_head(dir: &Path, name: &OsStr) -> Option<OsString> {
    let target = std::fs::read_link(dir.join(name)).ok()?;
    let inside = if target.is_absolute() {
        target.strip_prefix(dir).ok()?.to_path_buf()
    } else {
        target
    };
    match inside.components().next()? {
        Component::Normal(first) => Some(first.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, RenameMode};

    fn event(kind: EventKind, paths: &[&Path]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(p.to_path_buf());
        }
        e
    }

    #[test]
    fn only_events_about_the_config_matter() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let name = OsStr::new("pgshift.yaml");
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(concerns_config(
            &event(rename, &[&d.join("pgshift.yaml")]),
            d,
            name
        ));
        assert!(!concerns_config(
            &event(rename, &[&d.join("mismatches.jsonl")]),
            d,
            name
        ));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!concerns_config(
            &event(open, &[&d.join("pgshift.yaml")]),
            d,
            name
        ));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(concerns_config(
            &event(closed, &[&d.join("pgshift.yaml")]),
            d,
            name
        ));
        assert!(concerns_config(&event(EventKind::Any, &[]), d, name));
    }

    #[test]
    fn a_configmap_swap_concerns_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_01_01")).unwrap();
        std::fs::write(d.join("..2026_01_01/pgshift.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("..2026_01_01", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/pgshift.yaml", d.join("pgshift.yaml")).unwrap();
        let name = OsStr::new("pgshift.yaml");
        assert_eq!(link_head(d, name).as_deref(), Some(OsStr::new("..data")));
        let swap = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(concerns_config(
            &event(swap, &[&d.join("..data_tmp"), &d.join("..data")]),
            d,
            name
        ));
        let created = EventKind::Create(CreateKind::Folder);
        assert!(!concerns_config(
            &event(created, &[&d.join("..2026_01_02")]),
            d,
            name
        ));
    }
}
