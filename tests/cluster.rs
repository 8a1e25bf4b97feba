//! The extension on a real cluster, through real clients over TCP.

use dl_tenancy_extension_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::mpsc;
use std::thread;

/// Roles are cluster-wide: the second database's CREATE EXTENSION finds them and works, and
/// removing the extension from one database leaves the other intact.
#[test]
fn two_databases_in_one_cluster() {
    let tc = TenantCluster::start();
    let mut a = tc.create_tenant_db("tenant_a");
    let mut b = tc.create_tenant_db("tenant_b");
    // The install script pins its own search_path; the installing session keeps its own.
    let search_path: String = a.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert_eq!(search_path, "\"$user\", public");
    for client in [&mut a, &mut b] {
        client
            .batch_execute(r#"SELECT dl_apply_person_override('p1', NULL, '{"name":"P"}', NULL)"#)
            .unwrap();
        let row = client
            .query_one(
                "SELECT dl_tenancy_version(), default_version FROM pg_available_extensions WHERE name = 'dl_tenancy'",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), row.get::<_, String>(1));
    }
    let roles: i64 = a
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('dl_tenant_read', 'dl_tenant_override', 'dl_platform_runtime', 'dl_pooler_auth')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(roles, 4);
    a.batch_execute("DROP EXTENSION dl_tenancy CASCADE")
        .unwrap();
    let rows: i64 = b
        .query_one("SELECT count(*) FROM dl_resolved.people", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    let privileges: bool = b
        .query_one(
            "SELECT has_table_privilege('dl_tenant_read', 'dl_resolved.people', 'SELECT')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(privileges);
}

/// A database where a same-named schema already exists is refused, not adopted.
#[test]
fn refuses_to_adopt_existing_schemas() {
    let tc = TenantCluster::start();
    tc.admin("postgres")
        .batch_execute("CREATE DATABASE planted")
        .unwrap();
    let mut client = tc.admin("planted");
    client.batch_execute("CREATE SCHEMA dl_override").unwrap();
    assert_eq!(
        sqlstate(client.batch_execute("CREATE EXTENSION dl_tenancy")),
        "42P06"
    );
}

/// The seed's quick start, as real logins over TCP: read with the read login, write the
/// override and the custom table with the override login; the read login may not write.
#[test]
fn seed_statements_as_tenant_logins() {
    let tc = TenantCluster::start();
    let mut admin = tc.create_tenant_db("workspace");
    admin
        .batch_execute(
            r#"SELECT dl_upsert_person_enrichment('p1', '{"full_name":"Ada Lovelace"}', '{"source":"crm"}', 'active')"#,
        )
        .unwrap();
    tc.create_login("workspace", "ws_read", "dl_tenant_read", "read-secret");
    tc.create_login(
        "workspace",
        "ws_override",
        "dl_tenant_override",
        "override-secret",
    );

    let mut writer = tc
        .connect("workspace", "ws_override", "override-secret")
        .unwrap();
    writer
        .execute(
            SEED_UPSERT,
            &[
                &"p1",
                &"vip",
                &json!({"full_name": "Ada King"}),
                &None::<Value>,
            ],
        )
        .unwrap();
    writer
        .execute(
            SEED_UPSERT,
            &[
                &"p2",
                &"lead",
                &json!({"email": "new@example.com"}),
                &json!({}),
            ],
        )
        .unwrap();
    writer.batch_execute(SEED_CUSTOM_TABLE).unwrap();
    writer
        .batch_execute(
            "INSERT INTO tenant_custom.account_segments (id, segment) VALUES ('p1', 'enterprise')",
        )
        .unwrap();
    // The helpers are callable unqualified, as documented.
    writer
        .batch_execute(r#"SELECT dl_apply_company_override('acme', NULL, '{"name":"Acme"}', NULL)"#)
        .unwrap();

    let mut reader = tc.connect("workspace", "ws_read", "read-secret").unwrap();
    let rows: Vec<(String, Option<String>)> = reader
        .query(SEED_READ, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut names: Vec<_> = rows
        .iter()
        .map(|(k, n)| format!("{k}={}", n.clone().unwrap_or_default()))
        .collect();
    names.sort();
    assert_eq!(names, ["p1=Ada King", "p2=new@example.com"]);

    assert_eq!(
        sqlstate(reader.execute(SEED_UPSERT, &[&"p3", &"x", &json!({}), &json!({})])),
        "42501"
    );
    assert_eq!(
        sqlstate(reader.batch_execute("SELECT * FROM tenant_custom.account_segments")),
        "42501"
    );
    assert_eq!(
        sqlstate(reader.batch_execute("SELECT * FROM dl_cache.person_enrichments")),
        "42501"
    );
    assert_eq!(
        sqlstate(writer.batch_execute("SELECT * FROM dl_cache.person_enrichments")),
        "42501"
    );
    // Bad input through a real client comes back as a specific SQLSTATE.
    assert_eq!(
        sqlstate(writer.execute(SEED_UPSERT, &[&"p4", &"x", &json!([1]), &json!({})])),
        "23514"
    );
    assert_eq!(
        sqlstate(writer.batch_execute("SELECT dl_apply_person_override('p4', NULL, '[1]', NULL)")),
        "22023"
    );
    // The custom table belongs to the group role, not to the login that made it.
    let owner: String = admin
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'account_segments'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "dl_tenant_override");
}

/// The runtime's bulk path: COPY ... FROM STDIN as dl_platform_runtime, then the resolved view
/// has every row with the existing overrides applied.
#[test]
fn runtime_bulk_copy() {
    let tc = TenantCluster::start();
    let mut admin = tc.create_tenant_db("bulk");
    admin
        .batch_execute(r#"SELECT dl_apply_person_override('k7', 'vip', '{"name":"Seven"}', NULL); SELECT dl_tombstone_person('k8');"#)
        .unwrap();
    tc.create_login("bulk", "runtime", "dl_platform_runtime", "runtime-secret");
    let mut runtime = tc.connect("bulk", "runtime", "runtime-secret").unwrap();
    let mut writer = runtime
        .copy_in("COPY dl_cache.person_enrichments (identity_key, identity_payload, raw_payload, status) FROM STDIN")
        .unwrap();
    for i in 0..10_000 {
        writeln!(
            writer,
            "k{i}\t{{\"name\": \"person {i}\", \"tags\": [{i}]}}\t{{\"i\": {i}}}\tactive"
        )
        .unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 10_000);

    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE is_overridden), min(display_name) FILTER (WHERE identity_key = 'k7'),
                    min(status) FILTER (WHERE identity_key = 'k7')
               FROM dl_resolved.people",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 9_999); // k8 is tombstoned
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("Seven"));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("vip"));
}

/// A base write and an override write of the same key in two concurrent transactions: the
/// second waits for the first, then merges with its committed result; no stale half survives.
#[test]
fn concurrent_base_and_override_writes_merge_both() {
    let tc = TenantCluster::start();
    let mut admin = tc.create_tenant_db("race");
    admin
        .batch_execute(
            r#"SELECT dl_upsert_person_enrichment('k', '{"name":"Old","title":"Eng"}', '{}')"#,
        )
        .unwrap();

    let mut base_writer = tc.admin("race");
    let base_pid = backend_pid(&mut base_writer);
    base_writer
        .batch_execute(
            r#"BEGIN; UPDATE dl_cache.person_enrichments SET identity_payload = '{"name":"New","title":"CTO"}' WHERE identity_key = 'k'"#,
        )
        .unwrap();

    let (pid_tx, pid_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let conn = tc.cluster.conn_string("postgres", "race");
    let override_writer = thread::spawn(move || {
        let mut client = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        pid_tx.send(backend_pid(&mut client)).unwrap();
        client
            .batch_execute(r#"SELECT dl_apply_person_override('k', NULL, '{"title":"CEO"}', NULL)"#)
            .unwrap();
        done_tx.send(()).unwrap();
    });
    let pid: i32 = pid_rx
        .recv_timeout(SAFETY_NET)
        .expect("the override writer connects");
    // The override writer is held back while the base transaction is open: the server shows
    // its session waiting for a lock of the base writer's, and it has not finished.
    wait_until_blocked_by(&mut admin, &[pid], base_pid, || {
        override_writer.is_finished()
    });
    assert!(
        done_rx.try_recv().is_err(),
        "the override writer finished while the base transaction was open"
    );
    base_writer.batch_execute("COMMIT").unwrap();
    // Only a safety net: the writer is no longer held back by anything.
    done_rx
        .recv_timeout(SAFETY_NET)
        .expect("override writer finishes after the base transaction commits");
    override_writer.join().unwrap();

    let payload: Value = admin
        .query_one(
            "SELECT identity_payload FROM dl_resolved.people WHERE identity_key = 'k'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(payload, json!({"name": "New", "title": "CEO"}));
}

/// Errors raised while a helper runs reach the client as PostgreSQL wrote them, with no Rust
/// internals: a CHECK failing in the helper's own statement (constraint name kept), one failing
/// in the trigger behind it, a lock timeout inside each helper, the helpers' own refusals.
/// The server runs with RUST_BACKTRACE=1, the worst an operator's environment can give it:
/// 0.5.0 put a Rust backtrace of ~20 frames into the DETAIL of the first three.
#[test]
fn helper_errors_carry_no_rust_internals() {
    // The cluster's server inherits this process's environment.
    std::env::set_var("RUST_BACKTRACE", "1");
    let tc = TenantCluster::start();
    let mut admin = tc.create_tenant_db("errors");
    tc.create_login("errors", "ws_override", "dl_tenant_override", "o-secret");
    tc.create_login("errors", "runtime", "dl_platform_runtime", "r-secret");
    admin
        .batch_execute(
            "ALTER TABLE dl_override.person_overrides ADD CONSTRAINT dl_test_no_forbidden CHECK (identity_key <> 'forbidden');
             ALTER TABLE dl_internal.resolved_companies ADD CONSTRAINT dl_test_no_boom CHECK (display_name IS DISTINCT FROM 'Boom');",
        )
        .unwrap();
    // Holds the key locks and the override rows of 'held' of both kinds until the end.
    admin
        .batch_execute(
            r#"SELECT dl_apply_person_override('held', NULL, '{"a":0}', NULL);
               SELECT dl_apply_company_override('held', NULL, '{"a":0}', NULL);"#,
        )
        .unwrap();
    let mut holder = tc.admin("errors");
    holder
        .batch_execute(
            r#"BEGIN;
               SELECT dl_apply_person_override('held', NULL, '{"a":1}', NULL);
               SELECT dl_apply_company_override('held', NULL, '{"a":1}', NULL);"#,
        )
        .unwrap();
    const TENANT: usize = 0;
    const RUNTIME: usize = 1;
    let mut clients = [
        tc.connect("errors", "ws_override", "o-secret").unwrap(),
        tc.connect("errors", "runtime", "r-secret").unwrap(),
    ];
    for client in &mut clients {
        client.batch_execute("SET lock_timeout = '20ms'").unwrap();
    }
    let cases = [
        (TENANT, r#"SELECT dl_apply_person_override('forbidden', NULL, '{"a":1}', NULL)"#, "23514"),
        (TENANT, r#"SELECT dl_apply_company_override('c', NULL, '{"name":"Boom"}', NULL)"#, "23514"),
        (TENANT, "SELECT dl_apply_person_override('k', NULL, '[1]', NULL)", "22023"),
        (TENANT, "SELECT dl_apply_person_override('k', NULL, jsonb_build_object('x', repeat('a', 1100000)), NULL)", "54000"),
        (TENANT, r#"SELECT dl_apply_person_override('held', NULL, '{"a":2}', NULL)"#, "55P03"),
        (TENANT, r#"SELECT dl_apply_company_override('held', NULL, '{"a":2}', NULL)"#, "55P03"),
        (TENANT, "SELECT dl_tombstone_person('held')", "55P03"),
        (TENANT, "SELECT dl_tombstone_company('held')", "55P03"),
        (TENANT, "SELECT dl_clear_person_override('held')", "55P03"),
        (TENANT, "SELECT dl_clear_company_override('held')", "55P03"),
        (RUNTIME, "SELECT dl_upsert_person_enrichment('held', '{}', '{}')", "55P03"),
        (RUNTIME, "SELECT dl_upsert_company_enrichment('held', '{}', '{}')", "55P03"),
        (RUNTIME, "SELECT dl_upsert_person_enrichment('k', '{}', '[]')", "22023"),
        (TENANT, "SELECT dl_clear_company_override(NULL)", "22004"),
    ];
    for (client, statement, code) in cases {
        let e = clients[client]
            .batch_execute(statement)
            .expect_err(statement);
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("{statement}: {e}"));
        let shown = format!("{db:?}");
        assert_eq!(db.code().code(), code, "{statement}: {shown}");
        let text = [Some(db.message()), db.detail(), db.hint()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n");
        for internal in ["backtrace", ".rs", "panicked", "pgrx"] {
            assert!(!text.contains(internal), "{statement}: {shown}");
        }
    }
    // The helper's own statement keeps every field PostgreSQL gave its error.
    let e = clients[TENANT]
        .batch_execute(r#"SELECT dl_apply_person_override('forbidden', NULL, '{"a":1}', NULL)"#)
        .unwrap_err();
    assert_eq!(
        e.as_db_error().and_then(|db| db.constraint()),
        Some("dl_test_no_forbidden")
    );
    holder.batch_execute("COMMIT").unwrap();
    clients[TENANT].batch_execute("SELECT 1").unwrap();
}
