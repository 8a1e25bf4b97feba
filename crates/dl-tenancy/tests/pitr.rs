//! Point-in-time recovery on pgBackRest (issue 24), on one `local up` server holding two
//! workspaces: one is restored as it was at a time, into a new workspace and in place, while
//! its neighbour is untouched and keeps serving; times outside the recoverable window are
//! refused naming it; a failed restore leaves no scratch behind; and the whole server, its
//! data directory deleted, comes back from the repository with every workspace's rows and
//! logins. The HTTP API's operator endpoint runs the same restore as a job, polled until it
//! ends, and refuses workspace tokens without a hint of the job. Real PostgreSQL and
//! pgBackRest throughout; order comes from observed state (the archiver's progress, the
//! restore's own steps, a job's state), never from sleeps.

mod common;

use common::http::{Api, Body};
use common::*;
use dl_tenancy_ctl::progress::Progress;
use dl_tenancy_ctl::{Kind, RestoreInto};
use serde_json::{json, Value};
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
    let at = archived_now(&mut env.admin("postgres"));
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

    http_restore(&env, &at, &alpha_then);

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
    archived_now(&mut env.admin("postgres"));
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
    archived_now(&mut env.admin("postgres"));
}

/// `dl-tenancy serve` on the environment's data directory: the child and its base URL.
fn serve(env: &Env) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dl-tenancy"))
        .args([
            "--data-dir",
            env.dir.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("DL_TENANCY_ADMIN_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let v: Value = serde_json::from_str(first.trim()).unwrap_or_else(|e| panic!("{e}: {first}"));
    let base = format!("http://{}", v["listening"].as_str().unwrap());
    (child, base)
}

/// A job polled until it is no longer running (the safety net only against a hang).
fn job_end(api: &Api, location: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let r = api.get(location);
        assert_eq!(r.status, 200, "{}", r.text);
        if r.json["state"] != "running" {
            return r.json;
        }
        assert!(
            started.elapsed() < SAFETY_NET,
            "job still running: {}",
            r.text
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The operator's HTTP restore of alpha at `at` (a job), and what the endpoints refuse.
fn http_restore(env: &Env, at: &str, alpha_then: &Rows) {
    let token = |args: &[&str]| {
        let mut all = vec!["tokens", "create"];
        all.extend_from_slice(args);
        env.cli(&all).json()["token"].as_str().unwrap().to_string()
    };
    let (op_token, ws_token) = (token(&["--operator"]), token(&["--workspace", "alpha"]));
    let (mut child, base) = serve(env);
    let (op, ws) = (
        Api::new(&base, Some(&op_token)),
        Api::new(&base, Some(&ws_token)),
    );
    let restore = "/api/v2/operator/workspaces/alpha/restore";

    // Refused at once: not JSON, a time outside the window, not a time, no confirmation.
    let r = op.send("POST", restore, Body::Raw(b"{\"at\": "));
    assert_eq!((r.status, r.code()), (400, "invalid_json"), "{}", r.text);
    let r = op.post(
        restore,
        json!({"at": "2000-01-01 00:00:00+00", "into": "zeta"}),
    );
    assert_eq!(
        (r.status, r.code()),
        (422, "outside_recovery_window"),
        "{}",
        r.text
    );
    assert!(r.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the recoverable window is"));
    let r = op.post(restore, json!({"at": "soon", "into": "zeta"}));
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_argument"),
        "{}",
        r.text
    );
    let r = op.post(restore, json!({"at": at, "in_place": true}));
    assert_eq!(
        (r.status, r.code()),
        (400, "confirmation_required"),
        "{}",
        r.text
    );
    let r = op.post(restore, json!({"at": at, "into": "zeta", "extra": 1}));
    assert_eq!((r.status, r.code()), (422, "invalid_request"), "{}", r.text);
    // The operator token is no workspace's.
    let r = op.get("/api/v2/tenants/status");
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);

    // Started: 202, the job and where to poll it.
    let r = op.post(restore, json!({"at": at, "into": "zeta"}));
    assert_eq!(r.status, 202, "{}", r.text);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(
        location,
        format!("/api/v2/operator/jobs/{}", r.json["job"].as_str().unwrap())
    );
    assert_eq!(r.json["state"], "running");
    // A workspace's token: refused, the same answer for the job and for no job at all.
    let refused = ws.get(&location);
    assert_eq!(
        (refused.status, refused.code()),
        (403, "forbidden"),
        "{}",
        refused.text
    );
    let none = ws.get("/api/v2/operator/jobs/job_0123456789abcdef");
    assert_eq!(
        (none.status, none.text.clone()),
        (refused.status, refused.text.clone())
    );
    let r = ws.post(restore, json!({"at": at, "into": "eta"}));
    assert_eq!(
        (r.status, r.text.clone()),
        (refused.status, refused.text.clone())
    );
    let r = op.get("/api/v2/operator/jobs/job_0123456789abcdef");
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);

    let done = job_end(&op, &location);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["into"], "zeta", "{done}");
    assert_eq!(&rows(env, "zeta"), alpha_then);
    assert_eq!(env.t.status("eta").unwrap().status, "not_provisioned");

    // A restore that fails in the job (beta is not empty): failed, the CLI's code, no internals.
    let r = op.post(restore, json!({"at": at, "into": "beta"}));
    assert_eq!(r.status, 202, "{}", r.text);
    let failed = job_end(&op, r.header("location").unwrap());
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "conflict", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(!message.contains(env.dir.to_str().unwrap()), "{message}");
    let _ = child.kill();
    let _ = child.wait();
}
