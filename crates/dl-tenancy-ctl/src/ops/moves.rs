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

use crate::server::catalog::same_version;
use crate::server::roles::copy_verifiers;
use crate::server::roles::drop_database_and_roles;
use crate::server::roles::let_in;

use crate::server::roles::close_for_move;

use crate::server::stream as logical;

use crate::base::connection::connect;
use crate::control::lock::with_workspace_lock;
use crate::control::records::record_event;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::names::EXTENSION;
use crate::domain::names::{validate_server_name, validate_workspace_id, WorkspaceNames};
use crate::domain::types::Server;
use crate::ops::fault_point;
use crate::ops::Tenancy;
use crate::plan::quote::quote_ident;
use crate::server::archive::{
    dump_archive, dump_without_data_of, has_tenant_state, load_archive, load_tenant_objects,
    version_key, TempDir,
};
use crate::server::catalog::database_exists;
use crate::server::cluster::LOCAL_SERVER_ID;
use crate::server::counts::{count_all_rows, count_tenant_rows, verify_rows};
use crate::server::pooler::{remote_auth_password, Console, POOLER_REMOTE_AUTH_USER};
use crate::server::roles::ensure_tool_login;
use postgres::Client;
use serde::Serialize;
use std::time::Instant;

/// How a move copies the workspace's data (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MoveMethod {
    /// `logical` when the source can stream, `copy` otherwise.
    #[default]
    Auto,
    Logical,
    Copy,
}

impl std::str::FromStr for MoveMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<MoveMethod> {
        match s {
            "auto" => Ok(MoveMethod::Auto),
            "logical" => Ok(MoveMethod::Logical),
            "copy" => Ok(MoveMethod::Copy),
            _ => Err(invalid(format!(
                "unknown move method {s:?}: use auto, logical or copy"
            ))),
        }
    }
}

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

/// What the copy of a move did, up to the switch.
struct Copied {
    rows: std::collections::BTreeMap<String, i64>,
    /// When the pause began (the pooler still holds the workspace's queries).
    paused_at: Instant,
    console: Option<Console>,
    method: &'static str,
    note: Option<String>,
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
                status: if recovered.as_deref() == Some("finished") {
                    "moved".into()
                } else {
                    "already_there".into()
                },
                database: db,
                method: None,
                method_note: None,
                paused_ms: None,
                rows: Default::default(),
                recovered,
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
                    method = NULL, handle = NULL, started_at = now(), updated_at = now()",
            &[&ws, &from, &to],
        )?;
        let attempt =
            self.copy_and_switch(ctl, &names, &source, &target, pooler_home.as_ref(), method);
        let mut copied = match attempt {
            Ok(done) => done,
            Err(e) => {
                self.undo_copy(ctl, &names, &source, &target, pooler_home.is_some());
                ctl.execute(
                    "UPDATE workspace_moves SET state = 'failed', error_message = $2, updated_at = now()
                      WHERE workspace_id = $1",
                    &[&ws, &e.to_string()],
                )?;
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
            recovered,
        })
    }

    /// The target made ready while the workspace stays live: its database, logins with the
    /// source's passwords (tenants shut out until the switch), the pooler's auth user. Returns
    /// a superuser session in the source database and the source's extension version.
    fn prepare_target(
        &self,
        ctl: &mut Client,
        names: &WorkspaceNames,
        source: &Server,
        target: &Server,
        pooler_home: Option<&String>,
    ) -> Result<(Client, String)> {
        let db = names.database();
        let mut target_admin = connect(&target.admin_conn, None)?;
        if database_exists(&mut target_admin, &db)? {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("server {} already has a database {db}", target.id),
            ));
        }
        let available: Option<String> = target_admin
            .query_opt(
                "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                &[&EXTENSION],
            )?
            .and_then(|r| r.get(0));
        if pooler_home.is_some() && target.id != LOCAL_SERVER_ID && target.ca_file.is_none() {
            // The pooler keeps serving the workspace and must verify the server it now talks
            // to over the network, as apps verify the pooler.
            return Err(invalid(format!(
                "server {} has no CA file: the pooler could not verify it; register it with `server add --ca-file`",
                target.id
            )));
        }
        self.ensure_workspace(ctl, target, names)?;
        // A tenant who guesses the target must not write the copy before it is complete: shut
        // out until the switch (a session that got in meanwhile ends).
        close_for_move(
            &mut target_admin,
            &mut connect(&target.admin_conn, Some(&names.database()))?,
            names,
            true,
        )?;
        if pooler_home.is_some() {
            // The pooler looks logins up on the target as the remote auth user.
            ensure_tool_login(
                &mut target_admin,
                POOLER_REMOTE_AUTH_USER,
                "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                &remote_auth_password(&self.key),
            )?;
            target_admin.batch_execute(&format!(
                "GRANT dl_pooler_auth TO {}",
                quote_ident(POOLER_REMOTE_AUTH_USER)
            ))?;
        }
        let mut source_admin = connect(&source.admin_conn, None)?;
        let mut source_db = connect(&source.admin_conn, Some(&db))?;
        let from_version: String = source_db
            .query_one(
                "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
                &[&EXTENSION],
            )?
            .get(0);
        if available.as_deref().map(version_key) < Some(version_key(&from_version)) {
            return Err(Error::new(
                ErrorCode::ExtensionUnavailable,
                format!(
                    "server {} lacks {EXTENSION} {from_version} or later",
                    target.id
                ),
            ));
        }
        copy_verifiers(&mut source_admin, &mut target_admin, names)?;
        Ok((source_db, from_version))
    }

    /// Copy (streaming first when it can), pause, drain or copy, verify and switch. Returns
    /// once the switch is committed: from there on nothing is undone.
    fn copy_and_switch(
        &self,
        ctl: &mut Client,
        names: &WorkspaceNames,
        source: &Server,
        target: &Server,
        pooler_home: Option<&String>,
        method: MoveMethod,
    ) -> Result<Copied> {
        let ws = names.workspace.as_str();
        let db = names.database();
        let mut note = match method {
            MoveMethod::Copy => None,
            _ => logical::cannot_stream(&mut connect(&source.admin_conn, None)?)?,
        };
        if let (MoveMethod::Logical, Some(why)) = (method, &note) {
            return Err(invalid(format!(
                "cannot move by logical replication: {why}"
            )));
        }
        let (mut source_db, from_version) =
            self.prepare_target(ctl, names, source, target, pooler_home)?;
        let mut target_db = connect(&target.admin_conn, Some(&db))?;
        let stream = if method != MoveMethod::Copy && note.is_none() {
            match self.stream(
                ctl,
                names,
                (source, target),
                &mut source_db,
                &mut target_db,
                &from_version,
            ) {
                Ok(stream) => Some(stream),
                // `auto` copies when the target cannot stream from the source (it cannot
                // reach it, say), once the attempt's objects are gone.
                Err(e) if method == MoveMethod::Auto => {
                    let handle = self.move_handle(ctl, ws)?.unwrap_or_default();
                    logical::remove(source, target, &db, &handle)?;
                    self.forget_handle(ctl, ws)?;
                    crate::server::archive::reinstall(&mut target_db, &from_version)?;
                    note = Some(format!("could not stream: {}", e.message));
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        ctl.execute(
            "UPDATE workspace_moves SET method = $2, updated_at = now() WHERE workspace_id = $1",
            &[&ws, &if stream.is_some() { "logical" } else { "copy" }],
        )?;
        self.progress
            .step(|| format!("{ws}: ready on {}; pausing", target.id));

        // The pause: pooled queries wait, direct logins are refused and their sessions end.
        let paused_at = Instant::now();
        let console = match pooler_home {
            Some(home) => {
                let mut c = self.console(ctl, home)?;
                c.pause(&db)?;
                Some(c)
            }
            None => None,
        };
        let mut source_admin = connect(&source.admin_conn, None)?;
        close_for_move(&mut source_admin, &mut source_db, names, true)?;
        fault_point("after_move_pause");
        let tmp = TempDir::new()?;
        let rows = match &stream {
            Some(stream) => {
                self.progress.step(|| {
                    format!("{ws}: paused (pooled queries wait); draining the last changes")
                });
                let mut rows = stream.catch_up(&mut source_db, &mut target_db)?;
                stream.stop(&mut target_db)?;
                stream.release_source(&mut source_admin, &mut source_db)?;
                same_version(&mut source_db, &from_version)?;
                if has_tenant_state(&mut source_db)? {
                    let archive = tmp.0.join("tenant.dump");
                    dump_without_data_of(
                        &source.admin_conn,
                        &db,
                        stream.tables(),
                        &mut std::fs::File::create(&archive)?,
                    )?;
                    load_tenant_objects(&target.admin_conn, names, &archive, &tmp.0)?;
                }
                target_db.batch_execute(&format!(
                    "ALTER EXTENSION {} UPDATE",
                    quote_ident(EXTENSION)
                ))?;
                // The streamed tables were compared in the catch-up; the tenant's now.
                let counted = count_tenant_rows(&mut source_db, &source.admin_conn, names, None)?;
                verify_rows(
                    &counted,
                    &count_tenant_rows(&mut target_db, &target.admin_conn, names, None)?,
                )?;
                rows.extend(counted);
                rows
            }
            None => {
                self.progress.step(|| {
                    format!(
                        "{ws}: paused (pooled queries wait); copying to {}",
                        target.id
                    )
                });
                let archive = tmp.0.join("move.dump");
                dump_archive(
                    &source.admin_conn,
                    &db,
                    None,
                    &mut std::fs::File::create(&archive)?,
                )?;
                load_archive(
                    &mut target_db,
                    &target.admin_conn,
                    names,
                    &from_version,
                    &archive,
                    &tmp.0,
                )?;
                let rows = count_all_rows(&mut source_db, &source.admin_conn, names)?;
                verify_rows(
                    &rows,
                    &count_all_rows(&mut target_db, &target.admin_conn, names)?,
                )?;
                rows
            }
        };
        self.progress
            .step(|| format!("{ws}: copied, {} tables verified; switching", rows.len()));
        fault_point("after_move_copy");

        // The switch: from here on the target is the workspace.
        let mut target_admin = connect(&target.admin_conn, None)?;
        close_for_move(&mut target_admin, &mut target_db, names, false)?;
        let_in(&mut target_admin, names)?;
        let mut tx = ctl.transaction()?;
        tx.execute(
            "UPDATE workspaces SET server_id = $2, pooler_server_id = $3, updated_at = now() WHERE id = $1",
            &[&ws, &target.id, &pooler_home],
        )?;
        tx.execute(
            "UPDATE workspace_moves SET state = 'switched', updated_at = now() WHERE workspace_id = $1",
            &[&ws],
        )?;
        tx.commit()?;
        Ok(Copied {
            rows,
            paused_at,
            console,
            method: if stream.is_some() { "logical" } else { "copy" },
            note,
        })
    }

    /// The live copy: the stream started, its handle recorded first, and every table's first
    /// copy done.
    fn stream(
        &self,
        ctl: &mut Client,
        names: &WorkspaceNames,
        (source, target): (&Server, &Server),
        source_db: &mut Client,
        target_db: &mut Client,
        from_version: &str,
    ) -> Result<logical::Stream> {
        let ws = names.workspace.as_str();
        let handle = logical::new_handle();
        ctl.execute(
            "UPDATE workspace_moves SET handle = $2, updated_at = now() WHERE workspace_id = $1",
            &[&ws, &handle],
        )?;
        self.progress
            .step(|| format!("{ws}: logins ready on {}; streaming", target.id));
        let stream = logical::Stream::start(
            &handle,
            source,
            source_db,
            target_db,
            &names.database(),
            from_version,
        )?;
        stream.wait_copied(target_db, |done, all| {
            self.progress
                .step(|| format!("{ws}: {done} of {all} tables copied while live"))
        })?;
        fault_point("after_move_sync");
        Ok(stream)
    }

    /// After the switch: the pooler repointed and resumed. An error here leaves the move
    /// `switched`, which the next `move` finishes.
    fn repoint(&self, names: &WorkspaceNames, copied: &mut Copied) -> Result<u64> {
        let db = names.database();
        if let (Some(console), Some(data_dir)) = (copied.console.as_mut(), self.data_dir.as_ref()) {
            self.write_local_routes(data_dir)?;
            console.reload()?;
            console.resume(&db)?;
        }
        Ok(copied.paused_at.elapsed().as_millis() as u64)
    }

    /// The attempt's stream objects are gone: no handle to clean up after.
    fn forget_handle(&self, ctl: &mut Client, ws: &str) -> Result<()> {
        ctl.execute(
            "UPDATE workspace_moves SET handle = NULL, updated_at = now() WHERE workspace_id = $1",
            &[&ws],
        )?;
        Ok(())
    }

    /// The stream's objects recorded for the workspace's current move attempt.
    fn move_handle(&self, ctl: &mut Client, ws: &str) -> Result<Option<String>> {
        Ok(ctl
            .query_opt(
                "SELECT handle FROM workspace_moves WHERE workspace_id = $1",
                &[&ws],
            )?
            .and_then(|r| r.get(0)))
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
    fn recover_move(&self, ctl: &mut Client, ws: &str) -> Result<Option<String>> {
        self.remove_stale_stream(ctl, ws)?;
        let row = ctl.query_opt(
            "SELECT m.from_server, m.to_server, m.state, w.database_name
               FROM workspace_moves AS m JOIN workspaces AS w ON w.id = m.workspace_id
              WHERE m.workspace_id = $1 AND m.state IN ('copying', 'switched')",
            &[&ws],
        )?;
        let Some(row) = row else { return Ok(None) };
        let names = WorkspaceNames::recorded(ws, row.get(3))?;
        let source = self.load_server(ctl, row.get(0))?;
        let target = self.load_server(ctl, row.get(1))?;
        let state: String = row.get(2);
        if state == "copying" {
            let pooled = self.pooler_home(ctl, ws, &source)?.is_some();
            self.undo_copy(ctl, &names, &source, &target, pooled);
            ctl.execute(
                "UPDATE workspace_moves SET state = 'failed', error_message = 'stopped half-way; undone',
                        updated_at = now() WHERE workspace_id = $1",
                &[&ws],
            )?;
            return Ok(Some("undone".into()));
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
        Ok(Some("finished".into()))
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
        ctl.execute(
            "UPDATE workspace_moves SET state = 'done', updated_at = now() WHERE workspace_id = $1",
            &[&ws],
        )?;
        Ok(())
    }
}
