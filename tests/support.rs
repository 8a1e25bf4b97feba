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

    /// A new database with the extension installed: fresh at the default version, or, with
    /// `DL_TENANCY_TEST_INSTALL=upgrade`, at the oldest released version and then updated, so
    /// that the whole suite also runs on upgraded databases.
    pub fn create_tenant_db(&self, db: &str) -> Client {
        let install = match std::env::var("DL_TENANCY_TEST_INSTALL").as_deref() {
            Ok("upgrade") => {
                "CREATE EXTENSION dl_tenancy VERSION '0.1.0'; ALTER EXTENSION dl_tenancy UPDATE;"
            }
            _ => "CREATE EXTENSION dl_tenancy",
        };
        self.create_db_with(db, install)
    }

    /// A new database, set up by `sql`.
    pub fn create_db_with(&self, db: &str, sql: &str) -> Client {
        self.admin("postgres")
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let mut client = self.admin(db);
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql} in {db}: {e}"));
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

/// The longest any test waits for a state it expects to observe. Only a safety net against a
/// hang: order is established by the observed state, never by how long something takes.
pub const SAFETY_NET: std::time::Duration = std::time::Duration::from_secs(120);

/// Poll until `done()` holds. `gave_up()` says whether what was to bring that state about has
/// already ended without it (a thread that finished or panicked): that fails at once instead
/// of at the [`SAFETY_NET`] deadline.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool, gave_up: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !done() {
        assert!(!gave_up(), "gave up waiting for {what}: its cause ended");
        assert!(
            t0.elapsed() < SAFETY_NET,
            "waited {SAFETY_NET:?} for {what} (a safety net, not a speed limit)"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The sessions among `pids` that the server shows waiting for a lock (`pg_locks.granted =
/// false`) that the session `blocker` holds.
pub fn lock_waiters(observer: &mut Client, pids: &[i32], blocker: i32) -> Vec<i32> {
    observer
        .query(
            "SELECT DISTINCT l.pid FROM pg_catalog.pg_locks l
              WHERE NOT l.granted AND l.pid = ANY($1) AND $2 = ANY(pg_catalog.pg_blocking_pids(l.pid))
              ORDER BY l.pid",
            &[&pids, &blocker],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Wait until the server shows at least one of the sessions `pids` waiting for a lock held by
/// the session `blocker`; returns those that wait. `gave_up` as in [`wait_until`].
pub fn wait_until_blocked_by(
    observer: &mut Client,
    pids: &[i32],
    blocker: i32,
    gave_up: impl Fn() -> bool,
) -> Vec<i32> {
    let mut waiting = vec![];
    wait_until(
        &format!("one of the sessions {pids:?} to wait for a lock of session {blocker} (pg_locks)"),
        || {
            waiting = lock_waiters(observer, pids, blocker);
            !waiting.is_empty()
        },
        gave_up,
    );
    waiting
}

/// The server process of a session.
pub fn backend_pid(client: &mut Client) -> i32 {
    client
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .unwrap()
        .get(0)
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

/// The seed's override upsert, verbatim (tests/seed/).
pub const SEED_UPSERT: &str = include_str!("seed/override_upsert.sql");

/// The seed's read query, verbatim.
pub const SEED_READ: &str = include_str!("seed/read_query.sql");

/// The seed's custom table, verbatim.
pub const SEED_CUSTOM_TABLE: &str = include_str!("seed/custom_table.sql");

/// Realistic tenant data for upgrade and dump tests: base records with nested payloads,
/// overrides, tombstones, override-only records, companies, settings, and a customer table
/// with a grant, created by the override role as a customer would.
pub const LOAD_TENANT_DATA: &str = r#"
INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload, status, source, fetched_at, updated_at)
SELECT 'person-' || i,
       jsonb_build_object('full_name', 'Person ' || i, 'email', 'p' || i || '@example.com', 'title', 'Title ' || (i % 7),
                          'address', jsonb_build_object('city', 'City ' || (i % 13), 'zip', lpad(i::text, 5, '0')),
                          'tags', jsonb_build_array('t' || (i % 3), 't' || (i % 5))),
       jsonb_build_object('provider', 'acme', 'score', i % 100, 'history', jsonb_build_array(i, i + 1)),
       CASE WHEN i % 4 = 0 THEN 'customer' ELSE 'lead' END, 'crm', '2024-01-01'::timestamptz + i * interval '1 minute',
       '2024-01-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 500) i;
INSERT INTO dl_cache.company_enrichments (identity_key, identity_payload, raw_payload, status)
SELECT 'company-' || i, jsonb_build_object('name', 'Company ' || i, 'domain', 'c' || i || '.example'), '{}', 'active'
  FROM generate_series(1, 50) i;
INSERT INTO dl_override.person_overrides (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
SELECT 'person-' || i, CASE WHEN i % 2 = 0 THEN 'vip' END,
       jsonb_build_object('title', 'Override ' || i, 'address', jsonb_build_object('zip', NULL), 'tags', jsonb_build_array('edited')),
       CASE WHEN i % 3 = 0 THEN '{"score": null}'::jsonb END, i % 10 = 0, '2025-01-01'::timestamptz + i * interval '1 second'
  FROM generate_series(1, 100) i;
INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch)
SELECT 'new-' || i, jsonb_build_object('name', 'Added ' || i) FROM generate_series(1, 20) i;
INSERT INTO dl_override.company_overrides (identity_key, identity_payload_patch) VALUES ('company-1', '{"name":"Renamed"}');
INSERT INTO dl_meta.tenant_settings (key, value) VALUES ('theme', '"dark"'), ('limits', '{"seats": 10}');
SET ROLE dl_tenant_override;
CREATE TABLE tenant_custom.account_segments (id text PRIMARY KEY, segment text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tenant_custom.account_segments (id, segment) SELECT 'person-' || i, 'seg' || (i % 4) FROM generate_series(1, 30) i;
GRANT SELECT ON tenant_custom.account_segments TO dl_tenant_read;
RESET ROLE;
"#;

/// Every row a customer or the platform cares about, as one JSON document per relation.
pub fn tenant_rows(client: &mut Client) -> Vec<(String, serde_json::Value)> {
    [
        ("people", "SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at FROM dl_resolved.people"),
        ("companies", "SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at FROM dl_resolved.companies"),
        ("person_enrichments", "SELECT * FROM dl_cache.person_enrichments"),
        ("company_enrichments", "SELECT * FROM dl_cache.company_enrichments"),
        ("person_overrides", "SELECT * FROM dl_override.person_overrides"),
        ("company_overrides", "SELECT * FROM dl_override.company_overrides"),
        ("tenant_settings", "SELECT key, value FROM dl_meta.tenant_settings"),
        ("account_segments", "SELECT id, segment FROM tenant_custom.account_segments"),
        ("account_segments_acl", "SELECT relacl::text FROM pg_class WHERE oid = 'tenant_custom.account_segments'::regclass"),
    ]
    .into_iter()
    .map(|(name, query)| {
        let sql = format!("SELECT COALESCE(jsonb_agg(to_jsonb(r) ORDER BY to_jsonb(r)::text), '[]') FROM ({query}) r");
        let rows: serde_json::Value = client
            .query_one(&sql, &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .get(0);
        (name.to_string(), rows)
    })
    .collect()
}

/// The extension as the catalog sees it: members, columns, defaults, constraints, indexes,
/// triggers, view and function definitions, ACLs of every managed object, dump registration.
/// A fresh install and an upgraded database must give the same lines.
pub const CATALOG_SNAPSHOT: &str = r#"
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'dl_tenancy'),
members AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (SELECT c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid)
SELECT line FROM (
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid) AS line FROM members
    UNION ALL
    SELECT format('column %s.%s #%s %s%s%s', r.oid::regclass, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, COALESCE(' default ' || pg_get_expr(d.adbin, d.adrelid), ''))
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    UNION ALL
    SELECT format('relation %s kind %s owner %s acl %s', r.oid::regclass, r.relkind, r.relowner::regrole, r.relacl) FROM rels r
    UNION ALL
    SELECT format('view %s: %s', r.oid::regclass, pg_get_viewdef(r.oid)) FROM rels r WHERE r.relkind = 'v'
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM pg_index i JOIN rels r ON r.oid = i.indrelid
    UNION ALL
    SELECT format('constraint %s %s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
      FROM pg_constraint c JOIN rels r ON r.oid = c.conrelid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid)) FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('function %s owner %s acl %s: %s', p.oid::regprocedure, p.proowner::regrole, p.proacl, pg_get_functiondef(p.oid))
      FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
    UNION ALL
    SELECT format('schema %s owner %s acl %s', n.nspname, n.nspowner::regrole, n.nspacl)
      FROM pg_namespace n JOIN members m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
    UNION ALL
    -- Built-in functions whose ACL the extension changed in this database (0.4.0 revokes the
    -- shared-state ones from PUBLIC); the rest keep PostgreSQL's defaults, equal everywhere.
    SELECT format('builtin %s acl %s', p.oid::regprocedure, p.proacl) FROM pg_proc p
     WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proacl IS NOT NULL
    UNION ALL
    SELECT format('dump %s %s', x.rel::regclass, x.cond) FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(rel, cond)
     WHERE e.extname = 'dl_tenancy'
) s ORDER BY line"#;

pub fn catalog_snapshot(client: &mut Client) -> Vec<String> {
    client
        .query(CATALOG_SNAPSHOT, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
