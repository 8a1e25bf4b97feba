//! Shared setup for the extension's cluster-level tests: a throwaway cluster (from
//! pg-harness) with databases that have `CREATE EXTENSION dl_tenancy`, and tenant logins
//! made the way the provisioning tool makes them.
//!
//! These tests need the extension installed in the system PostgreSQL
//! (`cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config`).

use pg_harness::PgCluster;
use postgres::{Client, NoTls};

pub struct TenantCluster {
    pub cluster: PgCluster,
}

impl TenantCluster {
    pub fn start() -> TenantCluster {
        TenantCluster {
            cluster: PgCluster::start().expect("throwaway cluster starts"),
        }
    }

    /// Superuser connection over the socket.
    pub fn admin(&self, db: &str) -> Client {
        Client::connect(&self.cluster.conn_string("postgres", db), NoTls)
            .unwrap_or_else(|e| panic!("connect to {db} as postgres: {e}"))
    }

    /// A new database with the extension installed.
    pub fn create_tenant_db(&self, db: &str) -> Client {
        self.admin("postgres")
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let mut client = self.admin(db);
        client
            .batch_execute("CREATE EXTENSION dl_tenancy")
            .unwrap_or_else(|e| panic!("CREATE EXTENSION in {db}: {e}"));
        client
    }

    /// A login that is a member of `group` and acts as it, like the provisioning tool's.
    pub fn create_login(&self, db: &str, login: &str, group: &str, password: &str) {
        let mut admin = self.admin(db);
        admin
            .batch_execute(&format!(
                "CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE {group};
                 ALTER ROLE {login} SET role = '{group}';
                 GRANT CONNECT ON DATABASE {db} TO {login};"
            ))
            .unwrap();
    }

    /// A TCP connection as `login`, the way an app connects.
    pub fn connect(
        &self,
        db: &str,
        login: &str,
        password: &str,
    ) -> Result<Client, postgres::Error> {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={login} password={password} dbname={db}",
                self.cluster.port()
            ),
            NoTls,
        )
    }
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(result: Result<impl Sized, postgres::Error>) -> String {
    match result {
        Ok(_) => "00000".into(),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

/// The seed's override upsert, verbatim.
pub const SEED_UPSERT: &str = "INSERT INTO dl_override.person_overrides (
  identity_key,
  status,
  identity_payload_patch,
  raw_payload_patch,
  tombstoned,
  updated_at
) VALUES (
  $1, $2, $3::jsonb, $4::jsonb, false, now()
)
ON CONFLICT (identity_key) DO UPDATE
SET status = EXCLUDED.status,
    identity_payload_patch = EXCLUDED.identity_payload_patch,
    raw_payload_patch = EXCLUDED.raw_payload_patch,
    tombstoned = false,
    updated_at = now();";

/// The seed's read query, verbatim.
pub const SEED_READ: &str =
    "SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20";

/// The seed's custom table, verbatim.
pub const SEED_CUSTOM_TABLE: &str = "CREATE TABLE IF NOT EXISTS tenant_custom.account_segments (
  id text PRIMARY KEY,
  segment text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);";
