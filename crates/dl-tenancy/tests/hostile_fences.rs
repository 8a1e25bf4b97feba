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
