//! Resource fences a tenant cannot get past (issue 21), tried from the attacker's real logins,
//! direct and pooled, with a neighbour's open session measured: the attack fails in the
//! attacker's own session with its SQLSTATE, the server does not restart, and the neighbour
//! keeps working.

mod common;

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

/// The pooler every workspace shares: one workspace holds at most 100 of its clients (53300
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
            held.len() <= 100,
            "the pooler never capped the workspace's clients"
        );
    };
    assert_eq!(sqlstate(&refused), "53300", "{refused:?}");
    assert_eq!(held.len(), 100);
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
    assert!(client.is_closed(), "the client is closed past the bound");
    neighbour.batch_execute(READ_QUERY).unwrap();
    // The workspace's other clients and a new one work on.
    drop(held.pop());
    let mut again = connect(&uri).expect("a slot freed for the workspace");
    again.batch_execute("SELECT 1").unwrap();
    held[0].batch_execute("SELECT 1").unwrap();
}
