//! One server, more pooled demand than it has connection slots: the extension's admission
//! (src/admission.rs) turns the pooler away with 57P03 past its share, PgBouncer queues its
//! clients instead of failing them, and the platform and direct logins keep their slots.
//! Order is established by observed state (the pooler's waiting clients), never by time.

mod common;

use common::*;
use dl_tenancy_ctl::local;
use dl_tenancy_ctl::{Config, Kind, Tenancy};
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Small enough that the burst below asks for several times the pooled slots: the pooler's
/// budget is 50 - 33 = 17 (domain/limits.rs, pooler_budget).
const MAX_CONNECTIONS: u32 = 50;
/// Workspaces in the burst, one pooled client each, and one more that arrives last.
const WORKSPACES: usize = 200;
/// The busiest workspace's clients: more than its pool (`max_db_connections` 10) serves.
const BUSY_CLIENTS: usize = 12;

/// One of these tests at a time: each runs a server and a burst of its own, and two at once on
/// a 2-core machine made the burst's logins outlast PgBouncer's `client_login_timeout` (a
/// pool's first clients wait for a server to log in for them).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn small_server() -> Env {
    let dir = pg_harness::temp_dir("dl-tenancy-admission").unwrap();
    let status = local::up(&local::LocalOptions {
        data_dir: dir.clone(),
        pg_port: Some(pg_harness::free_port()),
        pooler_port: Some(pg_harness::free_port()),
        direct_port: Some(pg_harness::free_port()),
        max_connections: Some(MAX_CONNECTIONS),
        retention_full: None,
    })
    .expect("local up with a small max_connections");
    let t = Tenancy::open(&Config {
        data_dir: dir.clone(),
        admin_url: None,
    })
    .unwrap();
    Env { dir, status, t }
}

/// A client's error with its SQLSTATE and message (`postgres::Error` shows only "db error").
fn refusal(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The pooler's waiting clients, all workspaces together, and those of one database.
fn waiting(env: &Env, db: &str) -> (u64, u64) {
    let pools = env.t.pooler_pools().unwrap();
    let all = pools.iter().map(|p| p.clients_waiting).sum();
    let one = pools
        .iter()
        .filter(|p| p.database == db)
        .map(|p| p.clients_waiting)
        .sum();
    (all, one)
}

#[test]
fn a_burst_larger_than_the_server_waits_and_the_platform_gets_in() {
    let _one = one_at_a_time();
    let env = small_server();
    let names: Vec<String> = (0..=WORKSPACES).map(|i| format!("ws{i:03}")).collect();
    for ws in &names {
        env.t.provision(ws).unwrap();
    }
    let (busy, last) = (&names[0], &names[WORKSPACES]);
    let busy_db = env.database(busy);
    // The burst: every workspace's client, and the busiest workspace's extra ones, connect
    // (pooled), meet at the barrier, then each holds a server connection for a while.
    let mut clients: Vec<String> = names[..WORKSPACES]
        .iter()
        .map(|ws| env.uri(ws, Kind::Read, true))
        .collect();
    let busy_uri = env.uri(busy, Kind::Read, true);
    clients.extend(std::iter::repeat_n(busy_uri, BUSY_CLIENTS - 1));
    let barrier = Arc::new(Barrier::new(clients.len() + 1));
    let burst: Vec<_> = clients
        .into_iter()
        .map(|uri| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let connected = connect(&uri);
                barrier.wait();
                connected?.batch_execute("SELECT pg_catalog.pg_sleep(1)")
            })
        })
        .collect();
    barrier.wait();
    // Observed: clients wait in the pooler, the busiest workspace's among them.
    let started = Instant::now();
    while waiting(&env, &busy_db) == (0, 0) || waiting(&env, &busy_db).1 == 0 {
        if burst.iter().all(|t| t.is_finished()) {
            // Nobody can wait any more: say why (clients refused at login, say).
            let failed: Vec<String> = burst
                .into_iter()
                .filter_map(|t| t.join().unwrap().err().map(|e| refusal(&e)))
                .collect();
            panic!("the burst ended before a client waited; failed: {failed:?}");
        }
        assert!(started.elapsed() < SAFETY_NET, "no client ever waited");
    }
    let (all_waiting, busy_waiting) = waiting(&env, &busy_db);
    eprintln!(
        "waiting in the pooler: {all_waiting} (of them {busy_waiting} of the busiest workspace)"
    );
    let sessions = count(
        &mut env.admin("postgres"),
        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'",
    );
    eprintln!("client sessions on the server: {sessions} of {MAX_CONNECTIONS}");

    // While they wait: the busiest workspace's login gets in directly, a workspace that
    // arrives last runs its query pooled, and the platform's tools work.
    connect(&env.uri(busy, Kind::Read, false))
        .expect("a direct login while its pool is full")
        .batch_execute("SELECT 1")
        .unwrap();
    connect(&env.uri(last, Kind::Read, true))
        .expect("the last workspace's pooled login waits and gets in")
        .batch_execute("SELECT 1")
        .expect("and its query runs");
    let status = env.cli(&["status", "--workspace", last]);
    assert_eq!(status.code, 0, "status during the burst: {}", status.stderr);
    let upgrade = env.cli(&["upgrade", "--all"]);
    assert_eq!(
        upgrade.code, 0,
        "upgrade --all during the burst: {}",
        upgrade.stderr
    );

    // Every client of the burst connected and ran its query: none was refused.
    let failed: Vec<String> = burst
        .into_iter()
        .filter_map(|t| t.join().unwrap().err().map(|e| refusal(&e)))
        .collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    // PgBouncer may open a descriptor for each of its max_client_conn clients and more.
    let log = std::fs::read_to_string(env.dir.join("pgbouncer/pgbouncer.log")).unwrap();
    let fd_limit: u64 = log
        .split("kernel file descriptor limit: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("PgBouncer logs its file descriptor limit");
    assert!(fd_limit > 4_012, "PgBouncer's fd limit {fd_limit}");
    // After the burst the slots come back (server_idle_timeout), observed, not timed.
    let mut admin = env.admin("postgres");
    let started = Instant::now();
    while count(&mut admin, WORKSPACE_SESSIONS) > 0 {
        assert!(
            started.elapsed() < SAFETY_NET,
            "the burst's sessions stayed"
        );
    }
}

/// Sessions of workspace logins on the server.
const WORKSPACE_SESSIONS: &str = "SELECT count(*) FROM pg_catalog.pg_stat_activity a
     JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
    WHERE (pg_catalog.pg_has_role(r.oid, 'dl_tenant_read', 'MEMBER')
           OR pg_catalog.pg_has_role(r.oid, 'dl_tenant_override', 'MEMBER'))
      AND NOT r.rolsuper";

/// A hostile workspace holds its pooled server connections in open transactions, and asks for
/// more: it keeps at most its pool (10 of the budget's 17), its extra client waits in the
/// pooler instead of reaching the server, and its neighbour's reads still run, pooled and
/// direct.
#[test]
fn a_workspace_holding_transactions_open_keeps_only_its_pool() {
    let _one = one_at_a_time();
    let env = small_server();
    for ws in ["holder", "beside"] {
        env.t.provision(ws).unwrap();
    }
    let holder_db = env.database("holder");
    let uri = env.uri("holder", Kind::Override, true);
    let held: Vec<_> = (0..10)
        .map(|_| {
            let mut c = connect(&uri).unwrap();
            c.batch_execute("BEGIN; SELECT 1").unwrap();
            c
        })
        .collect();
    let extra =
        std::thread::spawn(move || connect(&uri).and_then(|mut c| c.batch_execute("SELECT 1")));
    let started = Instant::now();
    while waiting(&env, &holder_db).1 == 0 {
        assert!(
            started.elapsed() < SAFETY_NET,
            "the extra client never waited"
        );
    }
    let on_server = count(
        &mut env.admin("postgres"),
        &format!("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = '{holder_db}'"),
    );
    assert_eq!(on_server, 10, "the holder reached past its pool");
    for pooled in [true, false] {
        connect(&env.uri("beside", Kind::Read, pooled))
            .unwrap_or_else(|e| panic!("the neighbour (pooled {pooled}): {e}"))
            .batch_execute(READ_QUERY)
            .unwrap();
    }
    drop(held);
    extra
        .join()
        .unwrap()
        .expect("the extra client runs once the holder lets go");
}

/// Direct logins have a cap of their own (`dl_tenancy.direct_slots`, 10 on this server), and
/// a workspace may hold no more of it than is left free: one workspace holding direct
/// sessions idle gets 53300 at half the cap, another still logs in directly, and neither can
/// take the slots the pooler's budget counts on: two other workspaces then fill the whole
/// budget (17) with pooled clients in open transactions, and none of them is refused or
/// waits. The platform still gets in, and the refusal shows in what `serve`'s /metrics
/// renders.
#[test]
fn direct_sessions_cannot_take_the_pooled_slots() {
    let _one = one_at_a_time();
    let env = small_server();
    for ws in ["hog", "pool-a", "pool-b"] {
        env.t.provision(ws).unwrap();
    }
    let hog_uri = env.uri("hog", Kind::Override, false);
    let mut hog = Vec::new();
    let refused = loop {
        match connect(&hog_uri) {
            Ok(c) => hog.push(c),
            Err(e) => break e,
        }
        assert!(hog.len() <= 12, "direct logins were never capped");
    };
    assert_eq!(sqlstate(&refused), "53300", "{refused}");
    assert!(
        format!("{refused:?}").contains("direct workspace logins"),
        "{refused:?}"
    );
    let direct_slots = dl_tenancy_ctl::fences::direct_slots(MAX_CONNECTIONS) as usize;
    assert_eq!(
        hog.len(),
        direct_slots / 2,
        "direct sessions of one workspace"
    );
    let other = connect(&env.uri("pool-b", Kind::Read, false))
        .expect("another workspace's direct login while the hog holds its share");

    let (_, budget) = dl_tenancy_ctl::fences::pooler_budget(MAX_CONNECTIONS);
    let budget: usize = budget.parse().unwrap();
    let pooled: Vec<_> = (0..budget)
        .map(|i| {
            let ws = if i < 10 { "pool-a" } else { "pool-b" };
            let mut c = connect(&env.uri(ws, Kind::Read, true))
                .unwrap_or_else(|e| panic!("pooled client {i}: {e}"));
            c.batch_execute("BEGIN; SELECT 1")
                .unwrap_or_else(|e| panic!("pooled client {i}: {e}"));
            c
        })
        .collect();
    assert_eq!(waiting(&env, "").0, 0, "a pooled client waited");
    let mut admin = env.admin("postgres");
    assert_eq!(
        count(&mut admin, WORKSPACE_SESSIONS) as usize,
        direct_slots / 2 + 1 + budget
    );
    let status = env.cli(&["status", "--workspace", "pool-a"]);
    assert_eq!(status.code, 0, "status: {}", status.stderr);

    let snap = env.t.load_snapshot().unwrap();
    let server = &snap.servers[0];
    assert_eq!(
        server.admission.direct.sessions as usize,
        direct_slots / 2 + 1
    );
    assert_eq!(server.admission.pooled.sessions as usize, budget);
    let load = |ws: &str| snap.workspaces.iter().find(|w| w.workspace == ws).unwrap();
    assert_eq!(load("hog").refused_direct, 1);
    assert_eq!(
        load("pool-a").refused_direct + load("pool-a").refused_pooled,
        0
    );
    // A tenant cannot read the server's figures (other workspaces' refusals).
    let err = hog[0]
        .query_one("SHOW dl_tenancy.admission", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");

    drop(pooled);
    drop(hog);
    drop(other);
    let started = Instant::now();
    while env.t.load_snapshot().unwrap().servers[0]
        .admission
        .direct
        .sessions
        > 0
    {
        assert!(
            started.elapsed() < SAFETY_NET,
            "the direct sessions stayed counted"
        );
    }
}
