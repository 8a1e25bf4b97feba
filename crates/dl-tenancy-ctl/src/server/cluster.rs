//! `local up/down/status`: a PostgreSQL 15 cluster and two PgBouncers in a data directory:
//! the pooler (transaction mode, pooled URIs) and the direct front (session mode, direct
//! URIs: each client its own server session, as if it reached PostgreSQL itself, but behind
//! the pooler's cap on sockets logging in; PostgreSQL's own port is the platform's).
//!
//! Layout of the data directory (default `./.dl-tenancy/`):
//! - `pg/`: the cluster (owned by the server OS user, `postgres` when we run as root);
//! - `run/`: unix sockets; `log/postgresql.log`: the server log;
//! - `pgbouncer/`: `pgbouncer.ini`, `userlist.txt` (empty), log and pid file;
//! - `pgbouncer-direct/`: the same for the direct front;
//! - `tls/`: the cluster's CA (`ca.crt`, what clients trust) and the server certificate that
//!   PostgreSQL and PgBouncer present ([`crate::certs`]);
//! - `secret.key`: 32 random bytes (0600) encrypting stored passwords;
//! - `local.json`: the ports;
//! - `pgbackrest/`: pgBackRest's configuration, repository and log (`backrest.rs`);
//! - `pitr/`: the scratch clusters of point-in-time restores while they run.

use crate::base::certs::CertFiles;
use crate::base::secret::SecretKey;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::server::backrest::{Backrest, PgSide};
use pg_harness::{ClusterSpec, PgBouncerIni, PgBouncerSpec};
use serde::{Deserialize, Serialize};
use std::fs;

use std::path::{Path, PathBuf};

/// Default PostgreSQL port of the local cluster (a free one is picked when it is taken).
pub const DEFAULT_PG_PORT: u16 = 55432;
/// Default PgBouncer port.
pub const DEFAULT_POOLER_PORT: u16 = 56432;
/// Default port of the direct front (tenants' direct URIs).
pub const DEFAULT_DIRECT_PORT: u16 = 55433;
/// The PgBouncer auth user: LOGIN, member of dl_pooler_auth, peer-authenticated on the socket.
pub const POOLER_AUTH_USER: &str = "dl_pgbouncer";
/// The names the local server certificate is good for (the first is its CN): what revealed
/// URIs use (`127.0.0.1`) and what people type.
pub const CERT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Server id of the local cluster in `dl_control`.
pub const LOCAL_SERVER_ID: &str = "local";
/// PgBouncer's auth_query. A login the lookup does not answer for (unknown, refused,
/// expired, another workspace's) gets a decoy verifier, of a random password nobody keeps,
/// instead of no row: the client then fails the SCRAM exchange like one with a wrong password
/// ("SASL authentication failed"), so the pooler's answer says nothing about which logins
/// exist (it said "no such user" before).
/// It runs in the server's lookup database ([`AUTH_DBNAME`]).
pub fn auth_query(decoy_verifier: &str) -> String {
    format!(
        "SELECT $1::name, coalesce((SELECT passwd FROM dl_internal.pooler_login_lookup($1)), {})",
        crate::plan::quote::quote_literal(decoy_verifier)
    )
}

/// The PgBouncer setting that makes it run [`auth_query`] in the server's lookup database,
/// never in the database the client names: a login into a foreign database, existing or not,
/// then passes the pooler only with a right password and is refused by the server's pg_hba
/// (samerole) with the same answer either way. Every PgBouncer in front of a dl_tenancy
/// server needs it (README, "Scaling out").
pub const AUTH_DBNAME: (&str, &str) = ("auth_dbname", crate::domain::names::POOLER_LOOKUP_DB);
/// `local.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalState {
    /// PostgreSQL's own port: the platform's, and other servers' for a move's stream.
    pub pg_port: u16,
    pub pooler_port: u16,
    /// The direct front's port, in tenants' direct URIs (clusters made before it: picked at
    /// the next `local up`; their tenants' older direct URIs still reach `pg_port`).
    #[serde(default)]
    pub direct_port: Option<u16>,
    /// The server's `max_connections` (clusters made before it was recorded: the default).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Full backups the repository keeps (`repo1-retention-full`).
    #[serde(default = "default_retention_full")]
    pub retention_full: u32,
}

fn default_retention_full() -> u32 {
    crate::domain::limits::DEFAULT_RETENTION_FULL
}

fn default_max_connections() -> u32 {
    crate::domain::limits::DEFAULT_MAX_CONNECTIONS
}

fn abs(dir: &Path) -> Result<PathBuf> {
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    })
}

impl LocalState {
    pub fn read(data_dir: &Path) -> Result<LocalState> {
        let p = data_dir.join("local.json");
        let text = fs::read_to_string(&p).map_err(|_| {
            Error::new(
                ErrorCode::LocalNotInitialized,
                format!(
                    "no local cluster in {}: run `dl-tenancy local up` (or pass --admin-url)",
                    data_dir.display()
                ),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorCode::LocalNotInitialized,
                format!("{}: {e}", p.display()),
            )
        })
    }

    pub(crate) fn write(&self, data_dir: &Path) -> Result<()> {
        let p = data_dir.join("local.json");
        let tmp = data_dir.join("local.json.tmp");
        fs::write(&tmp, serde_json::to_string_pretty(self).unwrap() + "\n")?;
        fs::rename(tmp, p)?;
        Ok(())
    }

    /// Superuser connection over the unix socket (peer authentication, no password).
    pub fn admin_conn_string(&self, data_dir: &Path, db: &str) -> String {
        let run = abs(data_dir)
            .unwrap_or_else(|_| data_dir.to_path_buf())
            .join("run");
        format!(
            "host={} port={} user=postgres dbname={db}",
            run.display(),
            self.pg_port
        )
    }
}

/// Output of `local up/down/status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LocalStatus {
    pub data_dir: String,
    pub postgres: LocalServerStatus,
    pub pooler: LocalServerStatus,
    /// The direct front (tenants' direct URIs).
    pub direct: LocalServerStatus,
    pub control_database: String,
    pub server_id: String,
    pub extension_version: Option<String>,
    /// The CA clients trust for both servers (`sslrootcert` of revealed URIs).
    pub ca_file: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LocalServerStatus {
    pub host: String,
    pub port: u16,
    pub running: bool,
    pub log: String,
}

/// Options of `local up`.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    pub data_dir: PathBuf,
    /// Used at the first `up` (then remembered in local.json); a later value replaces it.
    pub pg_port: Option<u16>,
    pub pooler_port: Option<u16>,
    /// The direct front's port (remembered the same way; default 55433 or a free one).
    pub direct_port: Option<u16>,
    /// The server's `max_connections` (remembered the same way; the default
    /// [`DEFAULT_MAX_CONNECTIONS`](crate::domain::limits::DEFAULT_MAX_CONNECTIONS)).
    pub max_connections: Option<u32>,
    /// Full backups the pgBackRest repository keeps (remembered the same way; the default
    /// [`DEFAULT_RETENTION_FULL`](crate::domain::limits::DEFAULT_RETENTION_FULL)).
    pub retention_full: Option<u32>,
}

pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Result<Layout> {
        Ok(Layout { dir: abs(dir)? })
    }
    pub(crate) fn certs(&self) -> CertFiles {
        CertFiles::in_dir(&self.dir.join("tls"))
    }
    /// The local server's pgBackRest (its stanza is the server's id).
    pub(crate) fn backrest(&self) -> Backrest {
        Backrest::in_data_dir(&self.dir, LOCAL_SERVER_ID)
    }
    pub(crate) fn pg_side(&self, state: &LocalState) -> PgSide {
        PgSide {
            data_dir: self.dir.join("pg"),
            socket_dir: self.dir.join("run"),
            port: state.pg_port,
        }
    }
    /// Where point-in-time restores make their scratch clusters, one per workspace database.
    pub(crate) fn scratch(&self, database: &str) -> PathBuf {
        self.dir.join("pitr").join(database)
    }
    pub(crate) fn cluster(&self, state: &LocalState) -> ClusterSpec {
        let certs = self.certs();
        let path = |p: &Path| p.display().to_string();
        ClusterSpec {
            data_dir: self.dir.join("pg"),
            socket_dir: self.dir.join("run"),
            port: state.pg_port,
            log_file: self.dir.join("log").join("postgresql.log"),
            conf: vec![
                ("log_connections".into(), "on".into()),
                ("max_connections".into(), state.max_connections.to_string()),
                ("ssl".into(), "on".into()),
                ("ssl_cert_file".into(), path(&certs.server_cert)),
                ("ssl_key_file".into(), path(&certs.server_key)),
                ("ssl_min_protocol_version".into(), "TLSv1.2".into()),
                // A move streams a workspace off this server by logical replication.
                ("wal_level".into(), "logical".into()),
            ]
            .into_iter()
            .chain(crate::domain::limits::watchdog_settings())
            .chain(crate::domain::limits::admission_settings(
                state.max_connections,
            ))
            // Every WAL segment into the repository (`archive_mode` needs a restart).
            .chain(self.backrest().archive_settings())
            .collect(),
            hba: Some(hba_conf()),
            ident: Some(ident_conf()),
        }
    }
    pub(crate) fn pgbouncer(&self, state: &LocalState) -> PgBouncerSpec {
        let dir = self.dir.join("pgbouncer");
        // PgBouncer reaches PostgreSQL over the unix socket, where TLS has nothing to protect.
        let mut settings = crate::domain::limits::POOLER_SETTINGS.to_vec();
        let (budget_key, budget) = crate::domain::limits::pooler_budget(state.max_connections);
        settings.extend([
            (budget_key, budget.as_str()),
            // The console a move drives (pooler.rs).
            ("admin_users", crate::server::pooler::POOLER_ADMIN_USER),
        ]);
        let ini = self.bouncer_ini(
            &dir,
            state.pooler_port,
            (&self.dir.join("run"), state.pg_port),
            "transaction",
            &settings,
        );
        // Workspaces moved to other servers keep their pooled URIs: routes, and verified TLS
        // to the servers they lead to (pooler.rs; the [pgbouncer] section comes last).
        let ini = ini.replacen(
            "[databases]\n",
            &format!(
                "[databases]\n%include {}\n",
                dir.join(crate::server::pooler::ROUTES_FILE).display()
            ),
            1,
        ) + &format!(
            "%include {}\n",
            dir.join(crate::server::pooler::SERVER_TLS_FILE).display()
        );
        let mut userlist = auth_userlist();
        // The console and the auth user of moved workspaces' routes (pooler.rs).
        if let Ok(key) = SecretKey::load(&self.dir, false) {
            userlist.push_str(&crate::server::pooler::userlist_entries(&key));
        }
        PgBouncerSpec {
            dir,
            listen_port: state.pooler_port,
            ini,
            userlist,
        }
    }

    /// The ini both PgBouncers share: clients only in TLS (PgBouncer refuses others before
    /// any login) with the cluster's certificate, logins looked up with [`auth_query`] in the
    /// server's lookup database; every database (`*`) at `server` (a socket directory or a
    /// host, and PostgreSQL's port), then `settings`.
    fn bouncer_ini(
        &self,
        dir: &Path,
        port: u16,
        server: (&Path, u16),
        pool_mode: &str,
        settings: &[(&str, &str)],
    ) -> String {
        let decoy = crate::base::secret::scram_verifier(&crate::base::secret::random_password());
        let auth_query = auth_query(&decoy);
        let certs = self.certs();
        let (key, cert, ca) = (
            certs.server_key.display().to_string(),
            certs.server_cert.display().to_string(),
            certs.ca_cert.display().to_string(),
        );
        let mut all = settings.to_vec();
        all.extend([
            AUTH_DBNAME,
            ("client_tls_sslmode", "require"),
            ("client_tls_key_file", key.as_str()),
            ("client_tls_cert_file", cert.as_str()),
            ("client_tls_ca_file", ca.as_str()),
        ]);
        pg_harness::pgbouncer_ini(&PgBouncerIni {
            dir,
            listen_port: port,
            server_socket_dir: server.0,
            server_port: server.1,
            auth_type: "scram-sha-256",
            auth_user: Some(POOLER_AUTH_USER),
            auth_query: Some(&auth_query),
            pool_mode,
            extra: &all,
        })
    }

    /// The direct front: a session-mode PgBouncer on the direct URIs' port. Each client gets
    /// a server session of its own over TCP (TLS, verified), so admission counts it as direct
    /// and the server's caps answer its login (53300 at once: scripts/pgbouncer/
    /// session-mode-front.patch), and the session ends with the client's (`server_lifetime`
    /// 0). Logins are looked up as the pooler's are, on the unix socket.
    pub(crate) fn direct_front(&self, state: &LocalState) -> PgBouncerSpec {
        let dir = self.dir.join("pgbouncer-direct");
        let port = state.direct_port.unwrap_or(DEFAULT_DIRECT_PORT);
        let ca = self.certs().ca_cert.display().to_string();
        let mut settings = crate::domain::limits::DIRECT_FRONT_SETTINGS.to_vec();
        settings.extend([
            ("server_tls_sslmode", "verify-full"),
            ("server_tls_ca_file", ca.as_str()),
        ]);
        let ini = self.bouncer_ini(
            &dir,
            port,
            (Path::new("127.0.0.1"), state.pg_port),
            "session",
            &settings,
        );
        // Lookups on the unix socket (peer authentication), in a pool of their own size whose
        // connections stay (`server_lifetime` 0 is the clients' sessions': a new server
        // process per lookup made logins wait on process starts, some 44 a second under a
        // flood of sockets that only ask for one).
        let ini = ini.replacen(
            "[databases]\n",
            &format!(
                "[databases]\n{} = host={} port={} pool_size={} server_lifetime=3600\n",
                AUTH_DBNAME.1,
                self.dir.join("run").display(),
                state.pg_port,
                crate::domain::limits::DIRECT_FRONT_AUTH_SLOTS
            ),
            1,
        );
        PgBouncerSpec {
            dir,
            listen_port: port,
            ini,
            userlist: auth_userlist(),
        }
    }
}

/// The auth user must be in auth_file: left out, PgBouncer would accept it from clients with an
/// empty password. Its entry is the verifier of a random password nobody keeps, so no client
/// can log in as it through a pooler; PgBouncer itself reaches the server as it by peer
/// authentication on the unix socket.
fn auth_userlist() -> String {
    format!(
        "\"{POOLER_AUTH_USER}\" \"{}\"\n",
        crate::base::secret::scram_verifier(&crate::base::secret::random_password())
    )
}

/// pg_hba.conf of the local cluster: tenants only into the database named like their
/// workspace role (samerole), with SCRAM; everything else for tenants is rejected. Over TCP
/// only TLS: the first TCP rule rejects every login without it, whoever it names, so the
/// refusal says nothing about which logins exist.
pub fn hba_conf() -> String {
    let tenants = "+dl_tenant_read,+dl_tenant_override";
    format!(
        "# Written by `dl-tenancy local up` (rewritten at every up).\n\
         # TYPE    DATABASE  USER  [ADDRESS]  METHOD\n\
         local     all       postgres                   peer map=admin\n\
         local     all       {POOLER_AUTH_USER}               peer map=pgbouncer\n\
         local     samerole  {tenants}       scram-sha-256\n\
         local     all       {tenants}       reject\n\
         hostnossl all       all  all  reject\n\
         hostssl   all       {POOLER_AUTH_USER}  all          reject\n\
         hostssl   samerole  {tenants}  127.0.0.1/32  scram-sha-256\n\
         hostssl   all       {tenants}  all  reject\n\
         hostssl   all       all  127.0.0.1/32  scram-sha-256\n"
    )
}

/// pg_ident.conf: the OS user running the tool and the server OS user may act as `postgres`;
/// the server OS user (PgBouncer runs as it) may act as the pooler's auth user.
pub fn ident_conf() -> String {
    let me = pg_harness::current_os_user_name();
    let server = pg_harness::server_os_user_name();
    let mut s = String::from("# Written by `dl-tenancy local up`.\n");
    s.push_str(&format!("admin      {me}  postgres\n"));
    if server != me {
        s.push_str(&format!("admin      {server}  postgres\n"));
    }
    s.push_str(&format!("pgbouncer  {server}  {POOLER_AUTH_USER}\n"));
    s
}

/// The server OS user must reach the data directory, and the socket path must fit in
/// `sun_path` (107 bytes): fail early with a clear message instead of a cryptic initdb error.
pub(crate) fn check_reachable(dir: &Path) -> Result<()> {
    let socket = dir.join("run").join(".s.PGSQL.65535");
    if socket.as_os_str().len() > 100 {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            format!(
                "data directory path {} is too long for a unix socket path; use a shorter --data-dir",
                dir.display()
            ),
        ));
    }
    if let Some(user) = pg_harness::server_os_user() {
        let ok = pg_harness::server_command("test")
            .arg("-x")
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(Error::new(
                ErrorCode::LocalServer,
                format!(
                    "the {user} OS user (which runs the servers) cannot reach {}; choose a --data-dir under a directory it can traverse",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn pick_port(wanted: Option<u16>, default: u16, avoid: &[u16]) -> u16 {
    if let Some(p) = wanted {
        return p;
    }
    if !avoid.contains(&default) && pg_harness::port_is_free(default) {
        return default;
    }
    loop {
        let p = pg_harness::free_port();
        if !avoid.contains(&p) {
            return p;
        }
    }
}

/// `local up`: create (first time) and start the cluster, the control database, the template,
/// the pooler's auth role and PgBouncer. Idempotent; restarts what is down.
/// The oldest PgBouncer the local pooler runs: 1.21 brought `max_prepared_statements`, which
/// keeps protocol-level prepared statements (the default of psycopg 3, asyncpg, node-postgres
/// with named statements, rust-postgres) working in transaction mode.
pub const MIN_POOLER_VERSION: (u32, u32) = (1, 21);

pub(crate) fn check_pooler_version() -> Result<()> {
    let bin = pg_harness::pgbouncer_bin();
    let (major, minor) = pg_harness::pgbouncer_version(&bin)?;
    let (need_major, need_minor) = MIN_POOLER_VERSION;
    if (major, minor) < MIN_POOLER_VERSION {
        return Err(Error::new(
            ErrorCode::LocalServer,
            format!(
                "{} is PgBouncer {major}.{minor}; the local pooler needs {need_major}.{need_minor} or later \
                 (prepared statements in transaction mode): run scripts/setup, or point PGBOUNCER at one",
                bin.display()
            ),
        ));
    }
    // The budget of server connections all workspaces share and the bound on prepared
    // statements come from patches of ours (scripts/pgbouncer/): without them PgBouncer would
    // refuse the settings and not start.
    let patched = std::fs::read(&bin)
        .map(|b| {
            crate::domain::limits::PATCHED_POOLER_SETTINGS
                .iter()
                .all(|s| b.windows(s.len()).any(|w| w == s.as_bytes()))
        })
        .unwrap_or(false);
    if !patched {
        return Err(Error::new(
            ErrorCode::LocalServer,
            format!(
                "{} is PgBouncer without dl_tenancy's patches (scripts/pgbouncer/: one budget of \
                 server connections for all workspaces, bounded prepared statements, a cap on sockets logging \
                 in): run scripts/setup, \
                 or point PGBOUNCER at one",
                bin.display()
            ),
        ));
    }
    Ok(())
}
