//! A workspace's lifecycle: status, provision (idempotent, resumable), metadata, sql-schema,
//! list and deprovision, each serialized per workspace by the workspace lock.

use crate::control::records::active_logins;
use crate::control::records::set_workspace_state;
use crate::domain::state::WorkspaceState;
use crate::plan::workspace;
use crate::server::apply::apply;
use crate::server::catalog::live_extension_version;
use crate::server::catalog::{extension_version, observe};
use crate::server::roles::logins_usable;

use crate::control::lock::with_workspace_lock;
use crate::control::records::record_failure;
use crate::domain::error::not_provisioned;
use crate::ops::fault_point;
use crate::server::roles::fence;

use crate::base::connection::connect;
use crate::base::secret::new_handle;
use crate::control::records::workspace_limits;
use crate::domain::error::suspended_error;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::EXTENSION;
use crate::domain::names::{validate_workspace_id, Kind, WorkspaceNames, OPAQUE_PREFIX};
use crate::domain::types::{
    Endpoint, Metadata, RoleNames, Server, WorkspaceEntry, WorkspaceList, WorkspaceStatus,
};
use crate::ops::Tenancy;
use postgres::Client;
use std::collections::BTreeMap;

/// A state other than `active` as an error for operations that need an active workspace.
fn require_active(ws: &str, state: WorkspaceState, message: Option<&str>) -> Result<()> {
    match state {
        WorkspaceState::Active => Ok(()),
        WorkspaceState::Suspended | WorkspaceState::Purging => Err(suspended_error(ws, None)),
        WorkspaceState::Provisioning => Err(Error::new(
            ErrorCode::ProvisioningInProgress,
            format!("workspace {ws} is being provisioned (or an attempt stopped half-way; run provision)"),
        )),
        WorkspaceState::Error => Err(Error::new(
            ErrorCode::ProvisioningFailed,
            format!(
                "provisioning workspace {ws} failed: {}; run provision again",
                message.unwrap_or("unknown error")
            ),
        )),
        WorkspaceState::Deleted => Err(not_provisioned(ws)),
    }
}

impl Tenancy {
    /// `status`: the recorded state, and for `active` a live check that the database exists
    /// and has the extension (`not_provisioned` with a message when it was dropped by hand).
    pub fn status(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control_read()?;
        let (mut st, live) = recorded_status(&mut ctl, workspace)?;
        let Some((server_id, names)) = live else {
            return Ok(st);
        };
        let server = self.load_server(&mut ctl, &server_id)?;
        let logins = active_logins(&mut ctl, workspace)?;
        drop(ctl);
        match self.live_version(&server, &names)? {
            Some(v) => {
                st.extension_version = Some(v);
                let mut admin = self.admin_read(&server.admin_conn)?;
                if !logins_usable(&mut admin, &names, &logins)? {
                    st.status = "error".into();
                    st.message = Some(CREDENTIALS_BROKEN.into());
                }
            }
            None => {
                st.status = "not_provisioned".into();
                st.extension_version = None;
                st.message = Some(format!(
                    "database {} is missing or has no {EXTENSION} extension (removed outside dl-tenancy); run provision",
                    names.database()
                ));
            }
        }
        Ok(st)
    }

    /// What `status` answers from the control database alone, before its live check: the
    /// benchmark's baseline for the API (`serve --baseline`).
    pub fn status_recorded(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control_read()?;
        Ok(recorded_status(&mut ctl, workspace)?.0)
    }

    /// `provision`: idempotent; serialized per workspace by an advisory lock in `dl_control`.
    /// Creates what is missing (database from the template, roles, grants, credentials) and
    /// ends `active`.
    pub fn provision(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            let res = self.provision_locked(ctl, workspace);
            if let Err(e) = &res {
                record_failure(ctl, workspace, e);
            }
            res
        })
    }

    pub(crate) fn provision_locked(&self, ctl: &mut Client, ws: &str) -> Result<WorkspaceStatus> {
        let row = ctl.query_opt(
            "SELECT server_id, state, database_name, purge_after::text FROM workspaces WHERE id = $1",
            &[&ws],
        )?;
        // A deleted workspace comes back only through an operator's `undelete`: a tenant's
        // `provision` must not revive it (nor make a new one beside its kept data).
        if let Some(r) = &row {
            if r.get::<_, &str>(1)
                .parse::<WorkspaceState>()?
                .is_suspended()
            {
                return Err(suspended_error(ws, r.get(3)));
            }
        }
        // A recorded workspace keeps its names; a new one (or one deleted before) gets fresh
        // opaque ones, and nothing of those names may exist yet.
        let (server_id, state, names) = match &row {
            Some(r) if r.get::<_, &str>(1) != WorkspaceState::Deleted.as_str() => (
                r.get::<_, String>(0),
                Some(r.get::<_, &str>(1).parse::<WorkspaceState>()?),
                WorkspaceNames::recorded(ws, r.get(2))?,
            ),
            _ => (
                self.place(ctl)?,
                None,
                WorkspaceNames::opaque(ws, &new_handle())?,
            ),
        };
        let names = &names;
        let server = self.load_server(ctl, &server_id)?;
        if state == Some(WorkspaceState::Active) {
            if let Some(version) = self.verify_complete(ctl, &server, names)? {
                let limits = workspace_limits(ctl, ws)?;
                fence(&mut connect(&server.admin_conn, None)?, names, &limits)?;
                return Ok(active_status(names, version, server_id));
            }
        }
        let handle = names
            .database()
            .strip_prefix(OPAQUE_PREFIX)
            .map(str::to_string);
        ctl.execute(
            "INSERT INTO workspaces (id, server_id, database_name, handle, state)
             VALUES ($1, $2, $3, $4, 'provisioning')
             ON CONFLICT (id) DO UPDATE
                SET server_id = EXCLUDED.server_id, database_name = EXCLUDED.database_name,
                    handle = coalesce(EXCLUDED.handle, workspaces.handle),
                    state = 'provisioning', error_message = NULL,
                    updated_at = now()",
            &[&ws, &server_id, &names.database(), &handle],
        )?;
        if state.is_none() {
            // A new (or re-created) workspace: no stale credentials, and nothing of its names
            // on the server that dl-tenancy did not create.
            ctl.execute("DELETE FROM credentials WHERE workspace_id = $1", &[&ws])?;
            let mut admin = connect(&server.admin_conn, None)?;
            workspace::refuse_to_adopt(names, &observe("", &mut admin, names, false)?)?;
        }
        fault_point("after_record");
        let version = self.ensure_workspace(ctl, &server, names)?;
        set_workspace_state(ctl, ws, WorkspaceState::Active, None)?;
        ctl.execute(
            "UPDATE workspaces SET extension_version = $2 WHERE id = $1",
            &[&ws, &version],
        )?;
        Ok(active_status(names, version, server_id))
    }

    /// The workspace's extension version, live: as `serve` saw it within
    /// [`crate::domain::limits::LIVE_CHECK_TTL`], else read in its database.
    fn live_version(&self, server: &Server, names: &WorkspaceNames) -> Result<Option<String>> {
        if let Some(v) = self.seen_live(&names.workspace) {
            return Ok(Some(v));
        }
        let v = live_extension_version(server, names)?;
        self.saw_live(&names.workspace, v.as_deref());
        Ok(v)
    }

    /// Everything an active workspace needs is there: database + extension, roles, credentials.
    fn verify_complete(
        &self,
        ctl: &mut Client,
        server: &Server,
        names: &WorkspaceNames,
    ) -> Result<Option<String>> {
        let active = active_logins(ctl, &names.workspace)?;
        let mut admin = connect(&server.admin_conn, None)?;
        let seen = observe("", &mut admin, names, false)?;
        if seen.roles.len() != names.all_roles().len()
            || !logins_usable(&mut admin, names, &active)?
        {
            return Ok(None);
        }
        drop(admin);
        live_extension_version(server, names)
    }

    /// Everything of the workspace on its server as it should be ([`workspace::provision`]):
    /// what is missing created, the fences re-asserted, then each kind's credential. Returns
    /// the extension's version in the workspace's database.
    pub(crate) fn ensure_workspace(
        &self,
        ctl: &mut Client,
        server: &Server,
        names: &WorkspaceNames,
    ) -> Result<String> {
        let mut admin = connect(&server.admin_conn, None)?;
        self.ensure_template(ctl, &mut admin, server)?;
        let seen = observe(&server.admin_conn, &mut admin, names, true)?;
        let limits = workspace_limits(ctl, &names.workspace)?;
        let steps = workspace::provision(names, &limits, &seen)?;
        apply(
            &server.admin_conn,
            &mut admin,
            &names.database(),
            &steps,
            &mut fault_point,
        )?;
        let version =
            extension_version(&mut connect(&server.admin_conn, Some(&names.database()))?)?
                .ok_or_else(|| Error::new(ErrorCode::Internal, "the extension vanished"))?;
        for kind in Kind::ALL {
            self.ensure_credential(ctl, &mut admin, names, kind)?;
        }
        Ok(version)
    }

    /// An active workspace's recorded names and server (`not_provisioned` otherwise).
    pub(crate) fn active_workspace(
        &self,
        ctl: &mut Client,
        ws: &str,
    ) -> Result<(WorkspaceNames, String)> {
        validate_workspace_id(ws)?;
        let row = ctl.query_opt(
            "SELECT server_id, state, error_message, database_name FROM workspaces WHERE id = $1",
            &[&ws],
        )?;
        let Some(row) = row else {
            return Err(not_provisioned(ws));
        };
        require_active(ws, row.get::<_, &str>(1).parse()?, row.get(2))?;
        Ok((WorkspaceNames::recorded(ws, row.get(3))?, row.get(0)))
    }

    /// `connection-uris metadata`: where and as whom to connect; no secrets.
    pub fn metadata(&self, workspace: &str) -> Result<Metadata> {
        let mut ctl = self.control_read()?;
        let (names, server_id) = self.active_workspace(&mut ctl, workspace)?;
        let server = self.load_server(&mut ctl, &server_id)?;
        let version: Option<String> = ctl
            .query_one(
                "SELECT extension_version FROM workspaces WHERE id = $1",
                &[&workspace],
            )?
            .get(0);
        let mut roles = BTreeMap::new();
        for kind in Kind::ALL {
            let slot = self.active_slot(&mut ctl, workspace, kind)?;
            roles.insert(
                kind.as_str().to_string(),
                RoleNames {
                    login: names.login(kind, slot),
                    standby_login: names.login(kind, slot.other()),
                    group_role: kind.group_role().to_string(),
                },
            );
        }
        Ok(Metadata {
            workspace: workspace.into(),
            status: "active".into(),
            project_id: format!("{}/{}", server.id, names.database()),
            server_id: server.id.clone(),
            database: names.database(),
            extension_version: version,
            direct: Endpoint {
                host: server.host.clone(),
                port: server.port,
            },
            pooled: self.pooler_of(&mut ctl, workspace, &server)?,
            workspace_role: names.workspace_role(),
            roles,
        })
    }

    /// `sql-schema`: the extension's `public.dl_sql_schema()` from the workspace's database.
    pub fn sql_schema(&self, workspace: &str) -> Result<serde_json::Value> {
        let mut ctl = self.control()?;
        let (names, server_id) = self.active_workspace(&mut ctl, workspace)?;
        let server = self.load_server(&mut ctl, &server_id)?;
        drop(ctl);
        let mut db = connect(&server.admin_conn, Some(&names.database())).map_err(|e| {
            if e.sqlstate() == Some("3D000") {
                not_provisioned(workspace)
            } else {
                e
            }
        })?;
        Ok(db.query_one("SELECT public.dl_sql_schema()", &[])?.get(0))
    }

    /// `list`: every workspace not deleted, with its recorded state.
    pub fn list(&self) -> Result<WorkspaceList> {
        let mut ctl = self.control()?;
        let rows = ctl.query(
            "SELECT id, state, server_id, database_name, extension_version, updated_at::text
               FROM workspaces WHERE state <> 'deleted' ORDER BY id",
            &[],
        )?;
        Ok(WorkspaceList {
            workspaces: rows
                .iter()
                .map(|r| WorkspaceEntry {
                    workspace: r.get(0),
                    state: r.get(1),
                    server_id: r.get(2),
                    database: r.get(3),
                    extension_version: r.get(4),
                    updated_at: r.get(5),
                })
                .collect(),
        })
    }
}

/// What `provision` answers for a workspace it left active.
fn active_status(names: &WorkspaceNames, version: String, server_id: String) -> WorkspaceStatus {
    WorkspaceStatus {
        workspace: names.workspace.clone(),
        status: "active".into(),
        database: Some(names.database()),
        extension_version: Some(version),
        server_id: Some(server_id),
        message: None,
        purge_after: None,
    }
}

/// What `status` says of a workspace whose provisioning failed.
const PROVISIONING_FAILED: &str = "provisioning did not finish; run provision again";

/// What `status` says of an active workspace whose logins were changed outside dl-tenancy.
const CREDENTIALS_BROKEN: &str =
    "the workspace's logins were changed outside dl-tenancy; run provision to repair them";

/// The workspace's status as recorded, and for an `active` one what its live check needs.
fn recorded_status(
    ctl: &mut Client,
    workspace: &str,
) -> Result<(WorkspaceStatus, Option<(String, WorkspaceNames)>)> {
    let row = ctl.query_opt(
        "SELECT server_id, state, database_name, extension_version, purge_after::text
           FROM workspaces WHERE id = $1",
        &[&workspace],
    )?;
    let mut st = WorkspaceStatus {
        workspace: workspace.to_string(),
        status: "not_provisioned".into(),
        database: None,
        extension_version: None,
        server_id: None,
        message: None,
        purge_after: None,
    };
    let Some(row) = row else {
        return Ok((st, None));
    };
    let state: WorkspaceState = row.get::<_, &str>(1).parse()?;
    if state == WorkspaceState::Deleted {
        return Ok((st, None));
    }
    let server_id: String = row.get(0);
    let names = WorkspaceNames::recorded(workspace, row.get(2))?;
    st.database = Some(names.database());
    st.server_id = Some(server_id.clone());
    st.status = state.to_string();
    st.extension_version = row.get(3);
    if state.is_suspended() {
        // Deleted, data kept: no live check (the logins are refused on purpose).
        st.status = "suspended".into();
        st.purge_after = row.get(4);
        st.message = Some(suspended_error(workspace, st.purge_after.as_deref()).message);
        return Ok((st, None));
    }
    if state == WorkspaceState::Error {
        // The stored error is the operator's (`dl-tenancy list`): it can name hosts, paths
        // and SQL. A tenant sees only what to do.
        st.message = Some(PROVISIONING_FAILED.into());
    }
    let live = (state == WorkspaceState::Active).then_some((server_id, names));
    Ok((st, live))
}
