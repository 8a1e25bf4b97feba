//! The watchdog (src/watchdog.rs) on a cluster that preloads the library: it ends the sessions
//! of retired workspace logins and transactions of workspace logins open past
//! `dl_tenancy.transaction_limit`, leaves everyone else alone, and comes back when killed.
//!
//! Nothing here measures time: each test waits (within the safety net) for the state the
//! watchdog brings about, then checks that the sessions it must not touch, which were open
//! longer or as long, are still there.

use dl_tenancy_extension_tests::*;
use pg_harness::PgCluster;
use postgres::Client;

fn preloaded_cluster() -> TenantCluster {
    TenantCluster {
        cluster: PgCluster::builder()
            .conf("shared_preload_libraries", "dl_tenancy")
            .conf("dl_tenancy.transaction_limit", "2s")
            .conf("dl_tenancy.watchdog_interval", "200ms")
            .start()
            .expect("throwaway cluster with the watchdog starts"),
    }
}

/// Whether the server still has the session `pid`.
fn alive(observer: &mut Client, pid: i32) -> bool {
    observer
        .query_one(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .unwrap()
        .get(0)
}

/// The server's processes of these backend types, in pid order.
fn pids_of(observer: &mut Client, backend_types: &[&str]) -> Vec<i32> {
    observer
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = ANY($1) ORDER BY pid",
            &[&backend_types],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn watchdog_pids(observer: &mut Client) -> Vec<i32> {
    pids_of(observer, &["dl_tenancy watchdog"])
}

/// Waits until the watchdog runs; returns its pids.
fn wait_for_the_watchdog(observer: &mut Client) -> Vec<i32> {
    let mut watchdog = vec![];
    wait_until(
        "the watchdog to start",
        || {
            watchdog = watchdog_pids(observer);
            !watchdog.is_empty()
        },
        || false,
    );
    watchdog
}

/// A tenant transaction that turned its own timeouts off and holds a lock is ended; a
/// superuser's transaction, open since before it, is not; an idle tenant session is not.
#[test]
fn tenant_transactions_end_at_the_limit() {
    let tc = preloaded_cluster();
    let mut admin = tc.create_tenant_db("ws");
    tc.create_login("ws", "ws_override", "dl_tenant_override", "o-secret");
    tc.create_login("ws", "ws_read", "dl_tenant_read", "r-secret");
    wait_for_the_watchdog(&mut admin);
    let server_processes = |admin: &mut Client| {
        pids_of(
            admin,
            &[
                "checkpointer",
                "background writer",
                "walwriter",
                "autovacuum launcher",
                "logical replication launcher",
                "dl_tenancy watchdog",
            ],
        )
    };
    let processes = server_processes(&mut admin);
    let mut platform = tc.admin("ws");
    let platform_pid = backend_pid(&mut platform);
    platform
        .batch_execute("BEGIN; SELECT pg_catalog.txid_current()")
        .unwrap();

    let mut idle = tc.connect("ws", "ws_read", "r-secret").unwrap();
    let idle_pid = backend_pid(&mut idle);
    let mut tenant = tc.connect("ws", "ws_override", "o-secret").unwrap();
    let tenant_pid = backend_pid(&mut tenant);
    tenant
        .batch_execute("CREATE TABLE tenant_custom.t (id int)")
        .unwrap();
    tenant
        .batch_execute(
            "SET idle_in_transaction_session_timeout = 0;
             SET statement_timeout = 0;
             BEGIN;
             LOCK TABLE tenant_custom.t IN ACCESS EXCLUSIVE MODE;
             INSERT INTO tenant_custom.t VALUES (1);",
        )
        .unwrap();
    wait_until(
        "the tenant's open transaction to be ended",
        || !alive(&mut admin, tenant_pid),
        || false,
    );
    assert!(tenant.batch_execute("SELECT 1").is_err());
    let locks: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE relation = 'tenant_custom.t'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);
    // Open longer than the tenant's, and still there; so are the server's own processes,
    // the watchdog among them.
    assert!(alive(&mut admin, platform_pid));
    assert_eq!(server_processes(&mut admin), processes);
    platform.batch_execute("SELECT 1; COMMIT").unwrap();
    idle.batch_execute("SELECT 1").unwrap();
    assert!(alive(&mut admin, idle_pid));
    wait_until(
        "the watchdog to log what it ended",
        || {
            tc.cluster.log().contains(&format!(
                "ended session {tenant_pid} of ws_override: its transaction was open longer"
            ))
        },
        || false,
    );
}

/// A login made NOLOGIN and one past its VALID UNTIL lose their open sessions; a
/// neighbour's session, in another workspace, stays.
#[test]
fn retired_logins_lose_their_sessions() {
    let tc = preloaded_cluster();
    let mut admin = tc.create_tenant_db("ws_a");
    tc.create_tenant_db("ws_b");
    tc.create_login("ws_a", "a_read", "dl_tenant_read", "a1");
    tc.create_login("ws_a", "a_override", "dl_tenant_override", "a2");
    tc.create_login("ws_b", "b_read", "dl_tenant_read", "b1");
    let mut retired = tc.connect("ws_a", "a_read", "a1").unwrap();
    let mut expired = tc.connect("ws_a", "a_override", "a2").unwrap();
    let mut neighbour = tc.connect("ws_b", "b_read", "b1").unwrap();
    let (retired_pid, expired_pid, neighbour_pid) = (
        backend_pid(&mut retired),
        backend_pid(&mut expired),
        backend_pid(&mut neighbour),
    );
    admin
        .batch_execute(
            "ALTER ROLE a_read NOLOGIN;
             ALTER ROLE a_override VALID UNTIL '2000-01-01';",
        )
        .unwrap();
    wait_until(
        "the retired logins' sessions to be ended",
        || !alive(&mut admin, retired_pid) && !alive(&mut admin, expired_pid),
        || false,
    );
    assert!(retired.batch_execute("SELECT 1").is_err());
    assert!(expired.batch_execute("SELECT 1").is_err());
    neighbour
        .batch_execute("SELECT count(*) FROM dl_resolved.people")
        .unwrap();
    assert!(alive(&mut admin, neighbour_pid));
}

/// The worker shows in pg_stat_activity, and after it is killed the postmaster starts it
/// again, and it works.
#[test]
fn the_watchdog_is_visible_and_comes_back() {
    let tc = preloaded_cluster();
    let mut admin = tc.create_tenant_db("ws");
    let first = wait_for_the_watchdog(&mut admin);
    assert_eq!(first.len(), 1);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first[0]])
        .unwrap();
    wait_until(
        "a new watchdog after the first was terminated",
        || {
            let now = watchdog_pids(&mut admin);
            now.len() == 1 && now[0] != first[0]
        },
        || false,
    );
    tc.create_login("ws", "ws_read", "dl_tenant_read", "r");
    let mut session = tc.connect("ws", "ws_read", "r").unwrap();
    let pid = backend_pid(&mut session);
    admin.batch_execute("ALTER ROLE ws_read NOLOGIN").unwrap();
    wait_until(
        "the restarted watchdog to end a retired login's session",
        || !alive(&mut admin, pid),
        || false,
    );
    assert!(tc
        .cluster
        .log()
        .contains("dl_tenancy watchdog: stopping on SIGTERM"));
}

/// A tenant cannot make the server's new sessions wait: `CREATE RULE ... ON pg_authid` (any
/// login) or `CREATE TABLE ... PARTITION OF pg_authid` (the override login) queued an ACCESS
/// EXCLUSIVE lock, before PostgreSQL checked privileges, behind the tenant's own open read of
/// `pg_roles`; every new session, superusers' included, then waited to read pg_authid, and so
/// did the watchdog, which could no longer end either session. The guard refuses both before
/// any lock (42501); new sessions get in and the watchdog ends the open transaction.
#[test]
fn a_tenant_cannot_queue_a_lock_on_a_catalog() {
    let tc = preloaded_cluster();
    let mut admin = tc.create_tenant_db("ws");
    tc.create_login("ws", "ws_override", "dl_tenant_override", "o-secret");
    tc.create_login("ws", "ws_read", "dl_tenant_read", "r-secret");
    let mut holder = tc.connect("ws", "ws_read", "r-secret").unwrap();
    let holder_pid = backend_pid(&mut holder);
    holder
        .batch_execute(
            "SET idle_in_transaction_session_timeout = 0;
             BEGIN;
             SELECT count(*) FROM pg_catalog.pg_roles;",
        )
        .unwrap();
    let mut reader = tc.connect("ws", "ws_read", "r-secret").unwrap();
    let mut writer = tc.connect("ws", "ws_override", "o-secret").unwrap();
    // Bounded, so that without the guard the test fails (55P03) instead of hanging.
    for client in [&mut reader, &mut writer] {
        client
            .batch_execute("SET lock_timeout = '5s'; SET statement_timeout = '10s'")
            .unwrap();
    }
    const READ: usize = 0;
    const OVERRIDE: usize = 1;
    let mut clients = [reader, writer];
    for (client, statement) in [
        (
            READ,
            "CREATE RULE r AS ON INSERT TO pg_catalog.pg_authid DO INSTEAD NOTHING",
        ),
        (
            OVERRIDE,
            "CREATE TABLE tenant_custom.p PARTITION OF pg_catalog.pg_authid DEFAULT",
        ),
        (
            OVERRIDE,
            "CREATE TRIGGER t BEFORE INSERT ON pg_catalog.pg_database FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()",
        ),
    ] {
        assert_eq!(
            sqlstate(clients[client].batch_execute(statement)),
            "42501",
            "{statement}"
        );
        // Nobody waits: a new session of the server gets in at once.
        tc.admin("postgres").batch_execute("SELECT 1").unwrap();
    }
    wait_until(
        "the watchdog to end the transaction that read pg_roles",
        || !alive(&mut admin, holder_pid),
        || false,
    );
}

/// `scripts/install-extension` while a preloaded server runs and a session has used the
/// library: the session goes on, nothing crashes, the watchdog keeps its process. The script
/// renames each file into place; an in-place overwrite of the library once changed the code
/// under every process that mapped it (a backend died with SIGILL, the cluster restarted).
#[test]
fn installing_under_a_running_server_keeps_its_sessions() {
    let root = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: this test must run there"
        );
        eprintln!("SKIPPED installing_under_a_running_server_keeps_its_sessions: not root");
        return;
    }
    let tc = preloaded_cluster();
    let mut session = tc.create_tenant_db("install");
    let merge = "SELECT dl_jsonb_merge_patch('{\"a\":1}', '{\"b\":2}')::text";
    let before: String = session.query_one(merge, &[]).unwrap().get(0);
    let mut observer = tc.admin("postgres");
    let watchdogs = watchdog_pids(&mut observer);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install-extension");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: String = session.query_one(merge, &[]).unwrap().get(0);
    assert_eq!(before, after);
    assert_eq!(watchdog_pids(&mut observer), watchdogs);
    let log = tc.cluster.log();
    assert!(!log.contains("terminated by signal"), "{log}");
    // A new session loads the new file.
    tc.admin("install").batch_execute(merge).unwrap();
}
