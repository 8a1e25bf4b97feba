//! The local PgBouncer as the tool manages it for moves: per-database routes (a workspace
//! moved to another server keeps its pooled URI: the pooler forwards its database there) and
//! the admin console (PAUSE, RELOAD, RESUME).
//!
//! - `routes.ini` in the pooler's directory is included in its `[databases]` section; each
//!   line sends one workspace database that was ever moved to the server that holds it now
//!   (back on the local server: the same target as the `*` entry, kept explicit so that a
//!   paused database stays defined across RELOAD). The control database is the truth: the
//!   file is rewritten from it (`workspaces.pooler_server_id`).
//! - The console user [`POOLER_ADMIN_USER`] logs in with a password derived from the secret
//!   key (nothing more to store).
//! - On another server PgBouncer looks logins up in that server's lookup database (an
//!   `auth_dbname` entry per server) as [`POOLER_REMOTE_AUTH_USER`] (the `auth_user` of each
//!   route), with a password derived from the secret key; the local
//!   server's auth user keeps its password nobody knows. Tenant logins keep their SCRAM
//!   verifiers (copied as they are), so clients authenticated before a move log in to the
//!   new server by SCRAM pass-through.

use crate::domain::names::POOLER_LOOKUP_DB;
use crate::domain::types::PoolStats;

use crate::base::secret::SecretKey;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::plan::quote::quote_ident;
use base64::Engine;
use postgres::Client;
use std::path::{Path, PathBuf};

/// The admin console user of the local pooler (`admin_users`).
pub const POOLER_ADMIN_USER: &str = "dl_tenancy_admin";
/// File name of the routes, in the pooler's directory.
pub const ROUTES_FILE: &str = "routes.ini";
/// File name of the pooler's TLS settings towards other servers (in its `[pgbouncer]`
/// section), in the pooler's directory.
pub const SERVER_TLS_FILE: &str = "server_tls.ini";
/// The CA certificates of the servers routes lead to, one file (`server_tls_ca_file`).
const SERVER_CAS_FILE: &str = "server_cas.pem";

/// The console password (derived from the secret key).
pub(crate) fn admin_password(key: &SecretKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.derive("pgbouncer admin console"))
}

/// The pooler's directory of a local data directory.
pub(crate) fn pooler_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pgbouncer")
}

/// The auth user of routed databases on other servers (`auth_user` of each route): PgBouncer
/// logs in there with this password (derived from the secret key, in `userlist.txt` only).
/// The role exists only on servers that hold moved workspaces, and can do nothing but run
/// the extension's pooler lookup.
pub const POOLER_REMOTE_AUTH_USER: &str = "dl_pgbouncer_remote";

pub(crate) fn remote_auth_password(key: &SecretKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(key.derive("pgbouncer remote auth user"))
}

/// The `userlist.txt` lines of the tool's own pooler users: the console's (a verifier) and
/// the remote auth user's (the password itself: PgBouncer must be able to log in with it).
pub(crate) fn userlist_entries(key: &SecretKey) -> String {
    format!(
        "\"{POOLER_ADMIN_USER}\" \"{}\"\n\"{POOLER_REMOTE_AUTH_USER}\" \"{}\"\n",
        crate::base::secret::scram_verifier(&admin_password(key)),
        remote_auth_password(key)
    )
}

/// One route: the database served by the server at `host:port`.
pub(crate) struct Route {
    pub database: String,
    pub host: String,
    pub port: u16,
    /// On another server (its id): logins are looked up in that server's lookup database as
    /// [`POOLER_REMOTE_AUTH_USER`].
    pub remote: Option<String>,
}

/// The pooler's name for another server's lookup database (`auth_dbname` of its routes).
fn lookup_alias(server_id: &str) -> String {
    let hex: String = server_id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{}_{hex}", crate::domain::names::POOLER_LOOKUP_DB)
}

/// Rewrite `routes.ini` (readable by the pooler's OS user); RELOAD applies it.
pub(crate) fn write_routes(data_dir: &Path, routes: &[Route]) -> Result<()> {
    let mut text =
        String::from("; Written by dl-tenancy: where each moved workspace's database is now.\n");
    let mut lookups = std::collections::BTreeMap::new();
    for r in routes {
        // Database names are the tool's own (dlw_<hex>), hosts and ports from `server add`.
        let auth = match &r.remote {
            Some(server) => {
                lookups.insert(lookup_alias(server), (r.host.clone(), r.port));
                format!(
                    " auth_user={POOLER_REMOTE_AUTH_USER} auth_dbname={}",
                    lookup_alias(server)
                )
            }
            None => String::new(),
        };
        text.push_str(&format!(
            "{db} = host={host} port={port} dbname={db}{auth}\n",
            db = r.database,
            host = r.host,
            port = r.port,
        ));
    }
    for (alias, (host, port)) in lookups {
        text.push_str(&format!(
            "{alias} = host={host} port={port} dbname={} auth_user={POOLER_REMOTE_AUTH_USER}\n",
            crate::domain::names::POOLER_LOOKUP_DB
        ));
    }
    let dir = pooler_dir(data_dir);
    if !dir.exists() {
        pg_harness::make_server_dir(&dir, 0o700)?;
    }
    let path = dir.join(ROUTES_FILE);
    let tmp = path.with_extension("tmp");
    pg_harness::write_server_file(&tmp, &text, 0o644)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// Rewrite the pooler's TLS settings towards other servers: with routes to other servers, TLS
/// verified against their CA files (`verify-full`: the chain and the host name of each
/// route); without, PgBouncer's default. Its own server is reached over the unix socket,
/// where TLS does not apply. RELOAD applies it (new server connections).
pub(crate) fn write_server_tls(
    data_dir: &Path,
    ca_files: &std::collections::BTreeSet<String>,
) -> Result<()> {
    let dir = pooler_dir(data_dir);
    if !dir.exists() {
        pg_harness::make_server_dir(&dir, 0o700)?;
    }
    let mut text =
        String::from("; Written by dl-tenancy: TLS to the servers moved workspaces live on.\n");
    if !ca_files.is_empty() {
        let mut bundle = String::new();
        for file in ca_files {
            bundle.push_str(&std::fs::read_to_string(file).map_err(|e| {
                Error::new(
                    ErrorCode::InvalidArgument,
                    format!("cannot read the CA file {file} of a server: {e}"),
                )
            })?);
            bundle.push('\n');
        }
        let cas = dir.join(SERVER_CAS_FILE);
        pg_harness::write_server_file(&cas, &bundle, 0o644)?;
        text.push_str(&format!(
            "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\n",
            cas.display()
        ));
    }
    let path = dir.join(SERVER_TLS_FILE);
    let tmp = path.with_extension("tmp");
    pg_harness::write_server_file(&tmp, &text, 0o644)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// A session on the pooler's admin console.
pub(crate) struct Console(Client);

impl Console {
    pub(crate) fn open(port: u16, key: &SecretKey) -> Result<Console> {
        // The pooler takes TLS clients only; it is on loopback, so the certificate is not
        // checked (`require`). The password stays in memory.
        let conn = format!(
            "host=127.0.0.1 port={port} user={POOLER_ADMIN_USER} dbname=pgbouncer sslmode=require password={}",
            admin_password(key)
        );
        let client = crate::base::connection::connect_plain(&conn, None).map_err(|e| {
            Error::new(
                ErrorCode::ServerUnreachable,
                format!(
                    "cannot reach the pooler's admin console on port {port}: {}",
                    e.message
                ),
            )
        })?;
        Ok(Console(client))
    }

    fn command(&mut self, sql: &str) -> Result<()> {
        self.0.simple_query(sql).map(|_| ()).map_err(|e| {
            let why = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            Error::new(
                ErrorCode::LocalServer,
                format!("pooler console: {sql}: {why}"),
            )
        })
    }

    /// `PAUSE db`: waits for the database's transactions to end, then holds new queries.
    /// A database the pooler has not served yet has nothing to pause.
    pub(crate) fn pause(&mut self, database: &str) -> Result<bool> {
        match self.command(&format!("PAUSE {}", quote_ident(database))) {
            Ok(()) => Ok(true),
            Err(e) if e.message.contains("no such database") => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn resume(&mut self, database: &str) -> Result<()> {
        match self.command(&format!("RESUME {}", quote_ident(database))) {
            Err(e)
                if !e.message.contains("not paused") && !e.message.contains("no such database") =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn reload(&mut self) -> Result<()> {
        self.command("RELOAD")
    }

    /// `SHOW POOLS`, summed per database (its logins' pools together); the pooler's own
    /// console and lookup databases left out.
    pub(crate) fn pools(&mut self) -> Result<Vec<PoolStats>> {
        let rows = self.0.simple_query("SHOW POOLS").map_err(|e| {
            Error::new(
                ErrorCode::LocalServer,
                format!("pooler console: SHOW POOLS: {e}"),
            )
        })?;
        let mut by_db: std::collections::BTreeMap<String, PoolStats> = Default::default();
        for row in rows {
            let postgres::SimpleQueryMessage::Row(r) = row else {
                continue;
            };
            let database = r.get("database").unwrap_or_default().to_string();
            if database == "pgbouncer" || database.starts_with(POOLER_LOOKUP_DB) {
                continue;
            }
            let n = |col: &str| -> u64 { r.get(col).and_then(|v| v.parse().ok()).unwrap_or(0) };
            let p = by_db.entry(database.clone()).or_insert_with(|| PoolStats {
                database,
                ..Default::default()
            });
            p.clients_active += n("cl_active");
            p.clients_waiting += n("cl_waiting");
            p.servers_active += n("sv_active");
            p.servers_idle += n("sv_idle");
            p.longest_wait_ms = p
                .longest_wait_ms
                .max(n("maxwait") * 1000 + n("maxwait_us") / 1000);
        }
        Ok(by_db.into_values().collect())
    }
}
