//! Keep a fleet gateway on the published set: watch `version`, read the whole set, apply it
//! through the [`Reloader`] (the same validation and atomic swap as a `routes_dir` reload),
//! write `routes_cache`, and keep the member record current.
//!
//! A set that fails validation is not applied, and not tried again until a newer version is
//! published (or `POST /reload` asks); its first error shows in `GET /config`, `GET /fleet`
//! and the member record. A source that fails (unreachable, session lost) keeps the running
//! set; the failure is counted in `switchyard_routes_source_errors_total`, shown, and retried
//! with a jittered backoff from 1 s to 10 s.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{cache, held, set_label, Fleet, Published};
use crate::snapshot::Reloader;

/// Follow the source until `stop`; then remove the member record. The returned task ends
/// once the record is gone (or after 2 s).
pub(crate) fn spawn(
    fleet: Arc<Fleet>,
    reloader: Arc<Reloader>,
    cache: Option<PathBuf>,
    fresh: Option<Published>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let keep_alive = {
        let (fleet, stop) = (Arc::clone(&fleet), stop.clone());
        async move {
            let mut tick = tokio::time::interval(super::consul::RENEW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = fleet.store.keep_alive(&fleet.member().id).await {
                    tracing::warn!(error = %e, "fleet registration");
                    fleet.wake.notify_one();
                }
            }
        }
    };
    tokio::spawn(keep_alive);
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = async {
                // The set the gateway started with, when it came from the source.
                if let Some(p) = fresh {
                    write_cache(&cache, p).await;
                }
                run(&fleet, &reloader, cache).await
            } => {}
        }
        fleet.store.close(&fleet.member().id).await;
    })
}

async fn run(fleet: &Fleet, reloader: &Arc<Reloader>, cache: Option<PathBuf>) {
    // Up to 10 s (discovery goes to 30 s): a read of the fleet's set is cheap, and a fleet
    // should pick up a publish soon after its source is back.
    let mut backoff = crate::backoff::Backoff::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(10),
        crate::backoff::Jitter::Spread(0.2),
    );
    // A version refused once is not validated again until something changes.
    let mut refused: Option<u64> = *fleet.refused_at_start.lock().unwrap_or_else(|e| e.into_inner());
    let mut written: Option<super::Member> = None;
    loop {
        let read = fleet.store.read().await;
        let failed = match read {
            Ok(Some(p)) => {
                fleet.source_ok();
                fleet.set_published(p.version);
                if Some(p.version) != fleet.applied_version() && Some(p.version) != refused {
                    refused = apply(fleet, reloader, &cache, p).await;
                }
                None
            }
            Ok(None) => {
                fleet.source_ok();
                None
            }
            Err(e) => Some(e),
        };
        let member = fleet.member();
        let failed = match failed {
            None if written.as_ref() != Some(&member) || fleet.store.needs_register().await => {
                // A failed registration is retried with the same backoff as a failed read.
                match fleet.store.register(&member).await {
                    Ok(()) => {
                        written = Some(member);
                        None
                    }
                    Err(e) => Some(e),
                }
            }
            failed => failed,
        };
        let failed = match failed {
            Some(e) => Some(e),
            None => tokio::select! {
                r = fleet.store.wait(fleet.published_version()) => r.err(),
                _ = fleet.nudge.notified() => {
                    refused = None;
                    None
                }
                _ = fleet.wake.notified() => None,
            },
        };
        match failed {
            Some(e) => {
                fleet.source_failed(e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = fleet.nudge.notified() => refused = None,
                    _ = fleet.wake.notified() => {}
                }
            }
            None => backoff.reset(),
        }
    }
}

/// Validate and serve `p`; returns its version when it was refused.
async fn apply(
    fleet: &Fleet,
    reloader: &Arc<Reloader>,
    cache: &Option<PathBuf>,
    p: Published,
) -> Option<u64> {
    let files = held(&fleet.source, &p);
    let label = set_label(&fleet.source);
    let r = Arc::clone(reloader);
    let result = tokio::task::spawn_blocking(move || r.apply(label, files)).await;
    match result {
        Ok(Ok(_)) => {
            tracing::info!(version = p.version, "applied the published route set");
            fleet.set_applied(Some(p.version), None);
            write_cache(cache, p).await;
            None
        }
        Ok(Err(errs)) => {
            let first = errs.0.first().map(ToString::to_string).unwrap_or_default();
            tracing::error!(version = p.version, error = %first, "the published route set is invalid; the running routes keep serving");
            fleet.set_applied(None, Some(first));
            Some(p.version)
        }
        Err(e) => {
            fleet.set_applied(None, Some(e.to_string()));
            Some(p.version)
        }
    }
}

/// Replace `routes_cache` (if there is one) with `p`.
async fn write_cache(cache: &Option<PathBuf>, p: Published) {
    let Some(dir) = cache.clone() else { return };
    let written = tokio::task::spawn_blocking(move || cache::write(&dir, &p).map_err(|e| (dir, e))).await;
    if let Ok(Err((dir, e))) = written {
        tracing::warn!(cache = %dir.display(), error = %e, "cannot write routes_cache");
    }
}
