//! Fleet upgrade: `ALTER EXTENSION dl_tenancy UPDATE` in every workspace database.
//!
//! Each workspace is upgraded in its own transaction (the ALTER EXTENSION itself), so no
//! workspace waits for another; a failure is recorded in the control database and the run goes
//! on; running it again retries what failed and skips what is already at the target. A canary
//! stage upgrades the first K workspaces one by one and stops the run if one of them fails.

use crate::server::catalog::extension_version;

use crate::base::connection::connect;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::names::EXTENSION;
use crate::domain::types::Server;
use crate::ops::Tenancy;
use postgres::Client;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);

/// What to upgrade: one workspace or all active ones.
#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    /// Target version; `None`: each server's default (newest installed) version.
    pub to: Option<String>,
    /// One workspace; `None`: every active workspace.
    pub workspace: Option<String>,
    /// Workspaces upgraded at once (after the canaries).
    pub parallel: usize,
    /// Workspaces upgraded first, one at a time; a failure among them stops the run (a busy
    /// one does not).
    pub canary: usize,
    /// `lock_timeout` of one attempt ([`DEFAULT_LOCK_TIMEOUT_MS`]).
    pub lock_timeout_ms: u64,
    /// Attempts before a workspace whose locks stay taken counts as `busy`
    /// ([`DEFAULT_LOCK_ATTEMPTS`]).
    pub lock_attempts: u32,
}

/// The outcome for one workspace.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceUpgrade {
    pub workspace: String,
    pub server_id: String,
    pub from_version: Option<String>,
    pub to_version: String,
    /// `upgraded`, `already_current`, `busy` (every attempt timed out waiting for a lock a
    /// customer transaction held: run the upgrade again), `failed`, or `skipped` (not tried:
    /// a canary failed).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub millis: u64,
}

/// The run's result (the JSON `dl-tenancy upgrade` prints).
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeReport {
    pub total: usize,
    pub upgraded: usize,
    pub already_current: usize,
    pub busy: usize,
    pub failed: usize,
    pub skipped: usize,
    pub canary_failed: bool,
    pub workspaces: Vec<WorkspaceUpgrade>,
}

/// Progress, for a terminal front end.
pub enum UpgradeEvent<'a> {
    Started { total: usize },
    Finished(&'a WorkspaceUpgrade),
}

struct Target {
    workspace: String,
    database: String,
    server: usize,
    version: String,
}

/// The connections one upgrade worker keeps from one workspace to the next: the control
/// database and each server's admin session (a new connection per workspace and purpose was
/// most of a no-op run's time). Dropped after a failure, so the next workspace starts clean.
#[derive(Default)]
struct WorkerSessions {
    control: Option<Client>,
    admin: BTreeMap<usize, Client>,
}

impl WorkerSessions {
    fn control(&mut self, t: &Tenancy) -> Result<&mut Client> {
        if self.control.is_none() {
            self.control = Some(t.control()?);
        }
        Ok(self.control.as_mut().expect("set above"))
    }

    /// The server's admin session. Its commits (the fences' role and database settings) do
    /// not wait for the disk: a crash may lose the last ones, and the upgrade, run again,
    /// applies them again.
    fn admin(&mut self, index: usize, server: &Server) -> Result<&mut Client> {
        if let std::collections::btree_map::Entry::Vacant(e) = self.admin.entry(index) {
            let mut admin = connect(&server.admin_conn, None)?;
            admin.batch_execute("SET synchronous_commit = off")?;
            e.insert(admin);
        }
        Ok(self.admin.get_mut(&index).expect("set above"))
    }
}

fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Tenancy {
    /// Upgrade the extension in the chosen workspaces; see the module documentation.
    pub fn upgrade(
        &self,
        options: &UpgradeOptions,
        on_event: &(dyn Fn(UpgradeEvent) + Sync),
    ) -> Result<UpgradeReport> {
        if let Some(to) = &options.to {
            if !valid_version(to) {
                return Err(invalid(format!(
                    "version {to:?} is not of the form MAJOR.MINOR.PATCH"
                )));
            }
        }
        let mut ctl = self.control()?;
        // A control database made by an older tool lacks workspace_upgrades; the schema is
        // idempotent, and an upgrade is what runs right after the tool itself was updated.
        let rows = match &options.workspace {
            Some(ws) => {
                crate::domain::names::validate_workspace_id(ws)?;
                let rows = ctl.query(
                    "SELECT id, server_id, database_name FROM workspaces WHERE id = $1 AND state = 'active'",
                    &[ws],
                )?;
                if rows.is_empty() {
                    return Err(Error::new(
                        ErrorCode::NotProvisioned,
                        format!("workspace {ws} is not active; provision it first"),
                    ));
                }
                rows
            }
            None => ctl.query(
                "SELECT id, server_id, database_name FROM workspaces WHERE state = 'active' ORDER BY id",
                &[],
            )?,
        };

        // Each server's target version, checked to be installed there.
        let mut servers: Vec<Server> = Vec::new();
        let mut server_index: BTreeMap<String, usize> = BTreeMap::new();
        let mut versions: Vec<String> = Vec::new();
        let mut targets = Vec::with_capacity(rows.len());
        for row in &rows {
            let server_id: String = row.get(1);
            let index = match server_index.get(&server_id) {
                Some(&i) => i,
                None => {
                    let server = self.load_server(&mut ctl, &server_id)?;
                    versions.push(target_version(&server, options.to.as_deref())?);
                    servers.push(server);
                    server_index.insert(server_id, servers.len() - 1);
                    servers.len() - 1
                }
            };
            targets.push(Target {
                workspace: row.get(0),
                database: row.get(2),
                server: index,
                version: versions[index].clone(),
            });
        }
        drop(ctl);

        on_event(UpgradeEvent::Started {
            total: targets.len(),
        });
        let results: Mutex<Vec<WorkspaceUpgrade>> = Mutex::new(Vec::with_capacity(targets.len()));
        let finish = |result: WorkspaceUpgrade| {
            on_event(UpgradeEvent::Finished(&result));
            results.lock().unwrap().push(result);
        };

        let canaries = options.canary.min(targets.len());
        let mut canary_failed = false;
        let mut kept = WorkerSessions::default();
        for target in &targets[..canaries] {
            let result = self.upgrade_one(&servers[target.server], target, options, &mut kept);
            canary_failed |= result.status == "failed";
            finish(result);
            if canary_failed {
                break;
            }
        }
        let tried = results.lock().unwrap().len();
        if canary_failed {
            for target in &targets[tried..] {
                finish(skipped(&servers[target.server], target));
            }
        } else {
            let rest = &targets[tried..];
            let next = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..options.parallel.clamp(1, 32).min(rest.len().max(1)) {
                    scope.spawn(|| {
                        let mut kept = WorkerSessions::default();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(target) = rest.get(i) else { break };
                            let server = &servers[target.server];
                            finish(self.upgrade_one(server, target, options, &mut kept));
                        }
                    });
                }
            });
        }

        // New workspaces start at the newest version: refresh each server's template (and
        // its pooler lookup database).
        for server in &servers {
            if options.to.is_none() {
                self.prepare_server(&server.id)?;
            }
        }

        let mut workspaces = results.into_inner().unwrap();
        workspaces.sort_by(|a, b| a.workspace.cmp(&b.workspace));
        let count = |status: &str| workspaces.iter().filter(|w| w.status == status).count();
        Ok(UpgradeReport {
            total: workspaces.len(),
            upgraded: count("upgraded"),
            already_current: count("already_current"),
            busy: count("busy"),
            failed: count("failed"),
            skipped: count("skipped"),
            canary_failed,
            workspaces,
        })
    }

    fn upgrade_one(
        &self,
        server: &Server,
        target: &Target,
        options: &UpgradeOptions,
        kept: &mut WorkerSessions,
    ) -> WorkspaceUpgrade {
        let started = Instant::now();
        let mut from_version = None;
        let outcome = (|| -> Result<&'static str> {
            let mut db = connect(&server.admin_conn, Some(&target.database))?;
            from_version = extension_version(&mut db)?;
            if from_version.as_deref() != Some(target.version.as_str()) {
                alter_extension_patiently(&mut db, &target.version, options)?;
            }
            // The per-workspace fences of this tool version (0.4.0 brought them to
            // workspaces provisioned before).
            let names = crate::domain::names::WorkspaceNames::recorded(
                &target.workspace,
                &target.database,
            )?;
            let limits =
                crate::control::records::workspace_limits(kept.control(self)?, &target.workspace)?;
            crate::server::roles::fence(kept.admin(target.server, server)?, &names, &limits)?;
            Ok(
                if from_version.as_deref() == Some(target.version.as_str()) {
                    "already_current"
                } else {
                    "upgraded"
                },
            )
        })();
        if outcome.is_err() {
            *kept = WorkerSessions::default();
        }
        let status = match &outcome {
            Ok(status) => status,
            Err(e) if e.sqlstate() == Some(LOCK_NOT_AVAILABLE) => "busy",
            Err(_) => "failed",
        };
        let result = WorkspaceUpgrade {
            workspace: target.workspace.clone(),
            server_id: server.id.clone(),
            from_version,
            to_version: target.version.clone(),
            status: status.to_string(),
            error: outcome.err().map(|e| match e.sqlstate() {
                Some(LOCK_NOT_AVAILABLE) => format!(
                    "busy: a customer transaction held a lock the upgrade needs through {} attempts of {} ms; run the upgrade again",
                    options.lock_attempts.max(1),
                    options.lock_timeout_ms
                ),
                _ => e.to_string(),
            }),
            millis: started.elapsed().as_millis() as u64,
        };
        if let Err(e) = self.record_upgrade(kept, &result) {
            *kept = WorkerSessions::default();
            // The upgrade itself happened (or not) regardless; say why it is not recorded.
            let mut result = result;
            result.error = Some(format!(
                "{}; not recorded in the control database: {e}",
                result.error.as_deref().unwrap_or(&result.status)
            ));
            return result;
        }
        result
    }

    fn record_upgrade(&self, kept: &mut WorkerSessions, result: &WorkspaceUpgrade) -> Result<()> {
        let done = result.status == "upgraded" || result.status == "already_current";
        let ctl = kept.control(self)?;
        ctl.execute(
            "INSERT INTO workspace_upgrades (workspace_id, from_version, to_version, state, error_message, attempts)
             VALUES ($1, $2, $3, $4, $5, 1)
             ON CONFLICT (workspace_id) DO UPDATE
                SET from_version = EXCLUDED.from_version, to_version = EXCLUDED.to_version,
                    state = EXCLUDED.state, error_message = EXCLUDED.error_message,
                    attempts = workspace_upgrades.attempts + 1, updated_at = now()",
            &[
                &result.workspace,
                &result.from_version,
                &result.to_version,
                &if done { "succeeded" } else { "failed" },
                &result.error,
            ],
        )?;
        if done {
            ctl.execute(
                "UPDATE workspaces SET extension_version = $2, updated_at = now() WHERE id = $1",
                &[&result.workspace, &result.to_version],
            )?;
        }
        Ok(())
    }
}

/// SQLSTATE of a `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// `ALTER EXTENSION ... UPDATE TO version`, each attempt bounded by the lock timeout; a lock
/// timeout (a customer transaction in the way) is retried with a doubling wait, any other
/// error returned at once.
fn alter_extension_patiently(
    db: &mut Client,
    version: &str,
    options: &UpgradeOptions,
) -> Result<()> {
    let mut wait = FIRST_RETRY_WAIT;
    let mut attempt = 1;
    loop {
        let res = db.batch_execute(&format!(
            "SET lock_timeout = {}; ALTER EXTENSION {EXTENSION} UPDATE TO '{version}'; RESET lock_timeout",
            // A validated MAJOR.MINOR.PATCH (digits and dots), and a number.
            options.lock_timeout_ms
        ));
        match res.map_err(Error::from) {
            Err(e)
                if e.sqlstate() == Some(LOCK_NOT_AVAILABLE) && attempt < options.lock_attempts =>
            {
                std::thread::sleep(wait);
                wait *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn skipped(server: &Server, target: &Target) -> WorkspaceUpgrade {
    WorkspaceUpgrade {
        workspace: target.workspace.clone(),
        server_id: server.id.clone(),
        from_version: None,
        to_version: target.version.clone(),
        status: "skipped".into(),
        error: Some("not tried: a canary failed".into()),
        millis: 0,
    }
}

/// `to`, checked to be installable on the server, or the server's default version.
fn target_version(server: &Server, to: Option<&str>) -> Result<String> {
    let mut admin = connect(&server.admin_conn, None)?;
    match to {
        Some(version) => {
            let available = admin
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_available_extension_versions WHERE name = $1 AND version = $2",
                    &[&EXTENSION, &version],
                )?
                .is_some();
            if available {
                Ok(version.to_string())
            } else {
                Err(Error::new(
                    ErrorCode::ExtensionUnavailable,
                    format!(
                        "dl_tenancy {version} is not installed on server {}",
                        server.id
                    ),
                ))
            }
        }
        None => admin
            .query_opt(
                "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                &[&EXTENSION],
            )?
            .map(|r| r.get(0))
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::ExtensionUnavailable,
                    format!("dl_tenancy is not installed on server {}", server.id),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_version;

    #[test]
    fn versions() {
        assert!(valid_version("0.2.0"));
        assert!(valid_version("10.20.30"));
        for bad in [
            "",
            "0.2",
            "0.2.0.1",
            "0.2.x",
            "0.2.0'; DROP",
            "a.b.c",
            "0..1",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }
}
