//! The forward path of a move: the target prepared, the data copied (streamed first when it
//! can), the pause, the last changes, the count check and the switch. Undo, recovery and
//! the report are in `ops::moves`.

use crate::base::connection::connect;
use crate::control::records::set_move_state;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::names::WorkspaceNames;
use crate::domain::names::EXTENSION;
use crate::domain::state::MoveState;
use crate::domain::types::Server;
use crate::ops::fault_point;
use crate::ops::Tenancy;
use crate::plan::moves::copy_method;
use crate::plan::moves::MoveMethod;
use crate::plan::quote::quote_ident;
use crate::server::archive::{
    dump_archive, dump_without_data_of, has_tenant_state, load_archive, load_tenant_objects,
    version_key, TempDir,
};
use crate::server::catalog::database_exists;
use crate::server::catalog::extension_version;
use crate::server::catalog::same_version;
use crate::server::cluster::LOCAL_SERVER_ID;
use crate::server::counts::{count_all_rows, count_tenant_rows, verify_rows};
use crate::server::pooler::{remote_auth_password, Console, POOLER_REMOTE_AUTH_USER};
use crate::server::roles::close_for_move;
use crate::server::roles::copy_verifiers;
use crate::server::roles::ensure_tool_login;
use crate::server::roles::let_in;
use crate::server::stream as logical;
use postgres::Client;
use std::time::Instant;

/// Where a move goes: the workspace, from where, to where, and the server whose pooler serves
/// it (when one does).
#[derive(Clone, Copy)]
pub(crate) struct Trip<'a> {
    pub(crate) names: &'a WorkspaceNames,
    pub(crate) source: &'a Server,
    pub(crate) target: &'a Server,
    pub(crate) pooler_home: Option<&'a String>,
}

impl<'a> Trip<'a> {
    fn parts(
        self,
    ) -> (
        &'a WorkspaceNames,
        &'a Server,
        &'a Server,
        Option<&'a String>,
    ) {
        (self.names, self.source, self.target, self.pooler_home)
    }
}

/// What the copy of a move did, up to the switch.
pub(crate) struct Copied {
    pub(crate) rows: std::collections::BTreeMap<String, i64>,
    /// When the pause began (the pooler still holds the workspace's queries).
    pub(crate) paused_at: Instant,
    pub(crate) console: Option<Console>,
    pub(crate) method: &'static str,
    pub(crate) note: Option<String>,
}

impl Tenancy {
    /// The target made ready while the workspace stays live: its database, logins with the
    /// source's passwords (tenants shut out until the switch), the pooler's auth user. Returns
    /// a superuser session in the source database and the source's extension version.
    pub(crate) fn prepare_target(&self, ctl: &mut Client, trip: Trip) -> Result<(Client, String)> {
        let (names, source, target, pooler_home) = trip.parts();
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
        let from_version = extension_version(&mut source_db)?.ok_or_else(|| {
            Error::new(
                ErrorCode::NotProvisioned,
                format!("{db} has no {EXTENSION}"),
            )
        })?;
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
    pub(crate) fn copy_and_switch(
        &self,
        ctl: &mut Client,
        trip: Trip,
        method: MoveMethod,
    ) -> Result<Copied> {
        let (names, source, target, pooler_home) = trip.parts();
        let ws = names.workspace.as_str();
        let db = names.database();
        let cannot_stream = match method {
            MoveMethod::Copy => None,
            _ => logical::cannot_stream(&mut connect(&source.admin_conn, None)?)?,
        };
        let (try_stream, mut note) = copy_method(method, cannot_stream)?;
        let (mut source_db, from_version) = self.prepare_target(ctl, trip)?;
        let mut target_db = connect(&target.admin_conn, Some(&db))?;
        let stream = if try_stream {
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
        set_move_state(&mut tx, ws, MoveState::Switched, None)?;
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
    pub(crate) fn stream(
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
    pub(crate) fn repoint(&self, names: &WorkspaceNames, copied: &mut Copied) -> Result<u64> {
        let db = names.database();
        if let (Some(console), Some(data_dir)) = (copied.console.as_mut(), self.data_dir.as_ref()) {
            self.write_local_routes(data_dir)?;
            console.reload()?;
            console.resume(&db)?;
        }
        Ok(copied.paused_at.elapsed().as_millis() as u64)
    }

    /// The attempt's stream objects are gone: no handle to clean up after.
    pub(crate) fn forget_handle(&self, ctl: &mut Client, ws: &str) -> Result<()> {
        ctl.execute(
            "UPDATE workspace_moves SET handle = NULL, updated_at = now() WHERE workspace_id = $1",
            &[&ws],
        )?;
        Ok(())
    }

    /// The stream's objects recorded for the workspace's current move attempt.
    pub(crate) fn move_handle(&self, ctl: &mut Client, ws: &str) -> Result<Option<String>> {
        Ok(ctl
            .query_opt(
                "SELECT handle FROM workspace_moves WHERE workspace_id = $1",
                &[&ws],
            )?
            .and_then(|r| r.get(0)))
    }
}
