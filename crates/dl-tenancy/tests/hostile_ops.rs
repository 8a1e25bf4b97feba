//! A hostile tenant turns the platform's own operations against it (0.6.0): code planted for
//! a backup, restore, move, drain, usage, upgrade or purge to run; grants that block a
//! neighbour's cleanup; locks and open transactions that hang the platform or the server's
//! logical slots; a rotated login kept open while nobody runs `serve`. Each attack runs
//! through the tenant's real logins, direct and pooled, and checks the evidence the tenant's
//! code wrote, the answer the platform gives, and that the source and the neighbour work on.

mod common;

use common::*;
use dl_tenancy_ctl::{ErrorCode, Kind, MoveMethod};
use postgres::Client;
use std::time::Instant;

/// Roles the tenant's code made where it ran as a superuser (it makes one each time).
fn pwned_roles(admin: &mut Client) -> i64 {
    count(
        admin,
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pwned%'",
    )
}

/// Everything in `tenant_custom` that PostgreSQL evaluates somewhere: the planner (an
/// expression index folds `wrap(1)`, a partial index's predicate, expression statistics),
/// loading rows (CHECK, DEFAULT, generated column, trigger, domain), and what only a query
/// names (rule, view, operator, cast). Each calls `spy`, which writes its evidence to the
/// server log (who ran it) and, run as a superuser, makes a `pwned_*` role and takes the
/// session user's rights back with `RESET ROLE`.
const PLANTED: &str = r#"
CREATE FUNCTION tenant_custom.spy(tag text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    su boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user)
               OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
    RAISE WARNING 'dl-evidence tag=% superuser=%', tag, su;
    IF su THEN
        RESET ROLE;
        EXECUTE pg_catalog.format('CREATE ROLE %I SUPERUSER', 'pwned_' || tag || '_' || pg_catalog.pg_backend_pid());
    END IF;
    RETURN true;
END $$;
CREATE FUNCTION tenant_custom.wrap(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN PERFORM tenant_custom.spy('planner'); RETURN x; END $$;
CREATE FUNCTION tenant_custom.trig() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM tenant_custom.spy('trigger'); RETURN NEW; END $$;
CREATE DOMAIN tenant_custom.checked AS int CHECK (tenant_custom.spy('domain'));
CREATE TABLE tenant_custom.trap (
    x int DEFAULT tenant_custom.wrap(0) CHECK (tenant_custom.spy('check')),
    y int GENERATED ALWAYS AS (tenant_custom.wrap(x)) STORED,
    z tenant_custom.checked);
CREATE INDEX trap_expr ON tenant_custom.trap ((tenant_custom.wrap(x) + tenant_custom.wrap(1)));
CREATE INDEX trap_partial ON tenant_custom.trap (x) WHERE tenant_custom.wrap(2) > 0;
CREATE STATISTICS tenant_custom.trap_stats ON (tenant_custom.wrap(x) + tenant_custom.wrap(3)) FROM tenant_custom.trap;
CREATE TRIGGER trap_trigger BEFORE INSERT ON tenant_custom.trap
    FOR EACH ROW EXECUTE FUNCTION tenant_custom.trig();
CREATE TABLE tenant_custom.ruled (z int);
CREATE RULE ruled_insert AS ON INSERT TO tenant_custom.ruled DO ALSO SELECT tenant_custom.spy('rule');
CREATE VIEW tenant_custom.trap_view AS SELECT tenant_custom.spy('view') AS s FROM tenant_custom.trap;
CREATE FUNCTION tenant_custom.eq(int, int) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN PERFORM tenant_custom.spy('operator'); RETURN $1 = $2; END $$;
CREATE OPERATOR tenant_custom.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = tenant_custom.eq);
CREATE TYPE tenant_custom.pair AS (a int, b int);
CREATE FUNCTION tenant_custom.pair_text(tenant_custom.pair) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM tenant_custom.spy('cast'); RETURN 'pair'; END $$;
CREATE CAST (tenant_custom.pair AS text) WITH FUNCTION tenant_custom.pair_text(tenant_custom.pair);
INSERT INTO tenant_custom.trap (x, z) VALUES (1, 1), (2, 2);
INSERT INTO tenant_custom.ruled VALUES (1);
ANALYZE tenant_custom.trap;
"#;

/// Backup, restore, usage, upgrade, a move by each method, a drain and a purge all touch a
/// workspace whose tenant planted code everywhere PostgreSQL evaluates it. The code runs (its
/// evidence is in the log) but never as a superuser, on either server; the data arrives.
#[test]
fn planted_code_never_runs_as_the_platform() {
    let env = Env::with_attacker_and_neighbour();
    let t = &env.t;
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, true)).unwrap();
    let mut over = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    over.batch_execute(PLANTED).unwrap();

    let file = env.dir.join("planted.backup");
    let b = t.backup(ATTACKER, &file).unwrap();
    assert_eq!(b.manifest.rows["tenant_custom.trap"], 2);
    assert!(
        env.server_log()
            .contains("dl-evidence tag=planner superuser=f"),
        "counting the tenant's table planned its expression index as the tenant"
    );
    let r = t.restore(&file, "copy").unwrap();
    assert_eq!(r.rows["tenant_custom.trap"], 2);
    assert_eq!(r.rows["tenant_custom.ruled"], 1);
    t.usage(ATTACKER).unwrap();
    t.fleet_usage().unwrap();
    let up = env.cli(&["upgrade", "--all"]);
    assert_eq!(up.code, 0, "{}", up.stderr);

    let second = add_second(&env);
    let m = t
        .move_workspace_with(ATTACKER, "second", MoveMethod::Logical)
        .unwrap();
    assert_eq!(m.rows["tenant_custom.trap"], 2);
    let m = t
        .move_workspace_with(ATTACKER, "local", MoveMethod::Copy)
        .unwrap();
    assert_eq!(m.rows["tenant_custom.trap"], 2);
    t.move_workspace_with("copy", "second", MoveMethod::Copy)
        .unwrap();
    t.drain("second", 1).unwrap();
    t.deprovision("copy", "copy").unwrap();
    t.purge("copy", "copy").unwrap();

    let mut admin2 = Client::connect(
        &second.pg.conn_string("postgres", "postgres"),
        postgres::NoTls,
    )
    .unwrap();
    for a in [&mut env.admin("postgres"), &mut admin2] {
        assert_eq!(pwned_roles(a), 0, "tenant code ran as a superuser");
    }
    let log = env.server_log();
    assert!(
        !log.contains("superuser=t"),
        "tenant code ran as a superuser"
    );
    // The attacker's workspace, back home, and the neighbour work on.
    let mut c = connect(&env.uri(ATTACKER, Kind::Override, true)).unwrap();
    assert_eq!(
        count(&mut c, "SELECT sum(y)::bigint FROM tenant_custom.trap"),
        3
    );
    neighbour.batch_execute(READ_QUERY).unwrap();
}

/// `restore` never touches the source's roles or anything the manifest names: after the
/// README's own `backup acme; restore --workspace acme-copy`, and after a restore of a file
/// whose manifest was edited to name a neighbour's database, the source and the neighbour
/// log in and read, direct and pooled.
#[test]
fn restore_leaves_the_source_and_neighbours_alone() {
    let env = Env::with_attacker_and_neighbour();
    let t = &env.t;
    let mut over = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    over.batch_execute(CUSTOM_OBJECTS).unwrap();
    let file = env.dir.join("a.backup");
    t.backup(ATTACKER, &file).unwrap();
    t.restore(&file, "mallory-copy").unwrap();

    // The manifest rewritten to name the neighbour's database and workspace.
    let text = std::fs::read(&file).unwrap();
    let first = text.iter().position(|b| *b == b'\n').unwrap();
    let second = first + 1 + text[first + 1..].iter().position(|b| *b == b'\n').unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&text[first + 1..second]).unwrap();
    manifest["database"] = env.database(NEIGHBOUR).into();
    manifest["workspace"] = NEIGHBOUR.into();
    let forged = env.dir.join("forged.backup");
    let mut out = text[..=first].to_vec();
    out.extend(serde_json::to_vec(&manifest).unwrap());
    out.extend(&text[second..]);
    std::fs::write(&forged, out).unwrap();
    t.restore(&forged, "forged-copy").unwrap();

    for ws in [ATTACKER, NEIGHBOUR] {
        for kind in Kind::ALL {
            for pooled in [false, true] {
                let mut c = connect(&env.uri(ws, kind, pooled))
                    .unwrap_or_else(|e| panic!("{ws} {kind} pooled={pooled}: {e}"));
                c.batch_execute(READ_QUERY)
                    .unwrap_or_else(|e| panic!("{ws} {kind} pooled={pooled}: {e}"));
            }
        }
    }
    let mut over = connect(&env.uri(ATTACKER, Kind::Override, true)).unwrap();
    assert_eq!(
        count(&mut over, "SELECT count(*) FROM tenant_custom.segments"),
        40
    );
}

/// A tenant can grant only to its own roles, the contract's group roles and PUBLIC; a grant
/// to a neighbour's login (its name is in pg_roles) is refused, in every form. A grant that
/// got there anyway (made before 0.6.0) no longer blocks the neighbour's purge, and a grant
/// to a load login while it exists no longer blocks its removal.
#[test]
fn grants_reach_only_the_workspaces_own_roles() {
    let env = Env::with_attacker_and_neighbour();
    let t = &env.t;
    let victim = login_of(&env.uri(NEIGHBOUR, Kind::Read, false));
    let own = login_of(&env.uri(ATTACKER, Kind::Read, false));
    for pooled in [false, true] {
        let mut over = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        over.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS tenant_custom.t (id int);
             GRANT SELECT ON tenant_custom.t TO dl_tenant_read, PUBLIC, \"{own}\";
             GRANT SELECT ON tenant_custom.t TO {};",
            env.database(ATTACKER)
        ))
        .unwrap();
        for attack in [
            format!("GRANT SELECT ON tenant_custom.t TO \"{victim}\""),
            format!("GRANT SELECT ON tenant_custom.t TO dl_tenant_read, \"{victim}\""),
            format!("GRANT USAGE ON SCHEMA tenant_custom TO \"{victim}\""),
            format!("ALTER DEFAULT PRIVILEGES IN SCHEMA tenant_custom GRANT SELECT ON TABLES TO \"{victim}\""),
            format!("CREATE POLICY p ON tenant_custom.t TO \"{victim}\" USING (true)"),
            format!("GRANT \"{own}\" TO \"{victim}\""),
        ] {
            let e = over.batch_execute(&attack).unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{attack}: {e}");
        }
    }
    // A grant to the neighbour made before 0.6.0 (by hand here) and one to the attacker's
    // load login: purging the neighbour and a backup (which makes and drops that login)
    // both succeed, and the attacker's workspace works on.
    let mut admin = env.admin_ws(ATTACKER);
    let loader = format!("{}_load", env.database(ATTACKER));
    admin
        .batch_execute(&format!(
            "GRANT SELECT ON tenant_custom.t TO \"{victim}\";
             CREATE ROLE \"{loader}\" NOLOGIN IN ROLE {db}, dl_tenant_override;
             GRANT SELECT ON tenant_custom.t TO \"{loader}\";",
            db = env.database(ATTACKER)
        ))
        .unwrap();
    t.backup(ATTACKER, &env.dir.join("b.backup")).unwrap();
    assert!(!role_exists(&mut env.admin("postgres"), &loader));
    t.deprovision(NEIGHBOUR, NEIGHBOUR).unwrap();
    let purged = t.purge(NEIGHBOUR, NEIGHBOUR).unwrap();
    assert!(purged.dropped_roles.contains(&victim), "{purged:?}");
    let mut over = connect(&env.uri(ATTACKER, Kind::Override, true)).unwrap();
    assert_eq!(count(&mut over, "SELECT count(*) FROM tenant_custom.t"), 0);
}

/// A tenant holds locks in open transactions (after turning its idle timeout off): on the
/// override table it cannot (42501); on its own table it can, and `backup` answers `busy`
/// instead of waiting; `usage` answers; no session of the platform is left waiting; the
/// neighbour is served throughout. Direct and pooled.
#[test]
fn a_tenants_locks_make_operations_busy_not_hang() {
    let env = Env::with_attacker_and_neighbour();
    let t = &env.t;
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Override, true)).unwrap();
    env.run_as_override(ATTACKER, "CREATE TABLE tenant_custom.held (id int)");
    for pooled in [false, true] {
        let mut c = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        c.batch_execute("BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0")
            .unwrap();
        let e = c
            .batch_execute("LOCK TABLE dl_override.person_overrides IN ACCESS EXCLUSIVE MODE")
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "pooled={pooled}: {e}");
        c.batch_execute(
            "ROLLBACK; BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0;
                         LOCK TABLE tenant_custom.held IN ACCESS EXCLUSIVE MODE",
        )
        .unwrap();
        // A row lock on the override table too.
        upsert(&mut neighbour, "n-1", "ok").unwrap();
        let mut rows = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        upsert(&mut rows, "k-1", "ok").unwrap();
        rows.batch_execute(
            "BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0;
                            UPDATE dl_override.person_overrides SET status = 'held'",
        )
        .unwrap();

        let e = t.backup(ATTACKER, &env.dir.join(format!("busy-{pooled}.backup")));
        assert_eq!(e.unwrap_err().code, ErrorCode::Busy, "pooled={pooled}");
        let u = t.usage(ATTACKER).unwrap();
        assert!(u.rows["dl_override.person_overrides"] >= 1);
        t.fleet_usage().unwrap();
        upsert(&mut neighbour, "n-2", "ok").unwrap();
        neighbour.batch_execute(READ_QUERY).unwrap();
        let waiting = count(
            &mut env.admin("postgres"),
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name LIKE 'dl-tenancy%' AND wait_event_type = 'Lock'",
        );
        assert_eq!(waiting, 0, "a platform session waits on the tenant's lock");
        c.batch_execute("ROLLBACK").unwrap();
        rows.batch_execute("ROLLBACK").unwrap();
    }
    t.backup(ATTACKER, &env.dir.join("free.backup")).unwrap();
}

/// An open tenant transaction with an xid holds back logical slot creation in every database
/// of the server. Whatever the tenant set in its session, the watchdog ends it at the
/// transaction ceiling, so a slot in the neighbour's database gets made; the neighbour's own
/// session, idle in no transaction, stays. Direct and pooled.
#[test]
fn an_open_tenant_transaction_ends_at_the_ceiling() {
    let env = Env::with_attacker_and_neighbour();
    let mut admin = env.admin("postgres");
    admin
        .batch_execute("ALTER SYSTEM SET dl_tenancy.transaction_limit = '2s'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, false)).unwrap();
    for pooled in [false, true] {
        let mut c = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        c.batch_execute(
            "SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0;
             BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0;",
        )
        .unwrap();
        upsert(&mut c, "held-open", "x").unwrap();
        let xid: String = c
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .unwrap()
            .get(0);
        // The slot waits for that transaction; the watchdog lets it through.
        let mut in_neighbour = env.admin_ws(NEIGHBOUR);
        let (tx, rx) = std::sync::mpsc::channel();
        let slot = format!("probe_{pooled}");
        let handle = std::thread::spawn(move || {
            let r = in_neighbour.execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            );
            let _ = in_neighbour.execute("SELECT pg_drop_replication_slot($1)", &[&slot]);
            tx.send(r.map(|_| ())).unwrap();
        });
        rx.recv_timeout(SAFETY_NET)
            .expect("slot creation still waits for the tenant's transaction")
            .unwrap();
        handle.join().unwrap();
        assert!(
            c.batch_execute("COMMIT").is_err(),
            "pooled={pooled}: transaction {xid} outlived the ceiling"
        );
        neighbour.batch_execute(READ_QUERY).unwrap();
    }
    let mut reader = connect(&env.uri(ATTACKER, Kind::Override, true)).unwrap();
    assert_eq!(
        count(
            &mut reader,
            "SELECT count(*) FROM dl_override.person_overrides WHERE identity_key = 'held-open'"
        ),
        0,
        "the ended transaction committed nothing"
    );
}

/// `rotate --grace` with no `serve` running: the old login's open sessions, direct and
/// pooled, end when the grace is over (the server's watchdog), and it cannot come back; the
/// new login and the neighbour work on.
#[test]
fn a_rotated_login_ends_without_serve() {
    let env = Env::with_attacker_and_neighbour();
    let t = &env.t;
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, false)).unwrap();
    let old_uri = env.uri(ATTACKER, Kind::Read, false);
    let old_pooled = env.uri(ATTACKER, Kind::Read, true);
    let mut old = [connect(&old_uri).unwrap(), connect(&old_pooled).unwrap()];
    for c in old.iter_mut() {
        c.batch_execute(READ_QUERY).unwrap();
    }
    t.rotate(ATTACKER, Kind::Read, 2).unwrap();
    let started = Instant::now();
    for (i, c) in old.iter_mut().enumerate() {
        // Until the grace is over the old session answers; then it ends.
        while c.batch_execute("SELECT 1").is_ok() {
            assert!(
                started.elapsed() < SAFETY_NET,
                "session {i} of the retired login still answers"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    for uri in [&old_uri, &old_pooled] {
        assert!(connect(uri).is_err(), "the retired login logs in again");
    }
    for pooled in [false, true] {
        env.assert_reads(ATTACKER, pooled);
    }
    neighbour.batch_execute(READ_QUERY).unwrap();
}
