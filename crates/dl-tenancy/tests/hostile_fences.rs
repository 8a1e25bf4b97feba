//! Resource fences a tenant cannot get past (issue 21), tried from the attacker's real logins,
//! direct and pooled, with a neighbour's open session measured: the attack fails in the
//! attacker's own session with its SQLSTATE, the server does not restart, and the neighbour
//! keeps working.

mod common;
#[path = "fences/disk.rs"]
mod disk;
#[path = "fences/history.rs"]
mod history;
#[path = "fences/locks.rs"]
mod locks;
#[path = "fences/memory.rs"]
mod memory;
#[path = "fences/sockets.rs"]
mod sockets;
#[path = "fences/temp.rs"]
mod temp;

use common::*;
use dl_tenancy_ctl::Kind;
use postgres::Client;

/// When the server (postmaster) started: unchanged unless it crashed and restarted.
fn started(admin: &mut Client) -> String {
    admin
        .query_one("SELECT pg_catalog.pg_postmaster_start_time()::text", &[])
        .unwrap()
        .get(0)
}

/// One query whose memory grows past the session's share (400 values of 1 MB aggregated in
/// memory; `work_mem` does not bound it) fails with 53200 in the attacker's session, which
/// goes on; the server did not restart and the neighbour reads.
#[test]
fn a_query_past_its_memory_share_fails_alone() {
    let env = Env::with_attacker_and_neighbour();
    let mut admin = env.admin("postgres");
    let before = started(&mut admin);
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, false)).unwrap();
    for pooled in [false, true] {
        let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        let err = attacker
            .batch_execute(
                "SELECT pg_catalog.cardinality(pg_catalog.array_agg(pg_catalog.repeat('x', 1000000)))
                   FROM pg_catalog.generate_series(1, 400)",
            )
            .expect_err("the query must not get its 400 MB");
        assert_eq!(sqlstate(&err), "53200", "pooled {pooled}: {err:?}");
        attacker
            .batch_execute("SELECT 1")
            .unwrap_or_else(|e| panic!("the attacker's session after the refusal: {e}"));
        neighbour.batch_execute(READ_QUERY).unwrap();
    }
    assert_eq!(started(&mut admin), before, "the server restarted");
    // Below its share, the same kind of query runs.
    connect(&env.uri(ATTACKER, Kind::Override, false))
        .unwrap()
        .batch_execute(
            "SELECT pg_catalog.cardinality(pg_catalog.array_agg(pg_catalog.repeat('x', 1000000)))
               FROM pg_catalog.generate_series(1, 50)",
        )
        .expect("50 MB is within the share");
}

/// The pooler every workspace shares: one workspace holds at most 200 of its clients (53300
/// past that, from PgBouncer), and one client's prepared statements at most 8 MB (53400, the
/// client is closed): 0.5.0's pooler let one workspace take every client slot, and grew to
/// 1.2 GB for one client's statements. The neighbour's pooled queries run throughout.
#[test]
fn one_workspace_cannot_take_the_pooler() {
    let env = Env::with_attacker_and_neighbour();
    let uri = env.uri(ATTACKER, Kind::Read, true);
    let mut held: Vec<Client> = Vec::new();
    let refused = loop {
        match connect(&uri) {
            Ok(c) => held.push(c),
            Err(e) => break e,
        }
        assert!(
            held.len() <= 200,
            "the pooler never capped the workspace's clients"
        );
    };
    assert_eq!(sqlstate(&refused), "53300", "{refused:?}");
    assert_eq!(held.len(), 200);
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, true)).unwrap();
    neighbour.batch_execute(READ_QUERY).unwrap();

    // Named statements of 1 MB each, on one of the attacker's clients.
    let mut client = held.pop().unwrap();
    // Kept: a dropped statement is closed, which gives its bytes back.
    let mut kept = Vec::new();
    let mut prepared = 0;
    let err = loop {
        let sql = format!("SELECT {prepared} /* {} */", "x".repeat(1024 * 1024));
        match client.prepare(&sql) {
            Ok(statement) => {
                kept.push(statement);
                prepared += 1;
            }
            Err(e) => break e,
        }
        assert!(
            prepared <= 8,
            "the pooler kept more than 8 MB of one client's statements"
        );
    };
    // PgBouncer answers 53400 and closes the client; the driver may see only the close.
    assert!(sqlstate(&err) == "53400" || err.is_closed(), "{err:?}");
    let log = std::fs::read_to_string(env.dir.join("pgbouncer/pgbouncer.log")).unwrap();
    assert!(
        log.contains("prepared statements over max_prepared_statement_bytes"),
        "the pooler did not say why it closed the client"
    );
    assert_eq!(prepared, 7, "statements kept before the bound");
    assert!(
        client.batch_execute("SELECT 1").is_err(),
        "the client is closed past the bound"
    );
    neighbour.batch_execute(READ_QUERY).unwrap();
    // The workspace's other clients and a new one work on.
    drop(held.pop());
    let mut again = connect(&uri).expect("a slot freed for the workspace");
    again.batch_execute("SELECT 1").unwrap();
    held[0].batch_execute("SELECT 1").unwrap();
}

/// The storage quota's three states and the way back, on a small quota: the attacker's
/// override login fills `tenant_custom` until its writes are refused (53100, direct and
/// pooled), while SELECT, DELETE, TRUNCATE and DROP still run; once it is below 90% it writes
/// again. The neighbour writes throughout. Order comes from the watchdog's recorded state.
#[test]
fn a_workspace_at_its_storage_quota_is_refused_writes_and_gets_back() {
    let env = Env::with_attacker_and_neighbour();
    let mut admin = env.admin("postgres");
    admin
        .batch_execute("ALTER SYSTEM SET dl_tenancy.storage_interval = '100ms'")
        .unwrap();
    admin
        .batch_execute("SELECT pg_catalog.pg_reload_conf()")
        .unwrap();
    let base = usage(&env, ATTACKER)["database_size_bytes"]
        .as_i64()
        .unwrap();
    let quota_mb = base / (1024 * 1024) + 20;
    set_quota(&env, ATTACKER, quota_mb.to_string());
    wait_for_state(&env, ATTACKER, "under");

    let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    attacker
        .batch_execute(
            "CREATE TABLE tenant_custom.fill (id serial PRIMARY KEY, pad text);
             SELECT dl_apply_person_override('p-1', 'customer', '{\"title\": \"CTO\"}', NULL)",
        )
        .unwrap();
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Override, false)).unwrap();
    neighbour
        .batch_execute("CREATE TABLE tenant_custom.mine (id serial PRIMARY KEY, pad text)")
        .unwrap();
    // 1 MB a statement (incompressible), until the quota refuses one.
    const FILL: &str = "INSERT INTO tenant_custom.fill (pad)
        SELECT pg_catalog.string_agg(pg_catalog.md5(pg_catalog.random()::text), '')
          FROM pg_catalog.generate_series(1, 32768)";
    let mut written = 0;
    let refused = loop {
        match attacker.batch_execute(FILL) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        neighbour
            .batch_execute("INSERT INTO tenant_custom.mine (pad) VALUES ('still writing')")
            .unwrap();
        assert!(written < 1000, "the quota never refused a write");
    };
    // A statement running when the quota was reached is cancelled (57014); the next ones
    // are refused (53100).
    let code = sqlstate(&refused);
    assert!(code == "53100" || code == "57014", "{refused:?}");
    wait_for_state(&env, ATTACKER, "refused");
    let u = usage(&env, ATTACKER);
    eprintln!("refused after {written} MB: {u}");
    let over = u["database_size_bytes"].as_i64().unwrap() - quota_mb * 1024 * 1024;
    eprintln!("overshoot: {over} bytes");

    for pooled in [false, true] {
        let mut c = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        for write in [
            FILL,
            "UPDATE tenant_custom.fill SET pad = pad WHERE id = 1",
            "CREATE TABLE tenant_custom.more (id int)",
            "CREATE INDEX ON tenant_custom.fill (pad)",
            // Writes that reach the executor as something else.
            "WITH w AS (INSERT INTO tenant_custom.fill (pad) VALUES ('x') RETURNING 1) SELECT count(*) FROM w",
            "EXPLAIN ANALYZE CREATE TABLE tenant_custom.copy AS SELECT * FROM tenant_custom.fill",
            "SELECT dl_apply_person_override('p-2', 'customer', '{}', NULL)",
        ] {
            let err = c.batch_execute(write).expect_err(write);
            assert_eq!(sqlstate(&err), "53100", "pooled {pooled}: {write}: {err:?}");
        }
        c.batch_execute("SELECT count(*) FROM tenant_custom.fill")
            .expect("reads still run");
        c.batch_execute("DELETE FROM tenant_custom.fill WHERE id = 1")
            .expect("deletes still run");
        // What drivers and frameworks run at start or on reset stores nothing and runs.
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS tenant_custom.fill (id int); UNLISTEN *;
             BEGIN; SET CONSTRAINTS ALL DEFERRED; COMMIT",
        )
        .unwrap_or_else(|e| panic!("pooled {pooled}: {e:?}"));
    }
    // Deleting an override records its history (the extension's own write): it runs.
    attacker
        .batch_execute("DELETE FROM dl_override.person_overrides WHERE identity_key = 'p-1'")
        .expect("deleting an override runs over the quota");
    // WAL of any size, which the quota does not count: closed (0.7.0).
    let err = attacker
        .batch_execute("SELECT pg_catalog.pg_logical_emit_message(false, 'x', 'y')")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    neighbour
        .batch_execute("INSERT INTO tenant_custom.mine (pad) VALUES ('not affected')")
        .unwrap();

    // A larger quota lets writes in at once, though the database is above 90% of it.
    let size_mb = usage(&env, ATTACKER)["database_size_bytes"]
        .as_i64()
        .unwrap()
        / (1024 * 1024);
    set_quota(&env, ATTACKER, (size_mb + 2).to_string());
    wait_for_state(&env, ATTACKER, "warned");
    attacker
        .batch_execute("INSERT INTO tenant_custom.fill (pad) VALUES ('raised')")
        .expect("writes run under the raised quota");
    set_quota(&env, ATTACKER, quota_mb.to_string());
    wait_for_state(&env, ATTACKER, "refused");

    // The way back: TRUNCATE frees the space, and below 90% the writes run again.
    attacker
        .batch_execute("TRUNCATE tenant_custom.fill")
        .expect("TRUNCATE runs over the quota");
    wait_for_state(&env, ATTACKER, "under");
    attacker.batch_execute(FILL).expect("writes run again");
    attacker
        .batch_execute("DROP TABLE tenant_custom.fill")
        .expect("DROP runs");
}

/// `dl-tenancy limits --storage-mb`, which must succeed.
fn set_quota(env: &Env, ws: &str, mb: String) {
    let out = env.cli(&["limits", "--workspace", ws, "--storage-mb", &mb]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn usage(env: &Env, ws: &str) -> serde_json::Value {
    let out = env.cli(&["usage", "--workspace", ws]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// Waits (observed, bounded by the safety net) until `usage` shows the quota's `state`.
fn wait_for_state(env: &Env, ws: &str, state: &str) {
    let started = std::time::Instant::now();
    loop {
        let u = usage(env, ws);
        if u["storage"]["state"] == state {
            return;
        }
        assert!(
            started.elapsed() < SAFETY_NET,
            "the quota never got to {state}: {u}"
        );
    }
}
