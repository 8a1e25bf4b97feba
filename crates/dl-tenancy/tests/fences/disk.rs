//! The server's disk, shared by every workspace and outside their quotas: a full disk stops
//! the server with a PANIC and can leave no log of why (src/disk.rs), and a tenant decides
//! much of what goes into the server log (src/logbound.rs). Tried without filling the disk:
//! the floor is set above what the disk has free.

use super::*;

/// Free space on the filesystem of `dir`, in MB.
fn free_mb(dir: &std::path::Path) -> u64 {
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: a system call on a local struct and a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
    stat.f_bavail as u64 * stat.f_frsize as u64 / (1024 * 1024)
}

fn reload(admin: &mut Client, settings: &[&str]) {
    for setting in settings {
        admin.batch_execute(setting).unwrap();
    }
    admin
        .batch_execute("SELECT pg_catalog.pg_reload_conf()")
        .unwrap();
}

/// Every workspace's log budget 256 kB and no refill, so that the budget is all a test's
/// attacker gets; waits until a new session sees it.
fn log_budget_without_refill(env: &Env) {
    reload(
        &mut env.admin("postgres"),
        &[
            "ALTER SYSTEM SET dl_tenancy.log_rate_kb = 0",
            "ALTER SYSTEM SET dl_tenancy.log_burst_kb = 256",
        ],
    );
    let started_at = std::time::Instant::now();
    while count(
        &mut env.admin("postgres"),
        "SELECT pg_catalog.current_setting('dl_tenancy.log_rate_kb')::bigint",
    ) != 0
    {
        assert!(started_at.elapsed() < SAFETY_NET, "the reload never took");
    }
}

/// Waits (observed, bounded by the safety net) until `write` fails with 53100 (`refused`) or
/// runs.
fn wait_for_writes(c: &mut Client, write: &str, refused: bool) {
    let started = std::time::Instant::now();
    loop {
        match c.batch_execute(write) {
            Err(e) if refused && sqlstate(&e) == "53100" => {
                let message = e.as_db_error().unwrap().message();
                assert!(message.contains("low on disk"), "{message}");
                return;
            }
            Ok(()) if !refused => return,
            other => assert!(
                started.elapsed() < SAFETY_NET,
                "writes never became refused={refused}: {other:?}"
            ),
        }
    }
}

/// Below `dl_tenancy.disk_floor_mb` free, every workspace's writes fail with 53100 while reads
/// and the platform's writes run, the server log says so, and the writes come back with the
/// space.
#[test]
fn a_server_low_on_disk_refuses_workspace_writes_and_says_so() {
    let env = Env::with_attacker_and_neighbour();
    let mut admin = env.admin("postgres");
    let before = started(&mut admin);
    for ws in [ATTACKER, NEIGHBOUR] {
        env.run_as_override(ws, "CREATE TABLE tenant_custom.notes (body text)");
    }
    let write = "INSERT INTO tenant_custom.notes VALUES ('x')";
    let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Override, true)).unwrap();

    let floor = free_mb(&env.dir) + 1000;
    reload(
        &mut admin,
        &[&format!(
            "ALTER SYSTEM SET dl_tenancy.disk_floor_mb = {floor}"
        )],
    );
    wait_for_writes(&mut attacker, write, true);
    for c in [&mut attacker, &mut neighbour] {
        // Found on the search path (pg_catalog) is not found where it would be made.
        for write in [write, "CREATE TABLE IF NOT EXISTS pg_class (id int)"] {
            let err = c.batch_execute(write).unwrap_err();
            assert_eq!(sqlstate(&err), "53100", "{write}: {err:?}");
        }
        c.batch_execute("SELECT count(*) FROM tenant_custom.notes")
            .expect("reads run");
        c.batch_execute("DELETE FROM tenant_custom.notes")
            .expect("deletes run");
    }
    env.assert_reads(NEIGHBOUR, true);
    // The platform's own sessions are not workspaces: they write.
    env.admin_ws(NEIGHBOUR)
        .batch_execute(write)
        .expect("the platform writes while the disk is low");
    assert!(
        env.server_log().contains("below dl_tenancy.disk_floor_mb"),
        "the server log says why writes are refused"
    );

    reload(&mut admin, &["ALTER SYSTEM RESET dl_tenancy.disk_floor_mb"]);
    wait_for_writes(&mut neighbour, write, false);
    attacker.batch_execute(write).expect("writes run again");
    assert!(env.server_log().contains("free again"));
    assert_eq!(started(&mut admin), before, "the server restarted");
}

/// A workspace's messages fill the server log only up to its budget: 100 MB of warnings, ten
/// thousand small ones and a failing 5 MB statement from the attacker add at most the budget
/// (the rate is 0 here, so the budget is all it gets), while a neighbour's error is still
/// logged with its statement.
#[test]
fn a_workspace_cannot_fill_the_server_log() {
    let env = Env::with_attacker_and_neighbour();
    log_budget_without_refill(&env);
    let log_bytes = || std::fs::metadata(&env.status.postgres.log).unwrap().len();
    let before = log_bytes();
    for pooled in [false, true] {
        let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        attacker
            .batch_execute(
                "DO $$ BEGIN
                     FOR i IN 1..500 LOOP RAISE WARNING '%', pg_catalog.repeat('w', 100000); END LOOP;
                     FOR i IN 1..10000 LOOP RAISE WARNING 'w'; END LOOP;
                 END $$",
            )
            .unwrap();
        let big = format!("SELECT '{}'::int AS attacker_marker", "x".repeat(5_000_000));
        let err = attacker.batch_execute(&big).unwrap_err();
        assert_eq!(sqlstate(&err), "22P02", "{err:?}");
        // Larger than the crumbs the small warnings left of the budget.
        attacker
            .batch_execute(&format!(
                "SELECT 1/0 AS attacker_after_budget_{}",
                "x".repeat(200)
            ))
            .unwrap_err();
    }
    let grown = log_bytes() - before;
    eprintln!("the server log grew by {grown} bytes for 2 x 55 MB of the attacker's messages");
    assert!(grown < 1024 * 1024, "the log grew by {grown} bytes");
    let log = env.server_log();
    let leaked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("attacker_after_budget"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the attacker's messages past its budget reached the log: {leaked:?}"
    );
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Override, false)).unwrap();
    neighbour
        .batch_execute("SELECT 1/0 AS neighbour_marker")
        .unwrap_err();
    // The neighbour's error is in the log once its backend wrote it: the next admin query
    // comes after it.
    let started_at = std::time::Instant::now();
    while !env.server_log().contains("neighbour_marker") {
        assert!(
            started_at.elapsed() < SAFETY_NET,
            "the neighbour's error never reached the log"
        );
    }
}

/// A tenant's function where no session of its own runs it: the parallel workers of an index
/// build (the leader only coordinates here). Each warning it raises (30 kB) passes through the
/// workers' own log and their leader's, and reaches the client: the log grows by at most the
/// workspace's budget, and the workers (seen by their pids in the warnings) ran it.
#[test]
fn a_tenant_function_in_parallel_workers_is_fenced_too() {
    let env = Env::with_attacker_and_neighbour();
    log_budget_without_refill(&env);
    let (cfg, tls) =
        dl_tenancy_ctl::connection::client_config(&env.uri(ATTACKER, Kind::Override, false))
            .unwrap();
    let pids = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen = pids.clone();
    let mut attacker = cfg
        .clone()
        .notice_callback(move |n| {
            if let Some(pid) = n.message().strip_prefix("noisy ") {
                seen.lock()
                    .unwrap()
                    .insert(pid.split(' ').next().unwrap_or("").to_string());
            }
        })
        .connect(tls)
        .unwrap();
    attacker
        .batch_execute(
            "CREATE TABLE tenant_custom.big AS
                 SELECT g, pg_catalog.repeat('x', 100) AS pad FROM pg_catalog.generate_series(1, 300000) AS g;
             CREATE FUNCTION tenant_custom.noisy(i int) RETURNS int
                 LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
             BEGIN
                 IF i % 1000 = 0 THEN
                     RAISE WARNING 'noisy % %', pg_catalog.pg_backend_pid(), pg_catalog.repeat('w', 30000);
                 END IF;
                 RETURN i;
             END $$",
        )
        .unwrap();
    let log_bytes = || std::fs::metadata(&env.status.postgres.log).unwrap().len();
    let before = log_bytes();
    let leader: i32 = attacker
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    attacker
        .batch_execute(
            "SET max_parallel_maintenance_workers = 2; SET maintenance_work_mem = '128MB';
             SET parallel_leader_participation = off;
             CREATE INDEX ON tenant_custom.big (tenant_custom.noisy(g))",
        )
        .unwrap();
    let grown = log_bytes() - before;
    let pids = pids.lock().unwrap().clone();
    eprintln!("warnings from pids {pids:?} (leader {leader}); the log grew by {grown} bytes");
    assert!(
        pids.iter().any(|p| p != &leader.to_string()),
        "no parallel worker ran the function: {pids:?}"
    );
    assert!(grown < 1024 * 1024, "the log grew by {grown} bytes");
}
