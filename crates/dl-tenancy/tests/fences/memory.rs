//! The memory share's other half: a parallel hash join builds its hash table in dynamic
//! shared memory, which the session's RLIMIT_DATA does not count, up to `work_mem` ×
//! `hash_mem_multiplier` for each process of the query, and any session may raise all three.
//! A workspace session whose settings would let that pass its share is refused at the
//! statement's start (53400); without parallel workers the same `work_mem` runs, bounded by
//! the share itself.

use super::*;

#[test]
fn work_mem_cannot_take_shared_memory_past_the_share() {
    let env = Env::with_attacker_and_neighbour();
    for pooled in [false, true] {
        let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        let err = attacker
            .batch_execute("BEGIN; SET LOCAL work_mem = '1GB'; SELECT 1; COMMIT")
            .unwrap_err();
        assert_eq!(sqlstate(&err), "53400", "pooled {pooled}: {err:?}");
        attacker.batch_execute("ROLLBACK").unwrap();
        let err = attacker
            .batch_execute(
                "BEGIN; SET LOCAL work_mem = '100MB'; SET LOCAL hash_mem_multiplier = 8;
                 SELECT 1; COMMIT",
            )
            .unwrap_err();
        assert_eq!(sqlstate(&err), "53400", "pooled {pooled}: {err:?}");
        attacker.batch_execute("ROLLBACK").unwrap();
        attacker
            .batch_execute(
                "BEGIN; SET LOCAL work_mem = '1GB'; SET LOCAL max_parallel_workers_per_gather = 0;
                 SELECT 1; COMMIT",
            )
            .expect("without parallel workers the share itself bounds work_mem");
        // An index build's parallel workers sort in maintenance_work_mem, outside the share.
        let err = attacker
            .batch_execute(
                "BEGIN; SET LOCAL maintenance_work_mem = '2GB';
                 CREATE TABLE tenant_custom.m (id int); CREATE INDEX ON tenant_custom.m (id); COMMIT",
            )
            .unwrap_err();
        assert_eq!(sqlstate(&err), "53400", "pooled {pooled}: {err:?}");
        attacker.batch_execute("ROLLBACK").unwrap();
        attacker
            .batch_execute(READ_QUERY)
            .expect("the login's own settings run");
    }
    env.assert_reads(NEIGHBOUR, true);
}
