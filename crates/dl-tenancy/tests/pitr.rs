//! Point-in-time recovery on pgBackRest (issue 24), on one `local up` server holding two
//! workspaces: one is restored as it was at a time, into a new workspace and in place, while
//! its neighbour is untouched and keeps serving; times outside the recoverable window are
//! refused naming it; a failed restore leaves no scratch behind; and the whole server, its
//! data directory deleted, comes back from the repository with every workspace's rows and
//! logins. Real PostgreSQL and pgBackRest throughout; order comes from observed state (the
//! archiver's progress, the restore's own steps), never from sleeps.

mod common;

use common::*;
use dl_tenancy_ctl::progress::Progress;
use dl_tenancy_ctl::{Kind, RestoreInto};
use std::sync::{Arc, Mutex};

/// Every row a workspace's tenant can see of its own data, each as the text of the whole
/// row, in a fixed order: the overrides, their history and the tenant's custom table.
#[derive(Debug, PartialEq, Eq)]
struct Rows {
    overrides: Vec<String>,
    history: Vec<String>,
    custom: Vec<String>,
}

fn rows(env: &Env, ws: &str) -> Rows {
    rows_at(&env.uri(ws, Kind::Override, false))
}

fn rows_at(uri: &str) -> Rows {
    let mut c = connect(uri).unwrap();
    Rows {
        overrides: strings(
            &mut c,
            "SELECT o::text FROM dl_override.person_overrides AS o ORDER BY o.identity_key",
        ),
        history: strings(
            &mut c,
            "SELECT h::text FROM dl_override.person_override_history AS h
              ORDER BY h.changed_at, h.history_id",
        ),
        custom: strings(
            &mut c,
            "SELECT s::text FROM tenant_custom.account_segments AS s ORDER BY s.id",
        ),
    }
}

/// Everything committed so far is in the repository: a switch to a new WAL segment, then
/// the archiver observed past it. Returns the server's time after the switch.
fn archived_now(env: &Env) -> String {
    let mut admin = env.admin("postgres");
    let wal: String = admin
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    let now: String = admin.query_one("SELECT now()::text", &[]).unwrap().get(0);
    let started = std::time::Instant::now();
    loop {
        let r = admin
            .query_one(
                "SELECT coalesce(last_archived_wal >= $1, false), failed_count FROM pg_stat_archiver",
                &[&wal],
            )
            .unwrap();
        if r.get::<_, bool>(0) {
            return now;
        }
        assert!(
            started.elapsed() < SAFETY_NET,
            "WAL segment {wal} not archived after {SAFETY_NET:?} ({} failures)",
            r.get::<_, i64>(1)
        );
    }
}

/// No scratch cluster or file is left of the restores.
fn assert_no_scratch(env: &Env) {
    let left: Vec<_> = std::fs::read_dir(env.dir.join("pitr"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

fn write_workspace(env: &Env, ws: &str, people: usize) {
    let mut c = connect(&env.uri(ws, Kind::Override, true)).unwrap();
    for i in 0..people {
        upsert(&mut c, &format!("person:{ws}-{i}"), "active").unwrap();
    }
    c.batch_execute(CUSTOM_TABLE).unwrap();
    for (id, segment) in [("a", "gold"), ("b", "silver"), ("c", "bronze")] {
        c.execute(
            "INSERT INTO tenant_custom.account_segments (id, segment) VALUES ($1, $2)",
            &[&format!("{ws}-{id}"), &segment],
        )
        .unwrap();
    }
}

#[test]
fn a_workspace_is_restored_as_it_was_at_a_time_and_a_lost_server_from_its_repository() {
    let env = Env::new();
    env.t.provision("alpha").unwrap();
    env.t.provision("beta").unwrap();

    // 1. Both workspaces write; the time is noted once it is archived; then alpha's tenant
    //    deletes and changes rows.
    write_workspace(&env, "alpha", 5);
    write_workspace(&env, "beta", 3);
    let (alpha_then, beta_then) = (rows(&env, "alpha"), rows(&env, "beta"));
    assert_eq!(alpha_then.overrides.len(), 5);
    let at = archived_now(&env);
    env.run_as_override(
        "alpha",
        "DELETE FROM dl_override.person_overrides WHERE identity_key IN ('person:alpha-0', 'person:alpha-1');
         UPDATE dl_override.person_overrides SET status = 'churned' WHERE identity_key = 'person:alpha-2';
         DELETE FROM tenant_custom.account_segments WHERE id = 'alpha-a';
         UPDATE tenant_custom.account_segments SET segment = 'lead' WHERE id = 'alpha-b';
         INSERT INTO tenant_custom.account_segments (id, segment) VALUES ('alpha-z', 'new')",
    );
    let alpha_now = rows(&env, "alpha");
    assert_ne!(alpha_now, alpha_then);

    // 2. alpha at that time, into a new workspace: exactly the rows then. beta serves while
    //    the scratch server is up (a query through its pooled URI at the restore's step that
    //    runs there) and after, its rows untouched.
    let beta_read = env.uri("beta", Kind::Read, true);
    let during: Arc<Mutex<Vec<Result<bool, String>>>> = Arc::default();
    let seen = during.clone();
    let scratch_root = env.dir.join("pitr");
    let t = env.t.clone().with_progress(Progress::to(move |step| {
        if step.contains(": recovered at ") {
            let scratch_up = std::fs::read_dir(&scratch_root)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.path().join("pg/postmaster.pid").exists())
                })
                .unwrap_or(false);
            let served = connect(&beta_read)
                .and_then(|mut c| c.batch_execute(READ_QUERY))
                .map(|()| scratch_up)
                .map_err(|e| e.to_string());
            seen.lock().unwrap().push(served);
        }
    }));
    let report = t
        .restore_at("alpha", &at, &RestoreInto::Workspace("gamma".into()))
        .unwrap();
    assert_eq!(report.into, "gamma");
    assert!(
        report.window.from <= report.at && report.at <= report.window.to,
        "{report:?}"
    );
    assert_eq!(
        *during.lock().unwrap(),
        [Ok(true)],
        "beta served while the scratch ran"
    );
    assert_eq!(rows(&env, "gamma"), alpha_then);
    assert_eq!(
        rows(&env, "alpha"),
        alpha_now,
        "the source is left as it is"
    );
    assert_eq!(rows(&env, "beta"), beta_then);
    env.assert_reads("beta", true);
    env.assert_reads("gamma", true);
    assert_no_scratch(&env);
    // gamma has credentials of its own.
    assert_ne!(
        login_of(&env.uri("gamma", Kind::Override, false)),
        login_of(&env.uri("alpha", Kind::Override, false))
    );

    // Outside the window: refused, naming it; nothing provisioned, nothing left.
    let out = env.cli(&[
        "restore",
        "--workspace",
        "alpha",
        "--at",
        "2000-01-01 00:00:00+00",
        "--into",
        "delta",
    ]);
    assert_eq!(out.error_code(), "outside_recovery_window");
    assert!(
        out.stderr.contains("before the first backup ended")
            && out
                .stderr
                .contains(&format!("the recoverable window is {}", report.window.from)),
        "{}",
        out.stderr
    );
    let out = env.cli(&[
        "restore",
        "--workspace",
        "alpha",
        "--at",
        "2999-01-01 00:00:00+00",
        "--into",
        "delta",
    ]);
    assert_eq!(out.error_code(), "outside_recovery_window");
    assert!(
        out.stderr.contains("after the last archived WAL"),
        "{}",
        out.stderr
    );
    assert_eq!(env.t.status("delta").unwrap().status, "not_provisioned");
    // A restore that fails after its scratch server ran (beta is not empty): no scratch left.
    let out = env.cli(&[
        "restore",
        "--workspace",
        "alpha",
        "--at",
        &at,
        "--into",
        "beta",
    ]);
    assert_eq!(out.error_code(), "conflict", "{}", out.stderr);
    assert_no_scratch(&env);
    assert_eq!(rows(&env, "beta"), beta_then);
    // In place needs the confirmation.
    let out = env.cli(&["restore", "--workspace", "alpha", "--at", &at, "--in-place"]);
    assert_eq!(out.error_code(), "confirmation_required");

    // 3. In place, confirmed: alpha has its rows of then, on the same logins; what it had
    //    before is kept in a backup file.
    let alpha_uri = env.uri("alpha", Kind::Override, false);
    let report = env
        .cli(&[
            "restore",
            "--workspace",
            "alpha",
            "--at",
            &at,
            "--in-place",
            "--yes",
        ])
        .json();
    assert_eq!(report["in_place"], true, "{report}");
    assert_eq!(rows_at(&alpha_uri), alpha_then);
    assert_eq!(rows(&env, "beta"), beta_then);
    env.assert_reads("alpha", true);
    env.assert_reads("beta", true);
    let kept = report["kept_backup"].as_str().unwrap();
    assert!(std::path::Path::new(kept).is_file(), "{kept}");
    let kept_restore = env
        .cli(&["restore", "--from", kept, "--workspace", "epsilon"])
        .json();
    assert_eq!(rows(&env, "epsilon"), alpha_now, "{kept_restore}");
    assert_no_scratch(&env);

    // 4. The whole server: archived, stopped, its data directory deleted, recovered from
    //    the repository; every workspace's rows and logins are back.
    let expected: Vec<(&str, String, Rows)> = ["alpha", "beta", "gamma", "epsilon"]
        .into_iter()
        .map(|ws| (ws, env.uri(ws, Kind::Override, false), rows(&env, ws)))
        .collect();
    let pooled_reads: Vec<String> = ["alpha", "beta", "gamma", "epsilon"]
        .into_iter()
        .map(|ws| env.uri(ws, Kind::Read, true))
        .collect();
    archived_now(&env);
    env.cli(&["local", "down"]).json();
    std::fs::remove_dir_all(env.dir.join("pg")).unwrap();
    let out = env.cli(&["local", "up"]);
    assert_eq!(
        out.error_code(),
        "conflict",
        "up refuses a new cluster beside the repository"
    );
    let status = env.cli(&["local", "recover"]).json();
    assert_eq!(status["postgres"]["running"], true, "{status}");
    for (ws, uri, then) in &expected {
        assert_eq!(&rows_at(uri), then, "{ws} after recovery");
    }
    for uri in &pooled_reads {
        connect(uri).unwrap().batch_execute(READ_QUERY).unwrap();
    }
    // The recovered server archives again.
    archived_now(&env);
}
