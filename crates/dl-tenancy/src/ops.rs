//! The operations: status, provision, metadata, reveal, rotate, sql-schema, list,
//! deprovision, server add/list.

use crate::control::{connect, LOCK_TEMPLATE, LOCK_WORKSPACE};
use crate::credentials::{ensure_login, revoke_login, set_password};
use crate::error::{invalid, Error, ErrorCode, Result};
use crate::fences::{DATABASE_CONNECTION_LIMIT, SESSION_PRELOAD};
use crate::names::{
    new_handle, percent_encode, quote_ident, quote_literal, validate_server_name,
    validate_workspace_id, Kind, Slot, WorkspaceNames, OPAQUE_PREFIX,
};
use crate::secret::random_password;
use crate::Tenancy;
use postgres::Client;
use serde::Serialize;
use std::collections::BTreeMap;

/// Name of the per-server template database (has the extension; nobody may connect to it).
pub const TEMPLATE_DB: &str = "dl_tenancy_template";
/// Name of the extension.
pub const EXTENSION: &str = "dl_tenancy";
/// How often `serve` ends grace periods that are over ([`Tenancy::expire_grace_periods`]).
pub const GRACE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Environment variable naming a fault point where the process exits at once (tests only).
pub const FAULT_ENV: &str = "DL_TENANCY_FAULT";

/// Exit the process at a named point when `DL_TENANCY_FAULT` says so: a simulated crash
/// half-way for the idempotency tests. No effect otherwise.
fn fault_point(name: &str) {
    if std::env::var(FAULT_ENV).as_deref() == Ok(name) {
        eprintln!("{{\"error\":{{\"code\":\"simulated_crash\",\"message\":\"{name}\"}}}}");
        std::process::exit(97);
    }
}

/// `GET status`: `{"workspace","status","database","extension_version",...}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceStatus {
    pub workspace: String,
    /// `not_provisioned` | `provisioning` | `active` | `error`
    pub status: String,
    pub database: Option<String>,
    pub extension_version: Option<String>,
    pub server_id: Option<String>,
    /// Why a workspace is `error`, or why a recorded workspace is `not_provisioned` now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A host and port.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Role names of one kind.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoleNames {
    /// The login the revealed URI uses now.
    pub login: String,
    /// The other login of the pair (used by the next rotation).
    pub standby_login: String,
    /// The extension's group role (`dl_tenant_read` / `dl_tenant_override`).
    pub group_role: String,
}

/// `GET connection-uris/metadata`: no secrets.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Metadata {
    pub workspace: String,
    pub status: String,
    pub server_id: String,
    /// `<server_id>/<database>`: the "project" of the seed.
    pub project_id: String,
    pub database: String,
    pub extension_version: Option<String>,
    pub direct: Endpoint,
    pub pooled: Option<Endpoint>,
    pub workspace_role: String,
    pub roles: BTreeMap<String, RoleNames>,
}

/// `POST connection-uris/reveal`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reveal {
    pub workspace: String,
    pub kind: Kind,
    pub pooled: bool,
    pub uri: String,
    pub login: String,
    pub database: String,
}

/// `POST connection-uris/rotate`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rotation {
    pub workspace: String,
    pub kind: Kind,
    /// The login the new password belongs to (reveal returns it from now on).
    pub login: String,
    pub previous_login: String,
    /// Until when the previous login still accepts new connections; `null` = refused now.
    pub previous_valid_until: Option<String>,
    pub grace_seconds: u64,
}

/// One row of `list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceEntry {
    pub workspace: String,
    /// The recorded state (`provisioning` | `active` | `error`); `status` verifies it.
    pub state: String,
    pub server_id: String,
    pub database: String,
    pub extension_version: Option<String>,
    pub updated_at: String,
}

/// `list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceEntry>,
}

/// `deprovision`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Deprovisioned {
    pub workspace: String,
    pub status: String,
    /// The database that was dropped (`None`: there was no workspace of that id).
    pub database: Option<String>,
    pub dropped_database: bool,
    pub dropped_roles: Vec<String>,
}

/// A registered server (no admin URL: it may hold a password).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerInfo {
    pub id: String,
    pub direct: Endpoint,
    pub pooled: Option<Endpoint>,
    pub active: bool,
    pub workspaces: i64,
    pub template_version: Option<String>,
}

/// `server list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerList {
    pub servers: Vec<ServerInfo>,
}

/// Arguments of `server add`.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    pub name: String,
    /// Superuser connection string (URL or key/value). Stored encrypted.
    pub admin_url: String,
    /// Host/port tenants connect to directly; default: the admin URL's TCP host and port.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The server's PgBouncer (auth_query through `dl_internal.pooler_user_lookup`).
    pub pooler_host: Option<String>,
    pub pooler_port: Option<u16>,
}

#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub id: String,
    pub admin_conn: String,
    pub host: String,
    pub port: u16,
    pub pooler: Option<Endpoint>,
    pub template_version: Option<String>,
}

fn server_aad(id: &str) -> String {
    format!("dl_tenancy server {id} admin_url")
}

fn credential_aad(ws: &str, kind: Kind, slot: Slot) -> String {
    format!(
        "dl_tenancy credential {ws}/{}/{}",
        kind.as_str(),
        slot.as_str()
    )
}

pub(crate) fn not_provisioned(ws: &str) -> Error {
    Error::new(
        ErrorCode::NotProvisioned,
        format!("workspace {ws} is not provisioned; run provision"),
    )
}

/// A state other than `active` as an error for operations that need an active workspace.
fn require_active(ws: &str, state: Option<&str>, message: Option<&str>) -> Result<()> {
    match state {
        Some("active") => Ok(()),
        Some("provisioning") => Err(Error::new(
            ErrorCode::ProvisioningInProgress,
            format!("workspace {ws} is being provisioned (or an attempt stopped half-way; run provision)"),
        )),
        Some("error") => Err(Error::new(
            ErrorCode::ProvisioningFailed,
            format!(
                "provisioning workspace {ws} failed: {}; run provision again",
                message.unwrap_or("unknown error")
            ),
        )),
        _ => Err(not_provisioned(ws)),
    }
}

pub(crate) fn lock_workspace(ctl: &mut Client, ws: &str) -> Result<()> {
    ctl.batch_execute("SET lock_timeout = '60s'")?;
    ctl.execute(
        "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))",
        &[&LOCK_WORKSPACE, &ws],
    )?;
    ctl.batch_execute("RESET lock_timeout")?;
    Ok(())
}

pub(crate) fn unlock_workspace(ctl: &mut Client, ws: &str) {
    let _ = ctl.execute(
        "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
        &[&LOCK_WORKSPACE, &ws],
    );
}

fn endpoint(host: Option<String>, port: Option<i32>) -> Option<Endpoint> {
    match (host, port) {
        (Some(host), Some(port)) => Some(Endpoint {
            host,
            port: port as u16,
        }),
        _ => None,
    }
}

fn format_host(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

impl Tenancy {
    pub(crate) fn load_server(&self, ctl: &mut Client, id: &str) -> Result<Server> {
        let row = ctl
            .query_opt(
                "SELECT admin_nonce, admin_ciphertext, host, port, pooler_host, pooler_port, template_version
                   FROM servers WHERE id = $1",
                &[&id],
            )?
            .ok_or_else(|| {
                Error::new(ErrorCode::ServerNotFound, format!("no server named {id}"))
            })?;
        let admin_conn = self
            .key
            .decrypt_string(row.get(0), row.get(1), &server_aad(id))?;
        Ok(Server {
            id: id.to_string(),
            admin_conn,
            host: row.get(2),
            port: row.get::<_, i32>(3) as u16,
            pooler: endpoint(row.get(4), row.get(5)),
            template_version: row.get(6),
        })
    }

    /// The active server with the fewest (not deleted) workspaces.
    fn place(&self, ctl: &mut Client) -> Result<String> {
        let row = ctl.query_opt(
            "SELECT s.id
               FROM servers AS s
               LEFT JOIN workspaces AS w ON w.server_id = s.id AND w.state <> 'deleted'
              WHERE s.active
              GROUP BY s.id, s.created_at
              ORDER BY count(w.id), s.created_at, s.id
              LIMIT 1",
            &[],
        )?;
        row.map(|r| r.get(0)).ok_or_else(|| {
            Error::new(
                ErrorCode::NoServer,
                "no active server registered: run `dl-tenancy local up` or `dl-tenancy server add`",
            )
        })
    }

    pub(crate) fn register_primary_if_empty(&self, admin_url: &str) -> Result<()> {
        let mut ctl = self.control()?;
        let n: i64 = ctl.query_one("SELECT count(*) FROM servers", &[])?.get(0);
        if n == 0 {
            self.upsert_server(
                &mut ctl,
                &ServerSpec {
                    name: "primary".into(),
                    admin_url: admin_url.into(),
                    ..Default::default()
                },
                false,
            )?;
            drop(ctl);
            self.prepare_server("primary")?;
        }
        Ok(())
    }

    pub(crate) fn upsert_server(
        &self,
        ctl: &mut Client,
        spec: &ServerSpec,
        check: bool,
    ) -> Result<()> {
        validate_server_name(&spec.name)?;
        let cfg: postgres::Config = spec
            .admin_url
            .parse()
            .map_err(|e: postgres::Error| invalid(format!("malformed admin URL: {e}")))?;
        let (url_host, url_port) = match (cfg.get_hosts().first(), cfg.get_ports().first()) {
            (Some(postgres::config::Host::Tcp(h)), p) => (Some(h.clone()), p.copied()),
            (_, p) => (None, p.copied()),
        };
        let host = spec
            .host
            .clone()
            .or(url_host)
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = spec.port.or(url_port).unwrap_or(5432);
        let pooler_host = match (spec.pooler_host.clone(), spec.pooler_port) {
            (Some(h), _) => Some(h),
            (None, Some(_)) => Some(host.clone()),
            (None, None) => None,
        };
        if pooler_host.is_some() && spec.pooler_port.is_none() {
            return Err(invalid("--pooler-host needs --pooler-port"));
        }
        if check {
            let mut admin = connect(&spec.admin_url, None)?;
            let row = admin.query_opt(
                "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                &[&EXTENSION],
            )?;
            if row.is_none() {
                return Err(Error::new(
                    ErrorCode::ExtensionUnavailable,
                    format!(
                        "the {EXTENSION} extension is not installed on server {}",
                        spec.name
                    ),
                ));
            }
        }
        let (nonce, ct) = self
            .key
            .encrypt(spec.admin_url.as_bytes(), &server_aad(&spec.name));
        ctl.execute(
            "INSERT INTO servers (id, admin_nonce, admin_ciphertext, host, port, pooler_host, pooler_port)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE
                SET admin_nonce = EXCLUDED.admin_nonce, admin_ciphertext = EXCLUDED.admin_ciphertext,
                    host = EXCLUDED.host, port = EXCLUDED.port, pooler_host = EXCLUDED.pooler_host,
                    pooler_port = EXCLUDED.pooler_port, active = true, updated_at = now()",
            &[
                &spec.name,
                &nonce,
                &ct,
                &host,
                &(port as i32),
                &pooler_host,
                &spec.pooler_port.map(|p| p as i32),
            ],
        )?;
        Ok(())
    }

    /// `server add`: register (or update) a server; checks that it is reachable and has the
    /// extension installed.
    pub fn server_add(&self, spec: &ServerSpec) -> Result<ServerInfo> {
        validate_server_name(&spec.name)?;
        let mut ctl = self.control()?;
        self.upsert_server(&mut ctl, spec, true)?;
        drop(ctl);
        self.prepare_server(&spec.name)?;
        self.server_list()?
            .servers
            .into_iter()
            .find(|s| s.id == spec.name)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "server vanished"))
    }

    /// `server list`.
    pub fn server_list(&self) -> Result<ServerList> {
        let mut ctl = self.control()?;
        let rows = ctl.query(
            "SELECT s.id, s.host, s.port, s.pooler_host, s.pooler_port, s.active, s.template_version,
                    count(w.id) AS n
               FROM servers AS s
               LEFT JOIN workspaces AS w ON w.server_id = s.id AND w.state <> 'deleted'
              GROUP BY s.id ORDER BY s.created_at, s.id",
            &[],
        )?;
        Ok(ServerList {
            servers: rows
                .iter()
                .map(|r| ServerInfo {
                    id: r.get(0),
                    direct: Endpoint {
                        host: r.get(1),
                        port: r.get::<_, i32>(2) as u16,
                    },
                    pooled: endpoint(r.get(3), r.get(4)),
                    active: r.get(5),
                    template_version: r.get(6),
                    workspaces: r.get(7),
                })
                .collect(),
        })
    }

    /// `status`: the recorded state, and for `active` a live check that the database exists
    /// and has the extension (`not_provisioned` with a message when it was dropped by hand).
    pub fn status(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        let row = ctl.query_opt(
            "SELECT server_id, state, database_name, extension_version FROM workspaces WHERE id = $1",
            &[&workspace],
        )?;
        let mut st = WorkspaceStatus {
            workspace: workspace.to_string(),
            status: "not_provisioned".into(),
            database: None,
            extension_version: None,
            server_id: None,
            message: None,
        };
        let Some(row) = row else { return Ok(st) };
        let state: String = row.get(1);
        if state == "deleted" {
            return Ok(st);
        }
        let server_id: String = row.get(0);
        let names = WorkspaceNames::recorded(workspace, row.get(2))?;
        st.database = Some(names.database());
        st.server_id = Some(server_id.clone());
        st.status = state.clone();
        st.extension_version = row.get(3);
        if state == "error" {
            // The stored error is the operator's (`dl-tenancy list`): it can name hosts, paths
            // and SQL. A tenant sees only what to do.
            st.message = Some(PROVISIONING_FAILED.into());
        }
        if state == "active" {
            let server = self.load_server(&mut ctl, &server_id)?;
            let logins: Vec<String> = ctl
                .query(
                    "SELECT login_name FROM credentials WHERE workspace_id = $1 AND active",
                    &[&workspace],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            drop(ctl);
            match live_extension_version(&server, &names)? {
                Some(v) => {
                    st.extension_version = Some(v);
                    if !logins_usable(&server, &names, &logins)? {
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
        }
        Ok(st)
    }

    /// `provision`: idempotent; serialized per workspace by an advisory lock in `dl_control`.
    /// Creates what is missing (database from the template, roles, grants, credentials) and
    /// ends `active`.
    pub fn provision(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        lock_workspace(&mut ctl, workspace)?;
        let res = self.provision_locked(&mut ctl, workspace);
        if let Err(e) = &res {
            let _ = ctl.execute(
                "UPDATE workspaces SET state = 'error', error_message = $2, updated_at = now()
                  WHERE id = $1 AND state IN ('provisioning', 'error')",
                &[&workspace, &e.to_string()],
            );
        }
        unlock_workspace(&mut ctl, workspace);
        res
    }

    fn provision_locked(&self, ctl: &mut Client, ws: &str) -> Result<WorkspaceStatus> {
        let row = ctl.query_opt(
            "SELECT server_id, state, database_name FROM workspaces WHERE id = $1",
            &[&ws],
        )?;
        // A recorded workspace keeps its names; a new one (or one deleted before) gets fresh
        // opaque ones, and nothing of those names may exist yet.
        let (server_id, state, names) = match &row {
            Some(r) if r.get::<_, &str>(1) != "deleted" => (
                r.get::<_, String>(0),
                Some(r.get::<_, String>(1)),
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
        if state.as_deref() == Some("active") {
            if let Some(version) = self.verify_complete(ctl, &server, names)? {
                fence_workspace(&mut connect(&server.admin_conn, None)?, names)?;
                return Ok(WorkspaceStatus {
                    workspace: ws.into(),
                    status: "active".into(),
                    database: Some(names.database()),
                    extension_version: Some(version),
                    server_id: Some(server_id),
                    message: None,
                });
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
                    handle = EXCLUDED.handle, state = 'provisioning', error_message = NULL,
                    updated_at = now()",
            &[&ws, &server_id, &names.database(), &handle],
        )?;
        if state.is_none() {
            // A new (or re-created) workspace: no stale credentials, and nothing of its names
            // on the server that dl-tenancy did not create.
            ctl.execute("DELETE FROM credentials WHERE workspace_id = $1", &[&ws])?;
            refuse_to_adopt(&mut connect(&server.admin_conn, None)?, names)?;
        }
        fault_point("after_record");
        let version = self.ensure_workspace(ctl, &server, names)?;
        ctl.execute(
            "UPDATE workspaces SET state = 'active', extension_version = $2, error_message = NULL,
                    updated_at = now() WHERE id = $1",
            &[&ws, &version],
        )?;
        Ok(WorkspaceStatus {
            workspace: ws.into(),
            status: "active".into(),
            database: Some(names.database()),
            extension_version: Some(version),
            server_id: Some(server_id),
            message: None,
        })
    }

    /// Everything an active workspace needs is there: database + extension, roles, credentials.
    fn verify_complete(
        &self,
        ctl: &mut Client,
        server: &Server,
        names: &WorkspaceNames,
    ) -> Result<Option<String>> {
        let creds: i64 = ctl
            .query_one(
                "SELECT count(*) FROM credentials WHERE workspace_id = $1 AND active",
                &[&names.workspace],
            )?
            .get(0);
        if creds != 2 {
            return Ok(None);
        }
        let mut admin = connect(&server.admin_conn, None)?;
        let wanted = names.all_roles();
        let roles: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
                &[&wanted],
            )?
            .get(0);
        if roles != wanted.len() as i64 {
            return Ok(None);
        }
        drop(admin);
        let active: Vec<String> = ctl
            .query(
                "SELECT login_name FROM credentials WHERE workspace_id = $1 AND active",
                &[&names.workspace],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !logins_usable(server, names, &active)? {
            return Ok(None);
        }
        live_extension_version(server, names)
    }

    /// Create (or recreate, when the installed extension version changed) the server's
    /// template database. Returns the template's extension version.
    pub fn ensure_server_template(&self, server_id: &str) -> Result<String> {
        let mut ctl = self.control()?;
        let server = self.load_server(&mut ctl, server_id)?;
        let mut admin = connect(&server.admin_conn, None)?;
        self.ensure_template(&mut ctl, &mut admin, &server)
    }

    /// Get a server ready for workspaces: the template database (creates the extension's
    /// group roles), and no CONNECT for PUBLIC on `postgres`/`template1` (tenant logins must
    /// not get in there; superusers and the pooler's auth role keep access).
    pub fn prepare_server(&self, server_id: &str) -> Result<String> {
        let version = self.ensure_server_template(server_id)?;
        let mut ctl = self.control()?;
        let server = self.load_server(&mut ctl, server_id)?;
        drop(ctl);
        let mut admin = connect(&server.admin_conn, None)?;
        admin.batch_execute(
            "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
             REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
             GRANT CONNECT ON DATABASE postgres, template1 TO dl_pooler_auth",
        )?;
        Ok(version)
    }

    fn ensure_template(
        &self,
        ctl: &mut Client,
        admin: &mut Client,
        server: &Server,
    ) -> Result<String> {
        let installed: Option<String> = admin
            .query_opt(
                "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                &[&EXTENSION],
            )?
            .and_then(|r| r.get(0));
        let Some(installed) = installed else {
            return Err(Error::new(
                ErrorCode::ExtensionUnavailable,
                format!(
                    "the {EXTENSION} extension is not installed on server {}",
                    server.id
                ),
            ));
        };
        let exists = |admin: &mut Client| -> Result<bool> {
            Ok(admin
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                    &[&TEMPLATE_DB],
                )?
                .is_some())
        };
        if server.template_version.as_deref() == Some(installed.as_str()) && exists(admin)? {
            return Ok(installed);
        }
        ctl.execute(
            "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))",
            &[&LOCK_TEMPLATE, &server.id],
        )?;
        let res = (|| -> Result<()> {
            let recorded: Option<String> = ctl
                .query_one(
                    "SELECT template_version FROM servers WHERE id = $1",
                    &[&server.id],
                )?
                .get(0);
            let t = quote_ident(TEMPLATE_DB);
            if exists(admin)? {
                if recorded.as_deref() == Some(installed.as_str()) {
                    return Ok(()); // done by a concurrent call
                }
                admin.batch_execute(&format!("ALTER DATABASE {t} WITH IS_TEMPLATE false"))?;
                admin.batch_execute(&format!("DROP DATABASE {t} WITH (FORCE)"))?;
            }
            ctl.execute(
                "UPDATE servers SET template_version = NULL WHERE id = $1",
                &[&server.id],
            )?;
            admin.batch_execute(&format!("CREATE DATABASE {t} TEMPLATE template0"))?;
            admin.batch_execute(&format!("REVOKE ALL ON DATABASE {t} FROM PUBLIC"))?;
            {
                let mut tdb = connect(&server.admin_conn, Some(TEMPLATE_DB))?;
                tdb.batch_execute(&format!("CREATE EXTENSION {}", quote_ident(EXTENSION)))?;
            }
            admin.batch_execute(&format!(
                "ALTER DATABASE {t} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            ))?;
            ctl.execute(
                "UPDATE servers SET template_version = $2, updated_at = now() WHERE id = $1",
                &[&server.id, &installed],
            )?;
            Ok(())
        })();
        let _ = ctl.execute(
            "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
            &[&LOCK_TEMPLATE, &server.id],
        );
        res.map(|()| installed)
    }

    fn ensure_workspace(
        &self,
        ctl: &mut Client,
        server: &Server,
        names: &WorkspaceNames,
    ) -> Result<String> {
        let mut admin = connect(&server.admin_conn, None)?;
        self.ensure_template(ctl, &mut admin, server)?;
        let db = names.database();
        let qdb = quote_ident(&db);
        let wrole = names.workspace_role();
        let qwrole = quote_ident(&wrole);

        // The NOLOGIN role named like the database (pg_hba samerole).
        match admin.query_opt(
            "SELECT rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls
               FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&wrole],
        )? {
            None => admin.batch_execute(&format!("CREATE ROLE {qwrole} NOLOGIN"))?,
            Some(r) if r.get::<_, bool>(0) => {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!("role {wrole} exists and is not a plain NOLOGIN group role"),
                ))
            }
            Some(_) => {}
        }

        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                &[&db],
            )?
            .is_some();
        if !exists {
            admin.batch_execute(&format!(
                "CREATE DATABASE {qdb} TEMPLATE {}",
                quote_ident(TEMPLATE_DB)
            ))?;
        }
        fault_point("after_create_database");
        admin.batch_execute(&format!(
            "REVOKE ALL ON DATABASE {qdb} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {qdb} TO {qwrole}, dl_platform_runtime, dl_pooler_auth"
        ))?;

        let version = {
            let mut wsdb = connect(&server.admin_conn, Some(&db))?;
            let q = "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1";
            match wsdb.query_opt(q, &[&EXTENSION])? {
                Some(r) => r.get::<_, String>(0),
                None => {
                    wsdb.batch_execute(&format!("CREATE EXTENSION {}", quote_ident(EXTENSION)))?;
                    wsdb.query_one(q, &[&EXTENSION])?.get(0)
                }
            }
        };

        fence_workspace(&mut admin, names)?;
        fault_point("after_roles");
        for kind in Kind::ALL {
            self.ensure_credential(ctl, &mut admin, names, kind)?;
        }
        Ok(version)
    }

    fn ensure_credential(
        &self,
        ctl: &mut Client,
        admin: &mut Client,
        names: &WorkspaceNames,
        kind: Kind,
    ) -> Result<()> {
        let ws = names.workspace.as_str();
        let rows = ctl.query(
            "SELECT slot, active, nonce, ciphertext, coalesce(valid_until > now(), false)
               FROM credentials WHERE workspace_id = $1 AND kind = $2",
            &[&ws, &kind.as_str()],
        )?;
        let active = rows.iter().find(|r| r.get::<_, bool>(1));
        match active {
            Some(r) => {
                let slot = Slot::parse(r.get(0)).unwrap_or(Slot::A);
                let pw =
                    self.key
                        .decrypt_string(r.get(2), r.get(3), &credential_aad(ws, kind, slot))?;
                set_password(admin, &names.login(kind, slot), &pw)?;
                let other = slot.other();
                let in_grace = rows
                    .iter()
                    .any(|r| r.get::<_, &str>(0) == other.as_str() && r.get::<_, bool>(4));
                if !in_grace {
                    revoke_login(admin, &names.login(kind, other))?;
                }
            }
            None => {
                let pw = random_password();
                let (nonce, ct) = self
                    .key
                    .encrypt(pw.as_bytes(), &credential_aad(ws, kind, Slot::A));
                let mut tx = ctl.transaction()?;
                tx.execute(
                    "DELETE FROM credentials WHERE workspace_id = $1 AND kind = $2",
                    &[&ws, &kind.as_str()],
                )?;
                tx.execute(
                    "INSERT INTO credentials (workspace_id, kind, slot, login_name, active, nonce, ciphertext)
                     VALUES ($1, $2, 'a', $3, true, $4, $5)",
                    &[&ws, &kind.as_str(), &names.login(kind, Slot::A), &nonce, &ct],
                )?;
                tx.commit()?;
                set_password(admin, &names.login(kind, Slot::A), &pw)?;
                revoke_login(admin, &names.login(kind, Slot::B))?;
            }
        }
        Ok(())
    }

    /// An active workspace's recorded names and server (`not_provisioned` otherwise).
    fn active_workspace(&self, ctl: &mut Client, ws: &str) -> Result<(WorkspaceNames, String)> {
        validate_workspace_id(ws)?;
        let row = ctl.query_opt(
            "SELECT server_id, state, error_message, database_name FROM workspaces WHERE id = $1",
            &[&ws],
        )?;
        let Some(row) = row else {
            return Err(not_provisioned(ws));
        };
        let state: String = row.get(1);
        require_active(ws, Some(&state), row.get(2))?;
        Ok((WorkspaceNames::recorded(ws, row.get(3))?, row.get(0)))
    }

    fn active_slot(&self, ctl: &mut Client, ws: &str, kind: Kind) -> Result<Slot> {
        let row = ctl.query_opt(
            "SELECT slot FROM credentials WHERE workspace_id = $1 AND kind = $2 AND active",
            &[&ws, &kind.as_str()],
        )?;
        row.and_then(|r| Slot::parse(r.get(0)))
            .ok_or_else(|| not_provisioned(ws))
    }

    /// `connection-uris metadata`: where and as whom to connect; no secrets.
    pub fn metadata(&self, workspace: &str) -> Result<Metadata> {
        let mut ctl = self.control()?;
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
            pooled: server.pooler.clone(),
            workspace_role: names.workspace_role(),
            roles,
        })
    }

    /// `connection-uris reveal`: the URI of the active login of `kind`, direct or through the
    /// server's PgBouncer. The same URI until the next rotation.
    pub fn reveal(&self, workspace: &str, kind: Kind, pooled: bool) -> Result<Reveal> {
        let mut ctl = self.control()?;
        let (names, server_id) = self.active_workspace(&mut ctl, workspace)?;
        let server = self.load_server(&mut ctl, &server_id)?;
        let row = ctl
            .query_opt(
                "SELECT slot, nonce, ciphertext FROM credentials
                  WHERE workspace_id = $1 AND kind = $2 AND active",
                &[&workspace, &kind.as_str()],
            )?
            .ok_or_else(|| not_provisioned(workspace))?;
        let slot = Slot::parse(row.get(0)).ok_or_else(|| not_provisioned(workspace))?;
        let pw = self.key.decrypt_string(
            row.get(1),
            row.get(2),
            &credential_aad(workspace, kind, slot),
        )?;
        let ep = if pooled {
            server.pooler.clone().ok_or_else(|| {
                Error::new(
                    ErrorCode::PoolerNotConfigured,
                    format!("server {} has no pooler registered", server.id),
                )
            })?
        } else {
            Endpoint {
                host: server.host.clone(),
                port: server.port,
            }
        };
        let login = names.login(kind, slot);
        let uri = format!(
            "postgresql://{}:{}@{}:{}/{}",
            percent_encode(&login),
            percent_encode(&pw),
            format_host(&ep.host),
            ep.port,
            percent_encode(&names.database())
        );
        Ok(Reveal {
            workspace: workspace.into(),
            kind,
            pooled,
            uri,
            login,
            database: names.database(),
        })
    }

    /// `connection-uris rotate`: a new password on the standby login of `kind`, which becomes
    /// the active one. The previous login keeps working for `grace_seconds` (VALID UNTIL), or
    /// with 0 loses its password at once (new logins fail, direct and pooled).
    pub fn rotate(&self, workspace: &str, kind: Kind, grace_seconds: u64) -> Result<Rotation> {
        validate_workspace_id(workspace)?;
        if grace_seconds > 366 * 86400 {
            return Err(invalid("grace period longer than a year"));
        }
        let mut ctl = self.control()?;
        lock_workspace(&mut ctl, workspace)?;
        let res = self.rotate_locked(&mut ctl, workspace, kind, grace_seconds);
        unlock_workspace(&mut ctl, workspace);
        res
    }

    /// End the grace periods that are over: each previous login whose `VALID UNTIL` has passed
    /// is revoked ([`revoke_login`]: NOLOGIN, no password, its sessions ended). `serve` runs
    /// this every [`GRACE_SWEEP_INTERVAL`], `rotate` for its workspace. Returns the logins it
    /// revoked.
    pub fn expire_grace_periods(&self) -> Result<Vec<String>> {
        let mut ctl = self.control()?;
        let due: Vec<String> = ctl
            .query(
                "SELECT DISTINCT workspace_id FROM credentials
                  WHERE NOT active AND valid_until <= now() ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut revoked = vec![];
        for ws in due {
            lock_workspace(&mut ctl, &ws)?;
            let res = self.expire_grace_locked(&mut ctl, &ws);
            unlock_workspace(&mut ctl, &ws);
            revoked.extend(res?);
        }
        Ok(revoked)
    }

    fn expire_grace_locked(&self, ctl: &mut Client, ws: &str) -> Result<Vec<String>> {
        let rows = ctl.query(
            "SELECT c.login_name, w.server_id FROM credentials AS c JOIN workspaces AS w ON w.id = c.workspace_id
              WHERE c.workspace_id = $1 AND NOT c.active AND c.valid_until <= now()",
            &[&ws],
        )?;
        let mut revoked = vec![];
        for row in rows {
            let login: String = row.get(0);
            let server = self.load_server(ctl, row.get(1))?;
            revoke_login(&mut connect(&server.admin_conn, None)?, &login)?;
            ctl.execute(
                "UPDATE credentials SET valid_until = NULL
                  WHERE workspace_id = $1 AND login_name = $2 AND NOT active",
                &[&ws, &login],
            )?;
            revoked.push(login);
        }
        Ok(revoked)
    }

    fn rotate_locked(
        &self,
        ctl: &mut Client,
        ws: &str,
        kind: Kind,
        grace: u64,
    ) -> Result<Rotation> {
        self.expire_grace_locked(ctl, ws)?;
        let (names, server_id) = self.active_workspace(ctl, ws)?;
        let names = &names;
        let server = self.load_server(ctl, &server_id)?;
        let old = self.active_slot(ctl, ws, kind)?;
        let new = old.other();
        let new_login = names.login(kind, new);
        let old_login = names.login(kind, old);
        let mut admin = connect(&server.admin_conn, None)?;
        ensure_login(&mut admin, names, kind, new)?;
        let pw = random_password();
        let (nonce, ct) = self
            .key
            .encrypt(pw.as_bytes(), &credential_aad(ws, kind, new));
        set_password(&mut admin, &new_login, &pw)?;
        // The server's clock decides VALID UNTIL.
        let until: Option<String> = if grace > 0 {
            Some(
                admin
                    .query_one(
                        "SELECT (pg_catalog.now() + pg_catalog.make_interval(secs => $1::float8))::text",
                        &[&(grace as f64)],
                    )?
                    .get(0),
            )
        } else {
            None
        };
        let mut tx = ctl.transaction()?;
        tx.execute(
            "UPDATE credentials SET active = false, valid_until = $3::text::timestamptz, rotated_at = now()
              WHERE workspace_id = $1 AND kind = $2",
            &[&ws, &kind.as_str(), &until],
        )?;
        tx.execute(
            "INSERT INTO credentials (workspace_id, kind, slot, login_name, active, nonce, ciphertext)
             VALUES ($1, $2, $3, $4, true, $5, $6)
             ON CONFLICT (workspace_id, kind, slot) DO UPDATE
                SET active = true, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
                    valid_until = NULL, rotated_at = now()",
            &[&ws, &kind.as_str(), &new.as_str(), &new_login, &nonce, &ct],
        )?;
        tx.commit()?;
        match &until {
            Some(ts) => admin.batch_execute(&format!(
                "ALTER ROLE {} VALID UNTIL {}",
                quote_ident(&old_login),
                quote_literal(ts)
            ))?,
            None => revoke_login(&mut admin, &old_login)?,
        }
        Ok(Rotation {
            workspace: ws.into(),
            kind,
            login: new_login,
            previous_login: old_login,
            previous_valid_until: until,
            grace_seconds: grace,
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

    /// `deprovision`: terminate sessions, drop the database and the workspace's roles, mark the
    /// workspace deleted. `confirm` must repeat the workspace id.
    pub fn deprovision(&self, workspace: &str, confirm: &str) -> Result<Deprovisioned> {
        validate_workspace_id(workspace)?;
        if confirm != workspace {
            return Err(Error::new(
                ErrorCode::ConfirmationRequired,
                format!("deprovision drops the database: pass --confirm {workspace}"),
            ));
        }
        let mut ctl = self.control()?;
        lock_workspace(&mut ctl, workspace)?;
        let res = (|| -> Result<Deprovisioned> {
            let row = ctl.query_opt(
                "SELECT server_id, state, database_name FROM workspaces WHERE id = $1",
                &[&workspace],
            )?;
            let Some(row) = row.filter(|r| r.get::<_, &str>(1) != "deleted") else {
                return Ok(Deprovisioned {
                    workspace: workspace.into(),
                    status: "deleted".into(),
                    database: None,
                    dropped_database: false,
                    dropped_roles: vec![],
                });
            };
            let names = WorkspaceNames::recorded(workspace, row.get(2))?;
            let mut out = Deprovisioned {
                workspace: workspace.into(),
                status: "deleted".into(),
                database: Some(names.database()),
                dropped_database: false,
                dropped_roles: vec![],
            };
            let server = self.load_server(&mut ctl, row.get(0))?;
            let mut admin = connect(&server.admin_conn, None)?;
            let db = names.database();
            let exists = admin
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                    &[&db],
                )?
                .is_some();
            if exists {
                admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&db)
                ))?;
                out.dropped_database = true;
            }
            for role in names.all_roles() {
                let exists = admin
                    .query_opt(
                        "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                        &[&role],
                    )?
                    .is_some();
                if exists {
                    // Sessions of the logins elsewhere (there should be none) end first.
                    admin.execute(
                        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
                          WHERE usename = $1",
                        &[&role],
                    )?;
                    admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&role)))?;
                    out.dropped_roles.push(role);
                }
            }
            // The workspace's API tokens die with it: whoever gets this id next must not be
            // reachable with them.
            crate::tokens::ensure_schema(&mut ctl)?;
            let mut tx = ctl.transaction()?;
            tx.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE workspace_id = $1 AND revoked_at IS NULL",
                &[&workspace],
            )?;
            tx.execute(
                "DELETE FROM credentials WHERE workspace_id = $1",
                &[&workspace],
            )?;
            tx.execute(
                "UPDATE workspaces SET state = 'deleted', error_message = NULL, updated_at = now()
                  WHERE id = $1",
                &[&workspace],
            )?;
            tx.commit()?;
            Ok(out)
        })();
        unlock_workspace(&mut ctl, workspace);
        res
    }
}

/// The workspace's fences ([`crate::fences`]), put back as they should be: the database's
/// connection cap and preloaded guard, and every login's attributes, cap and defaults.
pub(crate) fn fence_workspace(admin: &mut Client, names: &WorkspaceNames) -> Result<()> {
    let (preload, library) = SESSION_PRELOAD;
    admin.batch_execute(&format!(
        "ALTER DATABASE {qdb} CONNECTION LIMIT {DATABASE_CONNECTION_LIMIT};
         ALTER DATABASE {qdb} SET {preload} = {}",
        quote_literal(library),
        qdb = quote_ident(&names.database()),
    ))?;
    for kind in Kind::ALL {
        for slot in [Slot::A, Slot::B] {
            ensure_login(admin, names, kind, slot)?;
        }
    }
    Ok(())
}

/// A new workspace's names must be free on its server: dl-tenancy never takes over a role or
/// database it did not create (the names are random, so a taken one means somebody made it on
/// purpose).
fn refuse_to_adopt(admin: &mut Client, names: &WorkspaceNames) -> Result<()> {
    let taken: Vec<String> = admin
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)
             UNION ALL
             SELECT datname::text FROM pg_catalog.pg_database WHERE datname = $2",
            &[&names.all_roles(), &names.database()],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if taken.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} already exist(s) on the server and were not created by dl-tenancy; refusing to use them",
                taken.join(", ")
            ),
        ))
    }
}

/// What `status` says of a workspace whose provisioning failed.
const PROVISIONING_FAILED: &str = "provisioning did not finish; run provision again";
/// What `status` says of an active workspace whose logins were changed outside dl-tenancy.
const CREDENTIALS_BROKEN: &str =
    "the workspace's logins were changed outside dl-tenancy; run provision to repair them";

/// Both active logins exist, may log in, and still belong to the workspace and their group.
fn logins_usable(server: &Server, names: &WorkspaceNames, logins: &[String]) -> Result<bool> {
    if logins.len() != Kind::ALL.len() {
        return Ok(false);
    }
    let mut admin = connect(&server.admin_conn, None)?;
    let usable: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_roles AS r
              WHERE r.rolname = ANY($1) AND r.rolcanlogin AND NOT r.rolsuper
                AND pg_catalog.pg_has_role(r.oid, $2::text, 'MEMBER')
                AND (pg_catalog.pg_has_role(r.oid, 'dl_tenant_read', 'MEMBER')
                     OR pg_catalog.pg_has_role(r.oid, 'dl_tenant_override', 'MEMBER'))
                AND (r.rolvaliduntil IS NULL OR r.rolvaliduntil > pg_catalog.now())",
            &[&logins, &names.workspace_role()],
        )?
        .get(0);
    Ok(usable == logins.len() as i64)
}

/// The extension version in the workspace database, `None` if the database or extension is gone.
fn live_extension_version(server: &Server, names: &WorkspaceNames) -> Result<Option<String>> {
    let mut admin = connect(&server.admin_conn, None)?;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&names.database()],
        )?
        .is_some();
    drop(admin);
    if !exists {
        return Ok(None);
    }
    let mut db = match connect(&server.admin_conn, Some(&names.database())) {
        Ok(c) => c,
        Err(e) if e.sqlstate() == Some("3D000") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(db
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )?
        .map(|r| r.get(0)))
}
