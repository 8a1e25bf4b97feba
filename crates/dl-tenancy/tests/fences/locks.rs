//! The shared lock table (src/locks.rs): on 0.5.0 one transaction creating ~11,460 tables in
//! `tenant_custom` filled it, and neighbours' queries, pooled logins and `provision` failed
//! with 53200. Each of the attacker's sessions now holds at most `max_locks_per_transaction`
//! locks (53400 past it; advisory locks have had their own budget of 16 since 0.6.0), and
//! while its sessions hold most of what they may, the neighbour's queries, logins, a migration
//! and a new workspace's provisioning all run.

use super::*;

/// A transaction creating one table after another, as many as the 0.5.0 attack did.
const CREATE_MANY: &str = "DO $$ BEGIN
    FOR i IN 1..11460 LOOP
        EXECUTE pg_catalog.format('CREATE TABLE tenant_custom.t%s (id int PRIMARY KEY)', i);
    END LOOP;
END $$";

/// Advisory locks in one statement, from key `first` on (0.6.0's budget refuses the 17th).
fn advisory_storm(first: i64) -> String {
    format!(
        "SELECT pg_catalog.count(pg_advisory_lock(g))
           FROM pg_catalog.generate_series({first}, {first} + 100000) AS g"
    )
}

/// What a migration creates in one transaction: 40 tables with their keys and an index each.
fn migration(prefix: &str) -> String {
    let mut sql = String::from("BEGIN;");
    for i in 0..40 {
        sql.push_str(&format!(
            "CREATE TABLE tenant_custom.{prefix}{i} (id bigserial PRIMARY KEY, name text);
             CREATE INDEX ON tenant_custom.{prefix}{i} (name);"
        ));
    }
    sql.push_str("COMMIT;");
    sql
}

fn held_locks(c: &mut Client) -> i64 {
    count(
        c,
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid()",
    )
}

#[test]
fn one_workspace_cannot_fill_the_lock_table() {
    let env = Env::with_attacker_and_neighbour();
    let mut admin = env.admin("postgres");
    let before = started(&mut admin);
    let budget: i64 = admin
        .query_one("SHOW max_locks_per_transaction", &[])
        .unwrap()
        .get::<_, String>(0)
        .parse()
        .unwrap();
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, true)).unwrap();

    // Tables enough to lock past the budget, made in transactions within it.
    let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    let tables = budget + 50;
    for first in (1..=tables).step_by(50) {
        attacker
            .batch_execute(&format!(
                "DO $$ BEGIN FOR i IN {first}..{} LOOP
                     EXECUTE pg_catalog.format('CREATE TABLE tenant_custom.l%s (id int)', i);
                 END LOOP; END $$",
                first + 49
            ))
            .unwrap();
    }
    let lock = |from: i64, to: i64| {
        let names: Vec<String> = (from..=to).map(|i| format!("tenant_custom.l{i}")).collect();
        format!("LOCK TABLE {} IN ACCESS SHARE MODE", names.join(", "))
    };

    // The attacker's sessions, direct and pooled: past the budget, refused; below it, held
    // in open transactions while the neighbour works.
    let mut holders = vec![];
    for pooled in [false, true] {
        let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        let err = attacker.batch_execute(CREATE_MANY).unwrap_err();
        assert_eq!(sqlstate(&err), "53400", "pooled {pooled}: {err:?}");
        let db = err.as_db_error().unwrap();
        assert!(
            db.detail()
                .unwrap_or_default()
                .contains(&budget.to_string()),
            "{db:?}"
        );
        let err = attacker
            .batch_execute(&format!("BEGIN; {}; COMMIT", lock(1, tables)))
            .unwrap_err();
        assert_eq!(sqlstate(&err), "53400", "pooled {pooled}: {err:?}");
        attacker.batch_execute("ROLLBACK").unwrap();
        // SERIALIZABLE's predicate locks fill a table of their own (64 a slot).
        let err = attacker
            .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1")
            .unwrap_err();
        assert_eq!(sqlstate(&err), "0A000", "pooled {pooled}: {err:?}");
        attacker.batch_execute("ROLLBACK").unwrap();
        let err = attacker
            .batch_execute(&advisory_storm(if pooled { 1_000_000 } else { 1 }))
            .unwrap_err();
        assert_eq!(sqlstate(&err), "54000", "pooled {pooled}: {err:?}");
        attacker
            .batch_execute(&format!("BEGIN; {}", lock(1, budget - 100)))
            .unwrap();
        let held = held_locks(&mut attacker);
        assert!(
            held > budget - 100 && held <= budget,
            "pooled {pooled}: holds {held} of {budget}"
        );
        holders.push(attacker);
    }

    // Meanwhile the neighbour reads, logs in both ways, runs a migration, and a new
    // workspace is provisioned.
    neighbour.batch_execute(READ_QUERY).unwrap();
    for pooled in [false, true] {
        env.assert_reads(NEIGHBOUR, pooled);
    }
    connect(&env.uri(NEIGHBOUR, Kind::Override, false))
        .unwrap()
        .batch_execute(&migration("m"))
        .expect("a migration of 40 tables in one transaction runs");
    env.t
        .provision("bob")
        .expect("provisioning during the attack");
    env.assert_reads("bob", true);

    // The attacker's own migration of the same size runs too, once it lets its locks go.
    drop(holders);
    attacker
        .batch_execute(&migration("a"))
        .expect("the attacker's migration within its budget");
    assert_eq!(started(&mut admin), before, "the server restarted");
}
