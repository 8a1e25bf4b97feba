//! `dl-tenancy migrate-names`: gives workspaces provisioned before 0.4.0 (`ws_<id>`, which
//! every tenant could list in `pg_database` and `pg_roles`) the opaque names new workspaces
//! get (`dlw_<handle>`).
//!
//! Per workspace, under its lock: record the handle (so that a re-run after a crash renames
//! to the same names), close the database to new connections, end its sessions, rename it,
//! rename the workspace role and the four logins, reopen it, then record the new names and
//! put the fences back. Renaming keeps each login's SCRAM verifier, so passwords stay: the
//! URIs change in their user and database names only (`reveal` returns the new ones).
//! Re-runnable: every step checks what is already done.

use crate::server::catalog::end_sessions;
use crate::server::catalog::Sessions;

use crate::base::connection::connect;
use crate::base::secret::new_handle;
use crate::control::lock::with_workspace_lock;
use crate::domain::error::not_provisioned;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::names::{validate_workspace_id, WorkspaceNames, LEGACY_PREFIX, OPAQUE_PREFIX};
use crate::ops::Tenancy;
use crate::plan::quote::quote_ident;
use crate::server::catalog::{database_exists, role_exists};
use crate::server::roles::fence;
use postgres::Client;
use serde::Serialize;

/// The outcome for one workspace.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NameMigration {
    pub workspace: String,
    pub from_database: String,
    pub to_database: String,
    /// `migrated` or `already_opaque`.
    pub status: String,
}

/// What `dl-tenancy migrate-names` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NameMigrationReport {
    pub migrated: usize,
    pub already_opaque: usize,
    pub workspaces: Vec<NameMigration>,
}

impl Tenancy {
    /// Migrate one workspace (`Some`) or every recorded one (`None`) to opaque names.
    pub fn migrate_names(&self, workspace: Option<&str>) -> Result<NameMigrationReport> {
        let mut ctl = self.control()?;
        let ids: Vec<String> = match workspace {
            Some(ws) => {
                validate_workspace_id(ws)?;
                vec![ws.to_string()]
            }
            None => ctl
                .query(
                    "SELECT id FROM workspaces WHERE state <> 'deleted' ORDER BY id",
                    &[],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        let mut workspaces = Vec::with_capacity(ids.len());
        for ws in ids {
            let res = with_workspace_lock(&mut ctl, &ws, |ctl| self.migrate_one(ctl, &ws));
            workspaces.push(res?);
        }
        let count = |s: &str| workspaces.iter().filter(|w| w.status == s).count();
        Ok(NameMigrationReport {
            migrated: count("migrated"),
            already_opaque: count("already_opaque"),
            workspaces,
        })
    }

    fn migrate_one(&self, ctl: &mut Client, ws: &str) -> Result<NameMigration> {
        let row = ctl
            .query_opt(
                "SELECT server_id, database_name, handle FROM workspaces WHERE id = $1 AND state <> 'deleted'",
                &[&ws],
            )?
            .ok_or_else(|| not_provisioned(ws))?;
        let recorded: String = row.get(1);
        if recorded.starts_with(OPAQUE_PREFIX) {
            return Ok(NameMigration {
                workspace: ws.into(),
                from_database: recorded.clone(),
                to_database: recorded,
                status: "already_opaque".into(),
            });
        }
        if !recorded.starts_with(LEGACY_PREFIX) {
            return Err(invalid(format!(
                "workspace {ws} has a database name of no known scheme"
            )));
        }
        let handle = match row.get::<_, Option<String>>(2) {
            Some(handle) => handle,
            None => {
                let handle = new_handle();
                ctl.execute(
                    "UPDATE workspaces SET handle = $2, updated_at = now() WHERE id = $1",
                    &[&ws, &handle],
                )?;
                handle
            }
        };
        let old = WorkspaceNames::legacy(ws)?;
        let new = WorkspaceNames::opaque(ws, &handle)?;
        let server = self.load_server(ctl, row.get(0))?;
        let mut admin = connect(&server.admin_conn, None)?;
        rename_database(&mut admin, &old.database(), &new.database())?;
        for (from, to) in old.all_roles().iter().zip(new.all_roles()) {
            if role_exists(&mut admin, from)? && !role_exists(&mut admin, &to)? {
                admin.batch_execute(&format!(
                    "ALTER ROLE {} RENAME TO {}",
                    quote_ident(from),
                    quote_ident(&to)
                ))?;
            }
        }
        let mut tx = ctl.transaction()?;
        tx.execute(
            "UPDATE workspaces SET database_name = $2, updated_at = now() WHERE id = $1",
            &[&ws, &new.database()],
        )?;
        tx.execute(
            "UPDATE credentials SET login_name = $2 || substr(login_name, length($3) + 1)
              WHERE workspace_id = $1 AND starts_with(login_name, $3)",
            &[&ws, &new.database(), &old.database()],
        )?;
        tx.commit()?;
        fence(
            &mut admin,
            &new,
            &crate::control::records::workspace_limits(ctl, ws)?,
        )?;
        Ok(NameMigration {
            workspace: ws.into(),
            from_database: old.database(),
            to_database: new.database(),
            status: "migrated".into(),
        })
    }
}

/// Rename a database that sessions may be using: closed to new connections first, its
/// sessions ended, renamed once the last one is gone, and open again (also on a re-run after
/// a crash in between).
fn rename_database(admin: &mut Client, from: &str, to: &str) -> Result<()> {
    if database_exists(admin, from)? {
        if database_exists(admin, to)? {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("both {from} and {to} exist; refusing to choose"),
            ));
        }
        allow_connections(admin, from, false)?;
        // Ended sessions leave at their own pace; the rename waits for the last one.
        for attempt in 0.. {
            end_sessions(admin, Sessions::OnDatabase(from), None)?;
            match admin.batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            )) {
                Ok(()) => break,
                // 55006 object_in_use: a terminated session has not exited yet.
                Err(e) if e.code().is_some_and(|c| c.code() == "55006") && attempt < 200 => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !database_exists(admin, to)? {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("neither {from} nor {to} exists on the server; run provision"),
        ));
    }
    allow_connections(admin, to, true)
}

fn allow_connections(admin: &mut Client, database: &str, allow: bool) -> Result<()> {
    admin.batch_execute(&format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
        quote_ident(database)
    ))?;
    Ok(())
}
