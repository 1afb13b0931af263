//! Watches folders (`routes_dir`, later `certs_dir`) and turns bursts of file-system events into
//! one reload request each, after 200 ms of quiet (SPEC 2.4): an editor's save is often
//! several events (write, rename, chmod) and a `cp -r` many more.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// SPEC 2.4's debounce.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
#[derive(Debug)]
pub struct FolderWatch {
    _watcher: RecommendedWatcher,
}

/// Watch `dirs` (not recursively). `on_change` is sent one `()` per debounced burst.
pub fn watch(dirs: &[&Path], on_change: mpsc::Sender<()>) -> notify::Result<FolderWatch> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
        Ok(ev) if !matches!(ev.kind, EventKind::Access(_)) => {
            let _ = raw_tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    })?;
    for d in dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Wait until the burst is over: no event for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if on_change.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(FolderWatch { _watcher: watcher })
}
