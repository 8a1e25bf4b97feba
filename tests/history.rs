//! The override history's retention (src/history.rs) on a real cluster: which rows go, in
//! which order, and what its files weigh. Each test writes overrides as the platform's
//! superuser would (the retention runs for every writer) and sets the retention's settings in
//! its own session, which a superuser may; tenants cannot (crates/dl-tenancy's hostile tests).

use dl_tenancy_extension_tests::*;
use postgres::Client;

/// History rows of keys `old-1` .. `old-n`, changed `i` days and 12 hours ago (so no row lies
/// on a boundary of whole days), as a restore of an older history would leave them.
fn plant_old_rows(c: &mut Client, n: i32) {
    c.execute(
        "INSERT INTO dl_override.person_override_history (identity_key, operation, changed_at)
         SELECT 'old-' || i, 'import', now() - i * interval '1 day' - interval '12 hours'
           FROM generate_series(1, $1) AS i",
        &[&n],
    )
    .unwrap();
}

/// The `old-` rows left, as their day counts, oldest first.
fn old_days_left(c: &mut Client) -> Vec<i32> {
    c.query(
        "SELECT substr(identity_key, 5)::int FROM dl_override.person_override_history
          WHERE identity_key LIKE 'old-%' ORDER BY changed_at",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn write_override(c: &mut Client, key: &str) {
    c.execute(
        "INSERT INTO dl_override.person_overrides (identity_key, status) VALUES ($1, 'x')
         ON CONFLICT (identity_key) DO UPDATE SET status = 'y'",
        &[&key],
    )
    .unwrap();
}

fn files(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT pg_total_relation_size('dl_override.person_override_history')",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Rows past the age go oldest first, 100 a statement, the rest with the next statements; the
/// younger rows and the other kind's history stay. A shorter age set later applies at the next
/// write.
#[test]
fn rows_past_the_age_go_oldest_first_in_batches() {
    let tc = TenantCluster::start();
    let mut c = tc.create_tenant_db("tenant");
    plant_old_rows(&mut c, 250);
    c.batch_execute(
        "INSERT INTO dl_override.company_override_history (identity_key, operation, changed_at)
         VALUES ('ancient', 'import', now() - interval '400 days')",
    )
    .unwrap();
    // 90 days by default: the rows of days 90 to 250 are past it, 161 rows.
    write_override(&mut c, "w1");
    let left = old_days_left(&mut c);
    assert_eq!(left.first(), Some(&150), "the 100 oldest went first");
    assert_eq!(left.len(), 150);
    write_override(&mut c, "w1");
    assert_eq!(old_days_left(&mut c), (1..=89).rev().collect::<Vec<_>>());
    let company: i64 = c
        .query_one(
            "SELECT count(*) FROM dl_override.company_override_history",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        company, 1,
        "a write of people leaves the companies' history"
    );

    c.batch_execute("SET dl_tenancy.history_max_age = '10d'")
        .unwrap();
    write_override(&mut c, "w2");
    assert_eq!(old_days_left(&mut c), (1..=9).rev().collect::<Vec<_>>());
    // The writes' own rows are young: all there.
    let own: i64 = c
        .query_one(
            "SELECT count(*) FROM dl_override.person_override_history WHERE identity_key LIKE 'w%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(own, 3);
    // 0: no age limit.
    plant_old_rows(&mut c, 20);
    c.batch_execute("SET dl_tenancy.history_max_age = 0")
        .unwrap();
    write_override(&mut c, "w3");
    assert_eq!(old_days_left(&mut c).len(), 9 + 20);
}

/// Past its size the table is rewritten: its files stay within the bound plus one statement's
/// rows, and the rows left are always the newest, without a gap.
#[test]
fn past_its_size_the_oldest_rows_go_and_the_files_shrink() {
    let tc = TenantCluster::start();
    let mut c = tc.create_tenant_db("tenant");
    // The rewrite builds indexes with settings of its own, and gives the session's back.
    c.batch_execute(
        "SET dl_tenancy.history_max_mb = 2; SET maintenance_work_mem = '1GB';
         SET max_parallel_maintenance_workers = 4",
    )
    .unwrap();
    // Each update's history row holds the old and the new patch: about 200 kB.
    const UPDATE: &str = "INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch)
        SELECT 'big', jsonb_build_object('n', $1::int, 'pad', string_agg(md5(random()::text), ''))
          FROM generate_series(1, 3200)
        ON CONFLICT (identity_key) DO UPDATE SET identity_payload_patch = EXCLUDED.identity_payload_patch";
    let bound = 2 * 1024 * 1024;
    let mut largest = 0;
    for n in 1..=60 {
        c.execute(UPDATE, &[&n]).unwrap();
        let size = files(&mut c);
        largest = largest.max(size);
        assert!(
            size <= bound + 512 * 1024,
            "after update {n}: {size} bytes of history files"
        );
        // The rows left are the newest updates, in a row, the last one among them.
        let kept: Vec<i32> = c
            .query(
                "SELECT (new_identity_payload_patch ->> 'n')::int FROM dl_override.person_override_history
                  ORDER BY changed_at",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: Vec<i32> = (n + 1 - kept.len() as i32..=n).collect();
        assert_eq!(kept, expected, "after update {n}");
    }
    eprintln!("largest: {largest} bytes, bound {bound}");
    let kept: String = c
        .query_one("SHOW maintenance_work_mem", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, "1GB");
    // 60 rows of 200 kB would be 12 MB: most are gone, and some are kept.
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM dl_override.person_override_history",
            &[],
        )
        .unwrap()
        .get(0);
    assert!((2..=12).contains(&left), "{left} rows left");
}

/// A compaction never waits for the table: while another session reads the history in an
/// open transaction, writes go on and the files grow past the bound; once it is done, the
/// next writes bring them back.
#[test]
fn a_compaction_is_left_for_later_while_the_table_is_in_use() {
    let tc = TenantCluster::start();
    let mut c = tc.create_tenant_db("tenant");
    c.batch_execute("SET dl_tenancy.history_max_mb = 1; SET lock_timeout = '60s'")
        .unwrap();
    let mut reader = tc.admin("tenant");
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM dl_override.person_override_history")
        .unwrap();
    const UPDATE: &str = "INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch)
        SELECT 'big', jsonb_build_object('pad', string_agg(md5(random()::text), ''))
          FROM generate_series(1, 6400)
        ON CONFLICT (identity_key) DO UPDATE SET identity_payload_patch = EXCLUDED.identity_payload_patch";
    for _ in 0..10 {
        c.batch_execute(UPDATE).unwrap();
    }
    let grown = files(&mut c);
    assert!(grown > 3 * 1024 * 1024, "{grown}");
    reader.batch_execute("COMMIT").unwrap();
    for _ in 0..2 {
        c.batch_execute(UPDATE).unwrap();
    }
    let size = files(&mut c);
    assert!(size < 2 * 1024 * 1024, "{size} after the reader left");
}

/// A database still at 0.6.0, served by this library, has no retention until it is updated
/// (its history has no index to find the oldest rows by); updated, the next write prunes.
#[test]
fn the_retention_comes_with_the_update() {
    let tc = TenantCluster::start();
    let mut c = tc.create_db_with("tenant", "CREATE EXTENSION dl_tenancy VERSION '0.6.0'");
    plant_old_rows(&mut c, 100);
    write_override(&mut c, "w1");
    assert_eq!(old_days_left(&mut c).len(), 100);
    c.batch_execute("ALTER EXTENSION dl_tenancy UPDATE")
        .unwrap();
    write_override(&mut c, "w1");
    assert_eq!(old_days_left(&mut c).len(), 89);
}

/// A REPEATABLE READ write whose snapshot predates another session's pruning is not failed by
/// the retention (its DELETE would meet rows deleted since: 40001): that step is skipped, and
/// logged, and a later write prunes.
#[test]
fn a_repeatable_read_write_is_not_failed_by_the_retention() {
    let tc = TenantCluster::start();
    let mut c = tc.create_tenant_db("tenant");
    write_override(&mut c, "w1");
    plant_old_rows(&mut c, 250);
    let mut snapshot = tc.admin("tenant");
    snapshot
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ;
             SELECT count(*) FROM dl_override.person_overrides",
        )
        .unwrap();
    write_override(&mut c, "w1");
    assert_eq!(old_days_left(&mut c).len(), 150, "the 100 oldest went");
    write_override(&mut snapshot, "w2");
    snapshot.batch_execute("COMMIT").unwrap();
    assert!(
        tc.cluster
            .log()
            .contains("person override history retention skipped: could not serialize access"),
        "the skipped step is in the server log"
    );
    write_override(&mut c, "w1");
    assert_eq!(old_days_left(&mut c), (1..=89).rev().collect::<Vec<_>>());
}
