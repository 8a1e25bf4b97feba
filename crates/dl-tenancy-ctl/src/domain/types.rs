//! What the operations answer: the JSON bodies of the CLI and the HTTP API, and the servers
//! the control database records.

use crate::domain::names::Kind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `GET status`: `{"workspace","status","database","extension_version",...}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceStatus {
    pub workspace: String,
    /// `not_provisioned` | `provisioning` | `active` | `error`
    pub status: String,
    pub database: Option<String>,
    pub extension_version: Option<String>,
    pub server_id: Option<String>,
    /// Why a workspace is `error` or `suspended`, or why a recorded workspace is
    /// `not_provisioned` now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A `suspended` (deleted) workspace: when the sweep purges it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<String>,
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
    /// Carries `sslmode` (and `sslrootcert`, a path on the machine that revealed it).
    pub uri: String,
    pub login: String,
    pub database: String,
    /// `verify-full` when the server's CA is known (the local cluster's, or `server add
    /// --ca-file`), else `require`.
    pub sslmode: String,
    /// The CA certificate (PEM) to trust for this server: save it where the app runs and
    /// point `sslrootcert` at it. `null` when the server was registered without one.
    pub ca_certificate: Option<String>,
    /// The parts, for tools that take no URI (or mangle one): host, port, user (= `login`),
    /// password, `database`, `sslmode` and the CA file on the machine that revealed it.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub sslrootcert: Option<String>,
    /// The same as a libpq keyword/value string (`psql "..."`, PHP PDO `"pgsql:" . $it`).
    pub keywords: String,
    /// The same as a pgjdbc URL (`jdbc:postgresql://host:port/db?user=..&password=..`): pgjdbc
    /// takes no `postgresql://user:pass@...`, and its error for one echoes the password.
    pub jdbc_url: String,
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

/// `purge` (and each workspace the purge sweep dropped).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Deprovisioned {
    pub workspace: String,
    pub status: String,
    /// The database that was dropped (`None`: there was no workspace of that id).
    pub database: Option<String>,
    pub dropped_database: bool,
    pub dropped_roles: Vec<String>,
}

impl Deprovisioned {
    pub(crate) fn nothing(ws: &str) -> Self {
        Deprovisioned {
            workspace: ws.into(),
            status: "deleted".into(),
            database: None,
            dropped_database: false,
            dropped_roles: vec![],
        }
    }
}

/// `deprovision`: the workspace is suspended (logins refused, data kept until `purge_after`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Suspension {
    pub workspace: String,
    /// `suspended`, or `not_provisioned` when there was no workspace of that id.
    pub status: String,
    pub database: Option<String>,
    pub server_id: Option<String>,
    pub suspended_at: Option<String>,
    /// When the purge sweep drops it (`undelete` before then brings it back).
    pub purge_after: Option<String>,
    pub retention_seconds: Option<u64>,
    /// Sessions on its database or of its logins that this call ended.
    pub sessions_ended: i64,
}

impl Suspension {
    pub(crate) fn nothing(ws: &str) -> Self {
        Suspension {
            workspace: ws.into(),
            status: "not_provisioned".into(),
            database: None,
            server_id: None,
            suspended_at: None,
            purge_after: None,
            retention_seconds: None,
            sessions_ended: 0,
        }
    }
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
    /// PostgreSQL's own TCP port on `host`, when `port` is a front (`local up`'s direct
    /// PgBouncer): where other servers reach it (a move's stream). Default: `port`.
    pub platform_port: Option<u16>,
    /// The server's PgBouncer (auth_query through `dl_internal.pooler_user_lookup`).
    pub pooler_host: Option<String>,
    pub pooler_port: Option<u16>,
    /// The CA certificate file (PEM) that signs the certificates of the server and its
    /// pooler: revealed URIs then say `sslmode=verify-full` with it as `sslrootcert`.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub id: String,
    pub admin_conn: String,
    pub host: String,
    pub port: u16,
    /// PostgreSQL's own port on `host` (`port` unless a front serves tenants there).
    pub platform_port: u16,
    pub pooler: Option<Endpoint>,
    pub template_version: Option<String>,
    pub ca_file: Option<String>,
}

/// One workspace database's pools in the local pooler (`SHOW POOLS`, its logins together).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PoolStats {
    pub database: String,
    pub clients_active: u64,
    /// Clients waiting for a server connection (the server's pooled slots are taken, or the
    /// workspace's pool is full).
    pub clients_waiting: u64,
    pub servers_active: u64,
    pub servers_idle: u64,
    /// How long the longest-waiting client has waited.
    pub longest_wait_ms: u64,
}

/// One server's connection slots now (`serve`'s /metrics).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerSlots {
    pub server: String,
    pub max_connections: i64,
    /// Client sessions on the server, the platform's included.
    pub in_use: i64,
    /// Slots workspaces never take: past admission's two caps (the platform's, the
    /// superusers', the pooler's lookups').
    pub reserved: i64,
    pub free: i64,
    /// Admission's caps and the workspace sessions counted against them (zeros without the
    /// library in `shared_preload_libraries`).
    pub admission: Admission,
}

/// A workspace database's storage quota and where it stands (src/quota.rs in the extension).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Storage {
    /// The quota (`dl-tenancy limits --storage-mb`); 0: none set on the database.
    pub limit_bytes: i64,
    /// `under`; `warned` (from 80% of the quota); `refused` (at the quota: writes that grow
    /// the database fail with 53100 until it is back below 90%); `unmeasured` (the server's
    /// watchdog has not measured it: the library is not in shared_preload_libraries, or it
    /// was just set); `none`.
    pub state: String,
}

/// What `SHOW dl_tenancy.admission` tells (src/admission.rs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Admission {
    pub pooled: AdmissionWay,
    pub direct: AdmissionWay,
    /// Refusals since the server started, per database that had any.
    pub refused: Vec<Refused>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdmissionWay {
    pub sessions: i64,
    pub slots: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refused {
    pub database: String,
    pub pooled: u64,
    pub direct: u64,
}

/// One workspace's load now (`serve`'s /metrics). Identified by its id and server only:
/// nothing a tenant wrote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceLoad {
    pub workspace: String,
    pub server: String,
    /// Sessions on its database: direct ones and the pooler's server connections.
    pub sessions: i64,
    pub database_bytes: i64,
    /// Its clients in the local pooler (zeros when it has none there).
    pub pooler: PoolStats,
    /// Its logins refused by admission since the server started: through the pooler (57P03,
    /// its clients waited) and direct (53300).
    pub refused_pooled: u64,
    pub refused_direct: u64,
    pub storage: Storage,
}

/// What every server and workspace holds now: one query per server, one `SHOW POOLS`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LoadSnapshot {
    pub servers: Vec<ServerSlots>,
    pub workspaces: Vec<WorkspaceLoad>,
    /// Servers that did not answer (their workspaces are left out).
    pub unreachable: Vec<String>,
    /// The continuous archive of each server the tool archives (the local one).
    pub archives: Vec<ArchiveFigures>,
}

/// A server's continuous archive now (`serve`'s /metrics; `archive status` in full).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ArchiveFigures {
    pub server: String,
    /// When the last WAL segment was archived, and when the newest backup ended (seconds
    /// since the epoch).
    pub last_archived_at: Option<i64>,
    pub last_backup_at: Option<i64>,
    /// WAL written past the last archived segment: what a lost server would lose.
    pub lag_bytes: Option<u64>,
    /// Archiving attempts that failed since the server started.
    pub failures: i64,
}
