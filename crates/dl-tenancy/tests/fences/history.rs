//! The override history (src/history.rs): on 0.6.0 the override login's 100 updates of one
//! override with 1 MB patches left 198 MB of history, which counted against the workspace's
//! quota and which the tenant could not delete. Now it keeps to a retention by age and by size
//! that the platform sets per database (`limits --history-max-age / --history-max-mb`) and the
//! tenant cannot change; a workspace over its quota because of its history gets back under.
//! Sizes are the history table's files as the admin measures them.

use super::*;

/// An update of the override `key` with a 1 MB identity patch (incompressible, just under the
/// 1 MiB a patch may have): its history row holds the old and the new patch.
fn big_update(key: &str) -> String {
    format!(
        "INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch)
         SELECT '{key}', pg_catalog.jsonb_build_object('pad',
                pg_catalog.string_agg(pg_catalog.md5(pg_catalog.random()::text), ''))
           FROM pg_catalog.generate_series(1, 32000)
         ON CONFLICT (identity_key) DO UPDATE SET identity_payload_patch = EXCLUDED.identity_payload_patch"
    )
}

const MB: i64 = 1024 * 1024;

/// The people's history table's files (heap, TOAST, indexes), in bytes.
fn history_bytes(admin: &mut Client) -> i64 {
    admin
        .query_one(
            "SELECT pg_catalog.pg_total_relation_size('dl_override.person_override_history')",
            &[],
        )
        .unwrap()
        .get(0)
}

/// `dl-tenancy limits` with `args`, which must succeed; its `limits`.
fn set_limits(env: &Env, ws: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["limits", "--workspace", ws];
    all.extend_from_slice(args);
    let out = env.cli(&all);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()["limits"].clone()
}

fn show(c: &mut Client, setting: &str) -> String {
    c.query_one(&format!("SHOW {setting}"), &[]).unwrap().get(0)
}

fn neighbour_works(neighbour: &mut Client, n: usize) {
    upsert(neighbour, &format!("n-{n}"), "customer").expect("the neighbour's override write");
    neighbour
        .batch_execute(READ_QUERY)
        .expect("the neighbour's read");
}

/// The attacker's override login updates one override with 1 MB patches, 15 times direct and
/// 15 pooled (60 MB of patches): the history's files stay within the 8 MB the platform set,
/// plus one update's row (2 MB), and the newest row is kept. It cannot change its retention
/// (42501), and the neighbour writes and reads throughout.
#[test]
fn the_history_stays_within_its_bound_and_the_tenant_cannot_widen_it() {
    let env = Env::with_attacker_and_neighbour();
    let limits = set_limits(&env, ATTACKER, &["--history-max-mb", "8"]);
    assert_eq!(limits["history_max_mb"], 8);
    assert_eq!(limits["history_max_age_seconds"], 90 * 86_400);
    let mut admin = env.admin_ws(ATTACKER);
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Override, true)).unwrap();
    let database = env.database(ATTACKER);
    let mut largest = 0;
    let mut writes = 0;
    for pooled in [false, true] {
        let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        assert_eq!(show(&mut attacker, "dl_tenancy.history_max_mb"), "8MB");
        for _ in 0..15 {
            attacker.batch_execute(&big_update("p-big")).unwrap();
            writes += 1;
            let size = history_bytes(&mut admin);
            largest = largest.max(size);
            assert!(
                size <= 8 * MB + 3 * MB,
                "pooled {pooled}, after {writes} updates: {size} bytes of history"
            );
            neighbour_works(&mut neighbour, writes);
        }
        for refused in [
            "SET dl_tenancy.history_max_mb = 100000".to_string(),
            "SET LOCAL dl_tenancy.history_max_age = 0".into(),
            "RESET dl_tenancy.history_max_mb".into(),
            "SELECT pg_catalog.set_config('dl_tenancy.history_max_mb', '-1', false)".into(),
            format!("ALTER DATABASE \"{database}\" SET dl_tenancy.history_max_mb = 100000"),
            "ALTER ROLE CURRENT_USER SET dl_tenancy.history_max_age = 0".into(),
            "DELETE FROM dl_override.person_override_history".into(),
        ] {
            let err = attacker.batch_execute(&refused).expect_err(&refused);
            assert_eq!(
                sqlstate(&err),
                "42501",
                "pooled {pooled}: {refused}: {err:?}"
            );
        }
        assert_eq!(show(&mut attacker, "dl_tenancy.history_max_mb"), "8MB");
    }
    eprintln!("largest history: {largest} bytes after {writes} updates of 1 MB");
    // The newest update is kept; most are gone.
    let row = admin
        .query_one(
            "SELECT count(*), (pg_catalog.array_agg(operation ORDER BY changed_at DESC))[1]
               FROM dl_override.person_override_history",
            &[],
        )
        .unwrap();
    let (rows, newest): (i64, String) = (row.get(0), row.get(1));
    assert!((1..10).contains(&rows), "{rows} history rows left");
    assert_eq!(newest, "update");
    // The neighbour's retention is its own: the defaults.
    assert_eq!(show(&mut neighbour, "dl_tenancy.history_max_mb"), "-1");
}

/// Rows past the age go at the attacker's next write, the neighbour's stay; a shorter age set
/// by the platform applies to the tenant's new sessions. No waiting: the old rows are planted.
#[test]
fn history_past_its_age_is_deleted() {
    let env = Env::with_attacker_and_neighbour();
    let plant =
        "INSERT INTO dl_override.person_override_history (identity_key, operation, changed_at)
                 SELECT 'aged-' || i, 'import', now() - i * interval '1 day'
                   FROM pg_catalog.unnest(ARRAY[3, 10, 100, 200]) AS i";
    let aged = "SELECT pg_catalog.array_agg(identity_key ORDER BY changed_at)::text
                  FROM dl_override.person_override_history WHERE identity_key LIKE 'aged-%'";
    let mut admin = env.admin_ws(ATTACKER);
    let mut admin_neighbour = env.admin_ws(NEIGHBOUR);
    admin.batch_execute(plant).unwrap();
    admin_neighbour.batch_execute(plant).unwrap();
    let left = |c: &mut Client| -> String { c.query_one(aged, &[]).unwrap().get(0) };

    let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    upsert(&mut attacker, "p-1", "customer").unwrap();
    assert_eq!(left(&mut admin), "{aged-10,aged-3}", "90 days by default");
    assert_eq!(
        left(&mut admin_neighbour),
        "{aged-200,aged-100,aged-10,aged-3}"
    );

    let limits = set_limits(&env, ATTACKER, &["--history-max-age", "7d"]);
    assert_eq!(limits["history_max_age_seconds"], 7 * 86_400);
    for pooled in [false, true] {
        let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        if !pooled {
            assert_eq!(show(&mut attacker, "dl_tenancy.history_max_age"), "7d");
            upsert(&mut attacker, "p-1", "vip").unwrap();
            assert_eq!(left(&mut admin), "{aged-3}");
        }
        let err = attacker
            .batch_execute("SET dl_tenancy.history_max_age = '1000d'")
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "pooled {pooled}: {err:?}");
    }
    // Out of bounds: refused, nothing changed.
    for bad in [
        ["--history-max-mb", "0"],
        ["--history-max-mb", "-2"],
        ["--history-max-age", "forever"],
    ] {
        let out = env.cli(&["limits", "--workspace", ATTACKER, bad[0], bad[1]]);
        assert_eq!(out.error_code(), "invalid_argument", "{bad:?}");
    }
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Override, false)).unwrap();
    neighbour_works(&mut neighbour, 1);
}

/// A workspace whose history takes it over its quota (a bound far above the quota, as history
/// made before 0.7.0 had none): status updates of an override with a 1 MB patch write 2 MB of
/// history each (the old and the new patch) and little else, until the quota refuses them
/// (53100). Then the platform sets a bound and the tenant deletes overrides, as it may while
/// refused: the first delete takes the rows beyond the bound, the next one's rewrite frees
/// their space, and the workspace is back under and writes again. The neighbour writes
/// throughout.
#[test]
fn a_workspace_over_its_quota_by_its_history_gets_back_under() {
    let env = Env::with_attacker_and_neighbour();
    let mut server = env.admin("postgres");
    server
        .batch_execute("ALTER SYSTEM SET dl_tenancy.storage_interval = '100ms'")
        .unwrap();
    server
        .batch_execute("SELECT pg_catalog.pg_reload_conf()")
        .unwrap();
    let base = usage(&env, ATTACKER)["database_size_bytes"]
        .as_i64()
        .unwrap();
    let quota_mb = base / MB + 40;
    set_limits(&env, ATTACKER, &["--history-max-mb", "1000"]);
    set_quota(&env, ATTACKER, quota_mb.to_string());
    wait_for_state(&env, ATTACKER, "under");

    let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    upsert(&mut attacker, "p-1", "customer").unwrap();
    attacker.batch_execute(&big_update("p-big")).unwrap();
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Override, false)).unwrap();
    let mut updates = 0;
    let refused = loop {
        let status = format!(
            "UPDATE dl_override.person_overrides SET status = 's-{updates}' WHERE identity_key = 'p-big'"
        );
        match attacker.batch_execute(&status) {
            Ok(()) => updates += 1,
            Err(e) => break e,
        }
        neighbour_works(&mut neighbour, updates);
        assert!(updates < 200, "the quota never refused the history");
    };
    let code = sqlstate(&refused);
    assert!(code == "53100" || code == "57014", "{refused:?}");
    wait_for_state(&env, ATTACKER, "refused");
    let mut admin = env.admin_ws(ATTACKER);
    let history = history_bytes(&mut admin);
    let grown = usage(&env, ATTACKER)["database_size_bytes"]
        .as_i64()
        .unwrap()
        - base;
    eprintln!("refused after {updates} updates: grown {grown} bytes, {history} of them history");
    assert!(
        2 * history > grown,
        "the history is most of what filled the quota"
    );

    set_limits(&env, ATTACKER, &["--history-max-mb", "4"]);
    let mut attacker = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    let err = attacker
        .batch_execute(
            "UPDATE dl_override.person_overrides SET status = 'x' WHERE identity_key = 'p-1'",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "53100", "still refused: {err:?}");
    for key in ["p-1", "p-big"] {
        attacker
            .batch_execute(&format!(
                "DELETE FROM dl_override.person_overrides WHERE identity_key = '{key}'"
            ))
            .unwrap_or_else(|e| panic!("deleting {key} over the quota: {e:?}"));
        neighbour_works(&mut neighbour, updates + 1);
    }
    let after = history_bytes(&mut admin);
    assert!(
        after <= 4 * MB,
        "{after} bytes of history after the deletes"
    );
    wait_for_state(&env, ATTACKER, "under");
    upsert(&mut attacker, "p-2", "customer").expect("writes run again");
    neighbour_works(&mut neighbour, updates + 2);
}
