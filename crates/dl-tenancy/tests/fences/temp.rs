//! Temporary files per workspace in total (src/tempfiles.rs): `temp_file_limit` bounds one
//! process, and sorts in 20 sessions, each within it, filled the shared disk. The attacker's
//! sessions, direct and pooled (one of them with parallel workers), each run a sort that spills
//! within its own `temp_file_limit` and then hold their files at a gate the test keeps shut;
//! together they would hold several times the workspace's limit. The watchdog cancels the
//! biggest holders (53100) until the rest fit; the neighbour's spilling queries, within its
//! own limit, run throughout; the server does not restart.

use super::*;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};

/// The workspaces' limit on temporary files here, in MB (both: the attacker's files must not
/// count against the neighbour).
const LIMIT_MB: i64 = 20;

/// Rows each sort spills: with work_mem at its least (64 kB), about 7 MB of files (the
/// function's rows and the sort's runs), so that two fit under the limit and six do not.
const ROWS: i64 = 300_000;

/// Rows of the parallel sort: about 24 MB of files, split between the leader and its two
/// workers, none of them over the limit alone. Only with its workers' files counted is it
/// over, and the biggest holder.
const PARALLEL_ROWS: i64 = 2_000_000;

/// Attacker sessions at once: (pooled, parallel).
const ATTACKERS: [(bool, bool); 6] = [
    (false, true),
    (false, false),
    (false, false),
    (true, false),
    (true, false),
    (true, false),
];

/// One attacker statement: a sort that spills, whose first row (the largest) then waits for
/// the gate's table lock (a row lock needs a transaction id, which a parallel query cannot
/// take), holding the sort's files until the gate opens. OFFSET 0 keeps the gate's function
/// above the sort (the planner would push it below).
fn attack(parallel: bool) -> String {
    let (setup, source, rows) = if parallel {
        (
            "SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
             SET LOCAL min_parallel_table_scan_size = 0;
             SET LOCAL max_parallel_workers_per_gather = 2;"
                .to_string(),
            "SELECT v AS g FROM tenant_custom.big ORDER BY v DESC OFFSET 0".to_string(),
            PARALLEL_ROWS,
        )
    } else {
        (
            String::new(),
            format!(
                "SELECT g FROM pg_catalog.generate_series(1, {ROWS}) AS g ORDER BY g DESC OFFSET 0"
            ),
            ROWS,
        )
    };
    format!(
        "BEGIN;
         SET LOCAL work_mem = '64kB'; SET LOCAL lock_timeout = 0;
         SET LOCAL statement_timeout = '150s'; {setup}
         SELECT pg_catalog.count(*) FROM ({source}) AS s WHERE tenant_custom.hold(s.g, {rows});
         COMMIT"
    )
}

/// The neighbour's statement: the same kind of sort, no gate.
fn spill() -> String {
    format!(
        "BEGIN; SET LOCAL work_mem = '64kB';
         SELECT pg_catalog.count(*) FROM (
           SELECT g FROM pg_catalog.generate_series(1, {ROWS}) AS g ORDER BY g DESC) AS s;
         COMMIT"
    )
}

/// Bytes of the temporary files of `database`'s processes (parallel workers included), read
/// from the server's temporary directory as the watchdog reads it.
fn temp_bytes(env: &Env, admin: &mut Client, database: &str) -> i64 {
    let pids: Vec<i32> = admin
        .query(
            "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = $1",
            &[&database],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    fn bytes(path: &std::path::Path) -> i64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path)
                .map(|es| es.flatten().map(|e| bytes(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len() as i64,
            Err(_) => 0,
        }
    }
    let Ok(entries) = std::fs::read_dir(env.dir.join("pg/base/pgsql_tmp")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("pgsql_tmp")
                .and_then(|rest| rest.split('.').next()?.parse::<i32>().ok())
                .is_some_and(|pid| pids.contains(&pid))
        })
        .map(|e| bytes(&e.path()))
        .sum()
}

type Outcome = (usize, Result<(), postgres::Error>);

#[test]
fn a_workspace_s_temporary_files_are_bounded_in_total() {
    let env = Env::with_attacker_and_neighbour();
    let mut admin = env.admin("postgres");
    let before = started(&mut admin);
    let (attacker_db, neighbour_db) = (env.database(ATTACKER), env.database(NEIGHBOUR));
    let limit = LIMIT_MB * 1024 * 1024;
    env.run_as_override(
        ATTACKER,
        &format!(
            "CREATE TABLE tenant_custom.gate (n int); INSERT INTO tenant_custom.gate VALUES (0);
             CREATE TABLE tenant_custom.big AS SELECT g AS v FROM pg_catalog.generate_series(1, {PARALLEL_ROWS}) AS g;
             ANALYZE tenant_custom.big;
             CREATE FUNCTION tenant_custom.hold(g bigint, last bigint) RETURNS boolean
               LANGUAGE plpgsql PARALLEL RESTRICTED AS $$
             BEGIN
               IF g = last THEN PERFORM FROM tenant_custom.gate; END IF;
               RETURN true;
             END $$"
        ),
    );
    // The limits, once the table (filled through a spilling function scan) is there.
    for db in [&attacker_db, &neighbour_db] {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{db}\" SET dl_tenancy.temp_limit_mb = {LIMIT_MB}"
            ))
            .unwrap();
    }
    let mut gate = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    gate.batch_execute(
        "BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0;
         LOCK TABLE tenant_custom.gate IN ACCESS EXCLUSIVE MODE",
    )
    .unwrap();
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, false)).unwrap();
    neighbour
        .batch_execute(&spill())
        .expect("the neighbour's sort, alone");

    // The attack: every session starts its sort at the same moment.
    let (tx, rx) = mpsc::channel::<Outcome>();
    let barrier = Arc::new(Barrier::new(ATTACKERS.len()));
    let threads: Vec<_> = ATTACKERS
        .iter()
        .enumerate()
        .map(|(i, &(pooled, parallel))| {
            let mut c = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
            let (tx, barrier) = (tx.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let result = c.batch_execute(&attack(parallel));
                if result.is_err() {
                    // The session goes on (a session ended instead is checked below).
                    let _ = c.batch_execute("ROLLBACK");
                }
                let _ = tx.send((i, result));
            })
        })
        .collect();

    // Until every attacker statement failed or waits at the gate, and what the waiting ones
    // hold is within the limit; the neighbour sorts on each round.
    let waiting_sql = format!(
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity
          WHERE datname = '{attacker_db}' AND backend_type = 'client backend'
            AND wait_event_type = 'Lock'"
    );
    let workers_sql = format!(
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity
          WHERE datname = '{attacker_db}' AND backend_type = 'parallel worker'"
    );
    let mut outcomes: Vec<Outcome> = vec![];
    let (mut most, mut rounds, mut workers) = (0, 0, 0);
    let since = std::time::Instant::now();
    let settled = loop {
        outcomes.extend(rx.try_iter());
        let held = temp_bytes(&env, &mut admin, &attacker_db);
        most = most.max(held);
        let waiting = count(&mut admin, &waiting_sql) as usize;
        workers = workers.max(count(&mut admin, &workers_sql));
        neighbour
            .batch_execute(&spill())
            .unwrap_or_else(|e| panic!("the neighbour's sort during the attack: {e:?}"));
        rounds += 1;
        if outcomes.len() + waiting == ATTACKERS.len() && held <= limit {
            break held;
        }
        assert!(
            since.elapsed() < SAFETY_NET,
            "the attack never settled: {} failed, {waiting} waiting, {held} bytes held",
            outcomes.len()
        );
    };
    eprintln!(
        "settled: {settled} bytes held by {} waiting statements, at most {most} seen, {} failed, \
         {rounds} neighbour sorts, {workers} parallel workers seen",
        ATTACKERS.len() - outcomes.len(),
        outcomes.len()
    );
    // The neighbour's own files do not count against the attacker, nor the attacker's
    // against it: it sorts beside the attacker's held files, which stay within the limit.
    neighbour.batch_execute(&spill()).unwrap();
    neighbour.batch_execute(READ_QUERY).unwrap();
    assert!(temp_bytes(&env, &mut admin, &attacker_db) <= limit);

    // The gate opens: the statements that kept their files within the limit finish.
    gate.batch_execute("COMMIT").unwrap();
    for _ in outcomes.len()..ATTACKERS.len() {
        outcomes.push(rx.recv_timeout(SAFETY_NET).expect("an attacker statement"));
    }
    for t in threads {
        t.join().unwrap();
    }
    let failed: Vec<&postgres::Error> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    eprintln!("{} of {} statements failed", failed.len(), ATTACKERS.len());
    assert!(
        !failed.is_empty() && failed.len() < ATTACKERS.len(),
        "the limit is on the workspace's sessions together: some, not all, fail: {outcomes:?}"
    );
    // The parallel statement, over the limit only with its workers' files, was cancelled
    // (whether this round saw its workers depends on when it looked: printed above).
    assert!(
        outcomes.iter().any(|(i, r)| *i == 0 && r.is_err()),
        "the parallel statement ran through: {outcomes:?}"
    );
    for err in &failed {
        assert_eq!(sqlstate(err), "53100", "{err:?}");
        let message = err.as_db_error().unwrap().message();
        assert!(message.contains("limit on temporary files"), "{message}");
    }
    // Its files are gone with its statements, and it works on, direct and pooled.
    let since = std::time::Instant::now();
    while temp_bytes(&env, &mut admin, &attacker_db) > 0 {
        assert!(since.elapsed() < SAFETY_NET, "the attacker's files stayed");
    }
    for pooled in [false, true] {
        connect(&env.uri(ATTACKER, Kind::Override, pooled))
            .unwrap()
            .batch_execute(&spill())
            .expect("a sort within the limit runs");
    }
    let log = env.server_log();
    let line = log
        .lines()
        .find(|l| l.contains("dl_tenancy watchdog: cancelled the statement of session"))
        .expect("the watchdog logs each cancel");
    assert!(line.contains(&attacker_db), "{line}");
    assert!(
        !line.contains("generate_series"),
        "no statement text: {line}"
    );
    assert_eq!(started(&mut admin), before, "the server restarted");
}

/// Files a session keeps between statements (a `WITH HOLD` cursor's rows, written out at
/// COMMIT) cannot be freed by a cancel: past the workspace's limit the watchdog ends the
/// session, and the files go with it.
#[test]
fn a_session_holding_temporary_files_between_statements_is_ended() {
    let env = Env::with_attacker_and_neighbour();
    let mut admin = env.admin("postgres");
    let before = started(&mut admin);
    let attacker_db = env.database(ATTACKER);
    let mut holder = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    holder
        .batch_execute(&format!(
            "SET work_mem = '64kB';
             BEGIN;
             DECLARE held CURSOR WITH HOLD FOR
               SELECT g FROM pg_catalog.generate_series(1, {PARALLEL_ROWS}) AS g ORDER BY g DESC;
             COMMIT"
        ))
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let held = temp_bytes(&env, &mut admin, &attacker_db);
    assert!(
        held > LIMIT_MB * 1024 * 1024,
        "the cursor holds {held} bytes"
    );
    // The limit comes down below what the idle session holds.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{attacker_db}\" SET dl_tenancy.temp_limit_mb = {LIMIT_MB}"
        ))
        .unwrap();
    let since = std::time::Instant::now();
    while count(
        &mut admin,
        &format!("SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE pid = {pid}"),
    ) > 0
    {
        assert!(since.elapsed() < SAFETY_NET, "the session was never ended");
    }
    let err = holder
        .batch_execute("FETCH 1 FROM held")
        .expect_err("the session is gone");
    if let Some(db) = err.as_db_error() {
        assert_eq!(db.code().code(), "53100", "{err:?}");
    }
    while temp_bytes(&env, &mut admin, &attacker_db) > 0 {
        assert!(since.elapsed() < SAFETY_NET, "the cursor's files stayed");
    }
    assert!(
        env.server_log().contains(&format!(
            "dl_tenancy watchdog: ended session {pid}, whose temporary files stayed between statements,"
        )),
        "the watchdog logs the end"
    );
    env.assert_reads(NEIGHBOUR, false);
    connect(&env.uri(ATTACKER, Kind::Override, false))
        .unwrap()
        .batch_execute("SELECT 1")
        .expect("the attacker logs in again");
    assert_eq!(started(&mut admin), before, "the server restarted");
}
