//! `serve`'s background loops: rotations' grace periods, purges of deleted workspaces, the
//! local server's archive backups. Each runs on a thread of its own until the process exits,
//! and never dies silently.

use dl_tenancy_ctl::Tenancy;
use std::time::Duration;

/// Ends rotations' grace periods as they run out, so that a previous login's open sessions
/// do not outlive its grace by more than [`dl_tenancy_ctl::GRACE_SWEEP_INTERVAL`]. Runs until the
/// process exits; a failed round is logged and retried.
pub(crate) fn spawn_grace_sweeper(tenancy: Tenancy) {
    spawn_sweeper(
        "grace",
        dl_tenancy_ctl::GRACE_SWEEP_INTERVAL,
        false,
        move || {
            let revoked = tenancy.expire_grace_periods()?;
            if !revoked.is_empty() {
                tracing::info!(logins = revoked.len(), "grace periods ended");
            }
            Ok(())
        },
    );
}

/// Purges deleted workspaces whose retention is over ([`Tenancy::purge_expired`]): a round
/// at start, then every `interval`. Runs until the process exits; a failed round is logged
/// and retried.
pub(crate) fn spawn_purge_sweeper(tenancy: Tenancy, interval: Duration) {
    spawn_sweeper("purge", interval, true, move || {
        for p in tenancy.purge_expired()? {
            tracing::info!(workspace = %p.workspace, "deleted workspace purged");
        }
        Ok(())
    });
}

/// Backs up the local server's archive every `interval` ([`Tenancy::archive_backup`]; the
/// first one an interval after start). Runs until the process exits; a failed round is
/// logged and retried at the next.
pub(crate) fn spawn_backup_scheduler(
    tenancy: Tenancy,
    interval: Duration,
    kind: dl_tenancy_ctl::BackupKind,
) {
    spawn_sweeper("backup", interval, false, move || {
        let status = tenancy.archive_backup(kind)?;
        if let Some(b) = status.last_backup {
            tracing::info!(label = %b.label, kind = %b.kind, "archive backup taken");
        }
        Ok(())
    });
}

/// A background loop that never dies silently: a round that fails, or panics (a client
/// library can panic when the process runs out of file descriptors), is logged, and the
/// next round runs after `interval` as usual.
fn spawn_sweeper(
    name: &'static str,
    interval: Duration,
    first_at_once: bool,
    mut round: impl FnMut() -> dl_tenancy_ctl::Result<()> + Send + 'static,
) {
    std::thread::spawn(move || {
        if !first_at_once {
            std::thread::sleep(interval);
        }
        loop {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut round)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(sweeper = name, code = e.code.as_str(), "round failed")
                }
                Err(_) => tracing::error!(sweeper = name, "round panicked; retrying"),
            }
            std::thread::sleep(interval);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round that panics or fails does not end the loop: the next round still runs.
    #[test]
    fn a_sweeper_survives_a_panicking_round() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut round = 0;
        spawn_sweeper("test", Duration::from_millis(1), true, move || {
            round += 1;
            match round {
                1 => panic!("out of file descriptors"),
                2 => Err(dl_tenancy_ctl::Error::new(
                    dl_tenancy_ctl::ErrorCode::Internal,
                    "a failed round",
                )),
                n => {
                    let _ = tx.send(n);
                    Ok(())
                }
            }
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(3));
    }
}
