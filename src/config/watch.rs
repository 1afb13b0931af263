//! Watches what the gateway reloads from — folders (`routes_dir`, each `certs_dir`) and single
//! files that may live elsewhere (a `client_ca` bundle) — and turns bursts of file-system events
//! into one reload request each, after 200 ms of quiet: an editor's save is often
//! several events (write, rename, chmod) and a `cp -r` many more.
//!
//! A watch is on an inode, not on a name: when a watched folder is deleted the kernel drops its
//! watch, and when it is renamed away the watch follows the old folder. So the parent of each
//! watched folder is watched too (not recursively), for that one name only: when the name is
//! created, deleted or renamed, the folder is watched again under its name once the burst is
//! over (if it exists then), and a reload follows. A folder deleted and created again, or a new
//! folder renamed into place, is therefore picked up without SIGHUP. A single file is watched
//! through its folder, which is re-watched the same way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// The reload debounce (README, "Change a route while it runs").
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
#[derive(Debug)]
pub struct FolderWatch {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
}

/// What one watch cares about, as absolute paths (events name paths the way they were watched).
#[derive(Debug)]
struct Interest {
    /// Every entry of these folders.
    folders: Vec<PathBuf>,
    /// These files only (their folders are watched, their siblings ignored).
    files: Vec<PathBuf>,
    /// The folders watched directly: `folders` and the folder of each file.
    watched: BTreeSet<PathBuf>,
}

impl Interest {
    fn new(folders: &[&Path], files: &[&Path]) -> Interest {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let folders: Vec<PathBuf> = folders.iter().map(|f| abs(f)).collect();
        let files: Vec<PathBuf> = files.iter().map(|f| abs(f)).collect();
        let watched = folders
            .iter()
            .cloned()
            .chain(files.iter().filter_map(|f| f.parent().map(Path::to_owned)))
            .collect();
        Interest { folders, files, watched }
    }

    /// The parents of the watched folders, watched for those folders' names.
    fn anchors(&self) -> BTreeSet<PathBuf> {
        self.watched.iter().filter_map(|w| w.parent().map(Path::to_owned)).collect()
    }

    /// Whether an event on `path` matters: an entry of a folder, one of the files, or a
    /// watched folder itself (created, deleted, renamed).
    fn wants(&self, path: &Path) -> bool {
        self.watched.contains(path)
            || self.files.iter().any(|f| f == path)
            || path.parent().is_some_and(|p| self.folders.iter().any(|f| f == p))
    }
}

/// Watch `folders` (every entry, not recursively) and `files` (through their folders).
/// `on_change` is sent one `()` per debounced burst. A folder missing now is watched once it
/// appears.
pub fn watch(folders: &[&Path], files: &[&Path], on_change: mpsc::Sender<()>) -> notify::Result<FolderWatch> {
    let interest = Arc::new(Interest::new(folders, files));
    // Each relevant event sends the watched folders it names (empty for an entry's change).
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let filter = Arc::clone(&interest);
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
        Ok(ev) if !matches!(ev.kind, EventKind::Access(_)) => {
            if ev.paths.iter().any(|p| filter.wants(p)) {
                let touched = ev.paths.into_iter().filter(|p| filter.watched.contains(p)).collect();
                let _ = raw_tx.send(touched);
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    })?;
    let watcher = Arc::new(Mutex::new(watcher));
    {
        let mut w = watcher.lock().unwrap_or_else(|p| p.into_inner());
        for dir in &interest.watched {
            match w.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {}
                // Watched when it is created.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        for parent in interest.anchors() {
            if let Err(e) = w.watch(&parent, RecursiveMode::NonRecursive) {
                tracing::warn!(
                    error = %e,
                    dir = %parent.display(),
                    "cannot watch this folder: a folder in it that is deleted and created again \
                     needs SIGHUP or POST /reload"
                );
            }
        }
    }
    let weak = Arc::downgrade(&watcher);
    tokio::spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            let mut touched: BTreeSet<PathBuf> = first.into_iter().collect();
            // Wait until the burst is over: no event for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(more)) => touched.extend(more),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            rewatch(&weak, &touched);
            if on_change.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(FolderWatch { _watcher: watcher })
}

/// Watch each of `dirs` again under its name: drop the watch on whatever inode it had (gone,
/// or renamed away), and watch the folder that has the name now, if any.
fn rewatch(watcher: &Weak<Mutex<RecommendedWatcher>>, dirs: &BTreeSet<PathBuf>) {
    let Some(watcher) = watcher.upgrade() else { return };
    let mut w = watcher.lock().unwrap_or_else(|p| p.into_inner());
    for dir in dirs {
        // Already gone when the kernel dropped the watch with a deleted folder.
        let _ = w.unwatch(dir);
        if !dir.is_dir() {
            continue;
        }
        match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => tracing::info!(dir = %dir.display(), "watching the folder again"),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    dir = %dir.display(),
                    "cannot watch the folder again; reload with SIGHUP or POST /reload"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_folders_their_entries_and_the_files_matter() {
        let i = Interest::new(&[Path::new("/etc/sy/certs")], &[Path::new("/etc/sy/trust/ca.pem")]);
        for wanted in ["/etc/sy/certs", "/etc/sy/certs/a.crt", "/etc/sy/trust", "/etc/sy/trust/ca.pem"] {
            assert!(i.wants(Path::new(wanted)), "{wanted}");
        }
        // Siblings in a watched parent (an access log next to the folders) cause no reload.
        for ignored in ["/etc/sy/access.log", "/etc/sy/trust/other.pem", "/etc/sy/certs/sub/a.crt", "/etc"] {
            assert!(!i.wants(Path::new(ignored)), "{ignored}");
        }
        let anchors: Vec<_> = i.anchors().into_iter().collect();
        assert_eq!(anchors, [PathBuf::from("/etc/sy")]);
    }
}
