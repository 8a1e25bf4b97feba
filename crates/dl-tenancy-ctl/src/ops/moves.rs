//! Moving a workspace to another server with its pooled URI unchanged, draining a server,
//! removing an empty one.
//!
//! A move prepares the target (same names, same passwords, tenant logins shut out of it until
//! the switch), copies the data, and pauses the workspace only for the switch: the pooler
//! holds the workspace's queries (`PAUSE db`), direct logins are shut out of the source, the
//! last changes are copied, every table's count is compared, the control database switches
//! the workspace to the target, the pooler is repointed (`routes.ini`, `RELOAD`) and resumes.
//! Only then is the source copy dropped.
//!
//! Two ways to copy ([`MoveMethod`]): `logical` streams the data by logical replication while
//! the workspace stays live, so the pause only drains the last changes ([`logical`]); `copy`
//! dumps and restores the whole database inside the pause, which is as long as the copy.
//! `auto` streams when the source runs with `wal_level = logical` and copies otherwise.
//!
//! A failure before the switch undoes everything (the pooler resumes, the source opens again,
//! the target copy and the stream's objects are dropped); a crash is undone (before the
//! switch) or finished (after it) by running `move` again. Each attempt is recorded in
//! `workspace_moves`.

use crate::control::records::set_move_state;
use crate::domain::state::MoveState;
use crate::plan::moves::arrived_status;
use crate::plan::moves::recovery;
use crate::plan::moves::MoveMethod;
use crate::plan::moves::Recovery;

use crate::server::roles::drop_database_and_roles;
use crate::server::roles::let_in;

use crate::server::stream as logical;

use crate::base::connection::connect;
use crate::control::lock::with_workspace_lock;
use crate::control::records::record_event;
use crate::domain::error::Result;
use crate::domain::names::{validate_server_name, validate_workspace_id, WorkspaceNames};
use crate::domain::types::Server;
use crate::ops::fault_point;
use crate::ops::move_copy::Trip;
use crate::ops::Tenancy;
use crate::server::cluster::LOCAL_SERVER_ID;
use postgres::Client;
use serde::Serialize;

/// `move`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MoveReport {
    pub workspace: String,
    pub from_server: String,
    pub to_server: String,
    /// `moved`, or `already_there`.
    pub status: String,
    pub database: String,
    /// `logical` (streamed, then paused to drain the last changes) or `copy` (copied in the
    /// pause); absent when nothing moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Why `auto` copied instead of streaming.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method_note: Option<String>,
    /// How long the workspace's queries were held (pooled) or refused (direct): from
    /// `PAUSE` to `RESUME`, in milliseconds.
    pub paused_ms: Option<u64>,
    /// Rows per table, the same on both sides before the switch.
    pub rows: std::collections::BTreeMap<String, i64>,
    /// Whether an earlier attempt that stopped half-way was undone or finished first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
}

impl Tenancy {
    /// `move --workspace W --to SERVER`, copying the way `auto` picks.
    pub fn move_workspace(&self, workspace: &str, to: &str) -> Result<MoveReport> {
        self.move_workspace_with(workspace, to, MoveMethod::Auto)
    }

    /// `move --workspace W --to SERVER --method M`.
    pub fn move_workspace_with(
        &self,
        workspace: &str,
        to: &str,
        method: MoveMethod,
    ) -> Result<MoveReport> {
        validate_workspace_id(workspace)?;
        validate_server_name(to)?;
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            self.move_locked(ctl, workspace, to, method)
        })
    }

    fn move_locked(
        &self,
        ctl: &mut Client,
        ws: &str,
        to: &str,
        method: MoveMethod,
    ) -> Result<MoveReport> {
        let recovered = self.recover_move(ctl, ws)?;
        let (names, from) = self.active_workspace(ctl, ws)?;
        let db = names.database();
        if from == to {
            return Ok(MoveReport {
                workspace: ws.into(),
                from_server: from.clone(),
                to_server: to.into(),
                // A move that had switched before a crash was just finished.
                status: arrived_status(recovered).into(),
                database: db,
                method: None,
                method_note: None,
                paused_ms: None,
                rows: Default::default(),
                recovered: recovered.as_report(),
            });
        }
        let source = self.load_server(ctl, &from)?;
        let target = self.load_server(ctl, to)?;
        let pooler_home = self.pooler_home(ctl, ws, &source)?;
        ctl.execute(
            "INSERT INTO workspace_moves (workspace_id, from_server, to_server, state)
             VALUES ($1, $2, $3, 'copying')
             ON CONFLICT (workspace_id) DO UPDATE
                SET from_server = EXCLUDED.from_server, to_server = EXCLUDED.to_server,
                    state = 'copying', error_message = NULL, paused_ms = NULL,
                    method = NULL, handle = NULL, started_at = now(), updated_at = now()
              WHERE workspace_moves.state = ANY($4)",
            &[
                &ws,
                &from,
                &to,
                &MoveState::Copying
                    .comes_from()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>(),
            ],
        )?;
        let attempt = self.copy_and_switch(
            ctl,
            Trip {
                names: &names,
                source: &source,
                target: &target,
                pooler_home: pooler_home.as_ref(),
            },
            method,
        );
        let mut copied = match attempt {
            Ok(done) => done,
            Err(e) => {
                self.undo_copy(ctl, &names, &source, &target, pooler_home.is_some());
                set_move_state(ctl, ws, MoveState::Failed, Some(&e.to_string()))?;
                return Err(e.with_context(&format!("move of {ws} to {to} undone")));
            }
        };
        let paused_ms = self.repoint(&names, &mut copied).map_err(|e| {
            e.with_context(&format!(
                "move of {ws} switched to {to}; run it again to finish"
            ))
        })?;
        self.progress
            .step(|| format!("{ws}: on {to} and resumed after {paused_ms} ms"));
        ctl.execute(
            "UPDATE workspace_moves SET paused_ms = $2 WHERE workspace_id = $1",
            &[&ws, &(paused_ms as i64)],
        )?;
        fault_point("after_move_switch");
        self.finish_move(ctl, &names, &source, &target)?;
        record_event(
            ctl,
            ws,
            "move",
            serde_json::json!({
                "from": from, "to": to, "method": copied.method, "paused_ms": paused_ms
            }),
        )?;
        Ok(MoveReport {
            workspace: ws.into(),
            from_server: from,
            to_server: to.into(),
            status: "moved".into(),
            database: db,
            method: Some(copied.method.into()),
            method_note: copied.note,
            paused_ms: Some(paused_ms),
            rows: copied.rows,
            recovered: recovered.as_report(),
        })
    }

    /// Back to before the attempt: the pooler resumes, the source opens again, the stream's
    /// objects and the target copy (database and roles) are dropped. Best effort: each step
    /// is tried.
    fn undo_copy(
        &self,
        ctl: &mut Client,
        names: &WorkspaceNames,
        source: &Server,
        target: &Server,
        pooled: bool,
    ) {
        let db = names.database();
        if pooled {
            if let Ok(mut c) = self.console(ctl, LOCAL_SERVER_ID) {
                let _ = c.resume(&db);
            }
        }
        if let Ok(mut admin) = connect(&source.admin_conn, None) {
            let _ = let_in(&mut admin, names);
        }
        // A stream left behind keeps its handle, so the next move removes it (a slot holds
        // the source's WAL until it is dropped).
        if let Ok(Some(handle)) = self.move_handle(ctl, &names.workspace) {
            if logical::remove(source, target, &db, &handle).is_ok() {
                let _ = self.forget_handle(ctl, &names.workspace);
            }
        }
        if let Ok(mut admin) = connect(&target.admin_conn, None) {
            let _ = drop_database_and_roles(&target.admin_conn, &mut admin, names);
        }
    }

    /// The stream of an earlier failed attempt whose removal failed then: removed now, or
    /// the move stops here.
    fn remove_stale_stream(&self, ctl: &mut Client, ws: &str) -> Result<()> {
        let row = ctl.query_opt(
            "SELECT m.from_server, m.to_server, m.handle, w.database_name
               FROM workspace_moves AS m JOIN workspaces AS w ON w.id = m.workspace_id
              WHERE m.workspace_id = $1 AND m.state = 'failed' AND m.handle IS NOT NULL",
            &[&ws],
        )?;
        let Some(row) = row else { return Ok(()) };
        let source = self.load_server(ctl, row.get(0))?;
        let target = self.load_server(ctl, row.get(1))?;
        let handle: String = row.get(2);
        logical::remove(&source, &target, row.get(3), &handle).map_err(|e| {
            e.with_context("removing the replication stream of an earlier failed move")
        })?;
        self.forget_handle(ctl, ws)
    }

    /// A move that stopped half-way: undone when it had not switched, finished when it had.
    fn recover_move(&self, ctl: &mut Client, ws: &str) -> Result<Recovery> {
        self.remove_stale_stream(ctl, ws)?;
        let row = ctl.query_opt(
            "SELECT m.from_server, m.to_server, m.state, w.database_name
               FROM workspace_moves AS m JOIN workspaces AS w ON w.id = m.workspace_id
              WHERE m.workspace_id = $1",
            &[&ws],
        )?;
        let Some(row) = row else {
            return Ok(Recovery::None);
        };
        let recovery = recovery(Some(row.get::<_, &str>(2).parse::<MoveState>()?));
        if recovery == Recovery::None {
            return Ok(recovery);
        }
        let names = WorkspaceNames::recorded(ws, row.get(3))?;
        let source = self.load_server(ctl, row.get(0))?;
        let target = self.load_server(ctl, row.get(1))?;
        if recovery == Recovery::Undo {
            let pooled = self.pooler_home(ctl, ws, &source)?.is_some();
            self.undo_copy(ctl, &names, &source, &target, pooled);
            set_move_state(ctl, ws, MoveState::Failed, Some("stopped half-way; undone"))?;
            return Ok(recovery);
        }
        // Switched: the pooler must point at the target and run; the source copy goes.
        if let Some(data_dir) = self.data_dir.clone() {
            self.write_local_routes(&data_dir)?;
            if let Ok(mut c) = self.console(ctl, LOCAL_SERVER_ID) {
                c.reload()?;
                c.resume(&names.database())?;
            }
        }
        self.finish_move(ctl, &names, &source, &target)?;
        Ok(recovery)
    }

    /// After the switch: the stream's objects and then the source copy dropped (a database
    /// with a replication slot cannot be dropped).
    fn finish_move(
        &self,
        ctl: &mut Client,
        names: &WorkspaceNames,
        source: &Server,
        target: &Server,
    ) -> Result<()> {
        let ws = names.workspace.as_str();
        if let Some(handle) = self.move_handle(ctl, ws)? {
            logical::remove(source, target, &names.database(), &handle)?;
        }
        drop_database_and_roles(
            &source.admin_conn,
            &mut connect(&source.admin_conn, None)?,
            names,
        )?;
        self.progress
            .step(|| format!("{ws}: dropped the copy on {}", source.id));
        set_move_state(ctl, &names.workspace, MoveState::Done, None)?;
        Ok(())
    }
}
