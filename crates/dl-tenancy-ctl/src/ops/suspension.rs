//! Soft delete: `deprovision` suspends a workspace (logins refused at once, data kept for a
//! retention period), `undelete` brings it back with fresh credentials, `purge` (or the sweep
//! `serve` runs) drops it for good.
//!
//! Every step records its state in the control database *before* it touches the server, so a
//! crash at any point leaves a state that refuses the tenant and that re-running the same
//! command finishes:
//!
//! | command | 1. control database | 2. server | 3. control database |
//! |---|---|---|---|
//! | `deprovision` | `suspended` + purge time, credentials deleted, tokens revoked | logins NOLOGIN without password, CONNECT revoked, sessions ended | - |
//! | `undelete` | `provisioning`, suspension cleared | `provision`'s repair: CONNECT back, fresh passwords | `active` |
//! | `purge` | `purging` | database and roles dropped | `deleted` |

use crate::server::roles::drop_database_and_roles;

use crate::control::records::leave_suspension;
use crate::domain::state::WorkspaceState;

use crate::server::roles::shut_out;

use crate::control::records::record_event;
use crate::domain::limits::DEFAULT_RETENTION_SECONDS;
use crate::domain::limits::MAX_RETENTION_SECONDS;

use crate::base::connection::connect;
use crate::base::secret::random_password;
use crate::control::lock::with_workspace_lock;
use crate::control::records::record_failure;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::names::credential_aad;
use crate::domain::names::EXTENSION;
use crate::domain::names::{validate_workspace_id, Kind, Slot, WorkspaceNames};
use crate::domain::types::{Deprovisioned, Suspension, WorkspaceStatus};
use crate::ops::Tenancy;
use crate::server::catalog::database_exists;
use postgres::Client;

fn confirm_matches(ws: &str, confirm: &str, what: &str) -> Result<()> {
    if confirm == ws {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::ConfirmationRequired,
            format!("{what}: pass --confirm {ws}"),
        ))
    }
}

impl Tenancy {
    /// `deprovision` with the default retention ([`DEFAULT_RETENTION_SECONDS`]).
    pub fn deprovision(&self, workspace: &str, confirm: &str) -> Result<Suspension> {
        self.suspend(workspace, confirm, DEFAULT_RETENTION_SECONDS)
    }

    /// `deprovision --retention`: suspend the workspace. It is recorded `suspended` (with the
    /// time after which the sweep purges it) before anything else, its stored credentials and
    /// API tokens are deleted, then its logins are refused and its sessions ended. Repeating
    /// it repeats the shutting out (a crash half-way is finished so) and keeps the first
    /// purge time. `confirm` must repeat the workspace id.
    pub fn suspend(
        &self,
        workspace: &str,
        confirm: &str,
        retention_seconds: u64,
    ) -> Result<Suspension> {
        validate_workspace_id(workspace)?;
        confirm_matches(
            workspace,
            confirm,
            "deprovision deletes the workspace (its data is kept for the retention period)",
        )?;
        if retention_seconds > MAX_RETENTION_SECONDS {
            return Err(invalid(format!(
                "retention longer than {MAX_RETENTION_SECONDS} s (366 days)"
            )));
        }
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            self.suspend_locked(ctl, workspace, retention_seconds)
        })
    }

    fn suspend_locked(&self, ctl: &mut Client, ws: &str, retention: u64) -> Result<Suspension> {
        let row = recorded(ctl, ws)?;
        let Some(row) = row.filter(|r| r.state != WorkspaceState::Deleted) else {
            return Ok(Suspension::nothing(ws));
        };
        let state = row.state;
        let names = WorkspaceNames::recorded(ws, &row.database)?;
        if !state.is_suspended() {
            // Which login of each kind was live: undelete brings the other one back, whose
            // pool PgBouncer has not marked as failing (server_login_retry).
            let slots: serde_json::Map<String, serde_json::Value> = ctl
                .query(
                    "SELECT kind, slot FROM credentials WHERE workspace_id = $1 AND active",
                    &[&ws],
                )?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1).into()))
                .collect();
            let mut tx = ctl.transaction()?;
            tx.execute(
                "UPDATE workspaces SET state = 'suspended', error_message = NULL,
                        suspended_at = now(),
                        purge_after = now() + pg_catalog.make_interval(secs => $2::float8),
                        updated_at = now()
                  WHERE id = $1",
                &[&ws, &(retention as f64)],
            )?;
            tx.execute("DELETE FROM credentials WHERE workspace_id = $1", &[&ws])?;
            tx.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE workspace_id = $1 AND revoked_at IS NULL",
                &[&ws],
            )?;
            record_event(
                &mut tx,
                ws,
                "suspend",
                serde_json::json!({
                    "from_state": state.as_str(),
                    "retention_seconds": retention,
                    "active_slots": slots,
                }),
            )?;
            tx.commit()?;
        }
        crate::ops::fault_point("after_suspend_record");
        let server = self.load_server(ctl, &row.server_id)?;
        let ended = shut_out(&mut connect(&server.admin_conn, None)?, &names)?;
        let times = ctl.query_one(
            "SELECT state, suspended_at::text, purge_after::text,
                    extract(epoch FROM purge_after - suspended_at)::float8
               FROM workspaces WHERE id = $1",
            &[&ws],
        )?;
        Ok(Suspension {
            workspace: ws.into(),
            status: "suspended".into(),
            database: Some(names.database()),
            server_id: Some(server.id),
            suspended_at: times.get(1),
            purge_after: times.get(2),
            retention_seconds: times.get::<_, Option<f64>>(3).map(|s| s.round() as u64),
            sessions_ended: ended,
        })
    }

    /// `undelete`: a suspended workspace back to `active`, with its data and fresh passwords
    /// (the stored ones were deleted at suspension; API tokens stay revoked: issue new ones).
    /// Recorded `provisioning` first, then finished by `provision`'s repair; a re-run after a
    /// crash finishes it. Refused once a purge has started, or when the database is gone.
    pub fn undelete(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            let res = self.undelete_locked(ctl, workspace);
            if let Err(e) = &res {
                record_failure(ctl, workspace, e);
            }
            res
        })
    }

    fn undelete_locked(&self, ctl: &mut Client, ws: &str) -> Result<WorkspaceStatus> {
        let row = recorded(ctl, ws)?;
        match row.as_ref().map(|r| r.state) {
            Some(WorkspaceState::Suspended) => {}
            // Undeleted already, or an undelete stopped half-way: provision finishes it.
            Some(WorkspaceState::Provisioning | WorkspaceState::Error | WorkspaceState::Active) => {
                return self.provision_locked(ctl, ws)
            }
            Some(WorkspaceState::Purging) => {
                return Err(Error::new(
                    ErrorCode::NotSuspended,
                    format!("workspace {ws} is being purged; its data cannot come back"),
                ))
            }
            _ => {
                return Err(Error::new(
                    ErrorCode::NotSuspended,
                    format!("workspace {ws} is not deleted (nothing to undelete)"),
                ))
            }
        }
        let row = row.expect("a recorded workspace");
        let names = WorkspaceNames::recorded(ws, &row.database)?;
        let server = self.load_server(ctl, &row.server_id)?;
        if !has_extension(&server.admin_conn, &names.database())? {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "the database of workspace {ws} is gone or has no {EXTENSION} extension; \
                     nothing to undelete (purge it, then provision anew)"
                ),
            ));
        }
        let mut tx = ctl.transaction()?;
        leave_suspension(&mut tx, ws, WorkspaceState::Provisioning)?;
        self.fresh_credentials(&mut tx, &names)?;
        record_event(&mut tx, ws, "undelete", serde_json::json!({}))?;
        tx.commit()?;
        crate::ops::fault_point("after_undelete_record");
        self.provision_locked(ctl, ws)
    }

    /// New passwords for an undeleted workspace, recorded as the active credentials (the
    /// provision that follows gives them to the logins), each on the login of its kind that
    /// was not live at the suspension.
    fn fresh_credentials(
        &self,
        tx: &mut postgres::Transaction<'_>,
        names: &WorkspaceNames,
    ) -> Result<()> {
        let ws = names.workspace.as_str();
        let before: Option<serde_json::Value> = tx
            .query_opt(
                "SELECT detail -> 'active_slots' FROM workspace_events
                  WHERE workspace_id = $1 AND action = 'suspend' ORDER BY id DESC LIMIT 1",
                &[&ws],
            )?
            .and_then(|r| r.get(0));
        tx.execute("DELETE FROM credentials WHERE workspace_id = $1", &[&ws])?;
        for kind in Kind::ALL {
            let was = before
                .as_ref()
                .and_then(|v| v.get(kind.as_str()))
                .and_then(|v| v.as_str())
                .and_then(Slot::parse)
                .unwrap_or(Slot::A);
            let slot = was.other();
            let (nonce, ct) = self.key.encrypt(
                random_password().as_bytes(),
                &credential_aad(ws, kind, slot),
            );
            tx.execute(
                "INSERT INTO credentials (workspace_id, kind, slot, login_name, active, nonce, ciphertext)
                 VALUES ($1, $2, $3, $4, true, $5, $6)",
                &[&ws, &kind.as_str(), &slot.as_str(), &names.login(kind, slot), &nonce, &ct],
            )?;
        }
        Ok(())
    }

    /// `purge`: drop a suspended workspace's database and roles now. Refused for a workspace
    /// that is not suspended (`deprovision` first). `confirm` must repeat the workspace id.
    /// Recorded `purging` first: a crash leaves it refused to `undelete` and finished by the
    /// next `purge` or sweep.
    pub fn purge(&self, workspace: &str, confirm: &str) -> Result<Deprovisioned> {
        validate_workspace_id(workspace)?;
        confirm_matches(
            workspace,
            confirm,
            "purge drops the workspace's data for good",
        )?;
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            self.purge_locked(ctl, workspace, "cli")
        })
    }

    /// The sweep: purge every suspended workspace whose retention is over, and finish purges
    /// that stopped half-way. `serve` runs it every [`PURGE_SWEEP_INTERVAL`]. Returns the
    /// purged workspaces; one that fails is skipped (and retried by the next sweep).
    pub fn purge_expired(&self) -> Result<Vec<Deprovisioned>> {
        let mut ctl = self.control()?;
        let due: Vec<String> = ctl
            .query(
                "SELECT id FROM workspaces
                  WHERE state = 'purging' OR (state = 'suspended' AND purge_after <= now())
                  ORDER BY purge_after, id",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut purged = vec![];
        let mut first_error = None;
        for ws in due {
            let res =
                with_workspace_lock(&mut ctl, &ws, |ctl| self.purge_locked(ctl, &ws, "sweep"));
            match res {
                // Undeleted meanwhile: nothing to do.
                Err(e) if e.code == ErrorCode::NotSuspended => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
                Ok(p) => purged.push(p),
            }
        }
        match first_error {
            Some(e) if purged.is_empty() => Err(e),
            _ => Ok(purged),
        }
    }

    fn purge_locked(&self, ctl: &mut Client, ws: &str, by: &str) -> Result<Deprovisioned> {
        let row = recorded(ctl, ws)?;
        match row.as_ref().map(|r| r.state) {
            Some(WorkspaceState::Suspended | WorkspaceState::Purging) => {}
            Some(WorkspaceState::Deleted) | None => return Ok(Deprovisioned::nothing(ws)),
            Some(_) => {
                return Err(Error::new(
                    ErrorCode::NotSuspended,
                    format!("workspace {ws} is not deleted: run deprovision first (purge drops only suspended workspaces)"),
                ))
            }
        }
        let row = row.expect("a recorded workspace");
        let names = WorkspaceNames::recorded(ws, &row.database)?;
        ctl.execute(
            "UPDATE workspaces SET state = $2, updated_at = now() WHERE id = $1 AND state = ANY($3)",
            &[&ws, &WorkspaceState::Purging.as_str(), &WorkspaceState::Purging.comes_from_text()],
        )?;
        crate::ops::fault_point("after_purge_record");
        let server = self.load_server(ctl, &row.server_id)?;
        let mut admin = connect(&server.admin_conn, None)?;
        let mut out = Deprovisioned::nothing(ws);
        out.database = Some(names.database());
        // Shut out first (a crash between the drops must not leave a login that works).
        shut_out(&mut admin, &names)?;
        let dropped = drop_database_and_roles(&server.admin_conn, &mut admin, &names)?;
        out.dropped_database = dropped.database;
        out.dropped_roles = dropped.roles;
        let mut tx = ctl.transaction()?;
        tx.execute("DELETE FROM credentials WHERE workspace_id = $1", &[&ws])?;
        tx.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE workspace_id = $1 AND revoked_at IS NULL",
            &[&ws],
        )?;
        leave_suspension(&mut tx, ws, WorkspaceState::Deleted)?;
        record_event(
            &mut tx,
            ws,
            "purge",
            serde_json::json!({"by": by, "database": names.database()}),
        )?;
        tx.commit()?;
        Ok(out)
    }
}

/// The database exists and has the extension.
fn has_extension(admin_conn: &str, db: &str) -> Result<bool> {
    if !database_exists(&mut connect(admin_conn, None)?, db)? {
        return Ok(false);
    }
    let mut c = connect(admin_conn, Some(db))?;
    Ok(c.query_opt(
        "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = $1",
        &[&EXTENSION],
    )?
    .is_some())
}

/// A workspace as the control database records it.
struct Recorded {
    server_id: String,
    state: WorkspaceState,
    database: String,
}

fn recorded(ctl: &mut Client, ws: &str) -> Result<Option<Recorded>> {
    Ok(ctl
        .query_opt(
            "SELECT server_id, state, database_name FROM workspaces WHERE id = $1",
            &[&ws],
        )?
        .map(|r| Recorded {
            server_id: r.get(0),
            state: r.get::<_, &str>(1).parse().unwrap_or(WorkspaceState::Error),
            database: r.get(2),
        }))
}
