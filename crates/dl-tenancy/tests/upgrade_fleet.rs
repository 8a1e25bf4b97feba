//! `dl-tenancy upgrade`: a fleet provisioned by the previous release (0.1.0) is upgraded in
//! place; a workspace that fails is recorded and reported while the rest go on, and a re-run
//! after fixing it completes. A failing canary stops the run before the rest are touched.

mod common;

use common::Env;
use serde_json::Value;

const OLD: &str = "0.1.0";

/// Provision `workspaces` and put each back at the previous release, with an override in it,
/// as if a fleet had been provisioned before this version was installed.
fn old_fleet(env: &Env, workspaces: &[String]) {
    for ws in workspaces {
        env.t.provision(ws).unwrap();
        env.admin_ws(ws)
            .batch_execute(&format!(
                "DROP EXTENSION dl_tenancy CASCADE;
                 CREATE EXTENSION dl_tenancy VERSION '{OLD}';
                 SELECT dl_apply_person_override('p1', 'vip', '{{\"name\": \"{ws}\"}}', NULL);"
            ))
            .unwrap();
    }
}

fn version(env: &Env, ws: &str) -> String {
    env.admin_ws(ws)
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'dl_tenancy'",
            &[],
        )
        .unwrap()
        .get(0)
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["workspace"].as_str().unwrap().to_string(),
                w["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn upgrade_all_continues_past_a_failure_and_a_rerun_finishes() {
    let env = Env::new();
    let fleet: Vec<String> = (0..50).map(|i| format!("fleet-{i:02}")).collect();
    old_fleet(&env, &fleet);
    let current: String = env
        .admin("postgres")
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'dl_tenancy'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_ne!(current, OLD);

    // Break one: an object in the way of the new version's history table.
    env.admin_ws("fleet-13")
        .batch_execute("CREATE TABLE dl_override.person_override_history (x int)")
        .unwrap();

    let run = env.cli(&["upgrade", "--all", "--parallel", "4"]);
    assert_eq!(
        run.code, 1,
        "a failed workspace makes the run fail\n{}",
        run.stderr
    );
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (
            report["total"].as_u64(),
            report["upgraded"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(50), Some(49), Some(1))
    );
    let failed: Vec<_> = statuses(&report)
        .into_iter()
        .filter(|(_, s)| s == "failed")
        .collect();
    assert_eq!(failed, [("fleet-13".to_string(), "failed".to_string())]);
    let error = report["workspaces"][13]["error"].as_str().unwrap();
    assert!(error.contains("person_override_history"), "{error}");
    assert_eq!(
        version(&env, "fleet-13"),
        OLD,
        "the failed workspace stays at the old version"
    );
    for ws in ["fleet-00", "fleet-12", "fleet-14", "fleet-49"] {
        assert_eq!(version(&env, ws), current);
        // Its data made it, with the new history row.
        let row = env
            .admin_ws(ws)
            .query_one(
                "SELECT p.display_name, (SELECT count(*) FROM dl_override.person_override_history WHERE operation = 'import')
                   FROM dl_resolved.people p WHERE identity_key = 'p1'",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), *ws);
        assert_eq!(row.get::<_, i64>(1), 1);
    }
    // Recorded in the control database, per workspace.
    let recorded = env
        .admin("dl_control")
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed' AND workspace_id = 'fleet-13')
               FROM workspace_upgrades",
            &[],
        )
        .unwrap();
    assert_eq!(
        (recorded.get::<_, i64>(0), recorded.get::<_, i64>(1)),
        (49, 1)
    );

    // Fix it and run again: only the failed one is upgraded.
    env.admin_ws("fleet-13")
        .batch_execute("DROP TABLE dl_override.person_override_history")
        .unwrap();
    let rerun = env.cli(&["upgrade", "--all"]).json();
    assert_eq!(
        (
            rerun["upgraded"].as_u64(),
            rerun["already_current"].as_u64(),
            rerun["failed"].as_u64()
        ),
        (Some(1), Some(49), Some(0))
    );
    assert_eq!(version(&env, "fleet-13"), current);
    let attempts: i32 = env
        .admin("dl_control")
        .query_one("SELECT attempts FROM workspace_upgrades WHERE workspace_id = 'fleet-13' AND state = 'succeeded'", &[])
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);

    // New workspaces start at the newest version.
    let fresh = env.cli(&["provision", "--workspace", "fresh"]).json();
    assert_eq!(fresh["extension_version"].as_str(), Some(current.as_str()));
}

#[test]
fn a_failing_canary_stops_the_run() {
    let env = Env::new();
    let fleet: Vec<String> = (0..5).map(|i| format!("canary-{i}")).collect();
    old_fleet(&env, &fleet);
    env.admin_ws("canary-1")
        .batch_execute("CREATE TABLE dl_override.person_override_history (x int)")
        .unwrap();
    let run = env.cli(&["upgrade", "--all", "--canary", "2"]);
    assert_eq!(run.code, 1);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["canary_failed"], Value::Bool(true));
    assert_eq!(
        statuses(&report),
        [
            ("canary-0".to_string(), "upgraded".to_string()),
            ("canary-1".to_string(), "failed".to_string()),
            ("canary-2".to_string(), "skipped".to_string()),
            ("canary-3".to_string(), "skipped".to_string()),
            ("canary-4".to_string(), "skipped".to_string()),
        ]
    );
    for ws in ["canary-2", "canary-3", "canary-4"] {
        assert_eq!(version(&env, ws), OLD);
    }
}

/// A tenant that keeps a transaction open on its resolved view holds its own upgrade up, and
/// only its own: it is retried, reported `busy`, and the canary stage goes on; once the
/// transaction ends, a re-run upgrades it.
#[test]
fn a_busy_tenant_is_retried_and_does_not_stop_the_canary() {
    let env = Env::new();
    let fleet: Vec<String> = (0..4).map(|i| format!("busy-{i}")).collect();
    old_fleet(&env, &fleet);
    let uri = env.uri("busy-0", dl_tenancy_ctl::Kind::Read, false);
    let mut tenant = common::connect(&uri).unwrap();
    // The attacker lifts its own idle timeout (a session setting it may change) and holds
    // the view's lock.
    tenant
        .batch_execute(
            "SET idle_in_transaction_session_timeout = 0;
             BEGIN; SELECT count(*) FROM dl_resolved.people;",
        )
        .unwrap();
    let run = env.cli(&[
        "upgrade",
        "--all",
        "--canary",
        "2",
        "--lock-timeout-ms",
        "100",
        "--lock-attempts",
        "2",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["canary_failed"], Value::Bool(false));
    assert_eq!(
        (report["busy"].as_u64(), report["upgraded"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        statuses(&report)[0],
        ("busy-0".to_string(), "busy".to_string())
    );
    let error = report["workspaces"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("busy:") && error.contains("2 attempts"),
        "{error}"
    );
    assert_eq!(version(&env, "busy-0"), OLD);
    tenant.batch_execute("COMMIT").unwrap();
    let rerun = env.cli(&["upgrade", "--all"]).json();
    assert_eq!(
        (
            rerun["upgraded"].as_u64(),
            rerun["already_current"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_ne!(version(&env, "busy-0"), OLD);
}

#[test]
fn bad_upgrade_arguments_change_nothing() {
    let env = Env::new();
    old_fleet(&env, &["solo".to_string()]);
    assert_eq!(
        env.cli(&["upgrade", "--all", "--to", "9.9.9"]).error_code(),
        "extension_unavailable"
    );
    assert_eq!(
        env.cli(&["upgrade", "--all", "--to", "0.2'; DROP"])
            .error_code(),
        "invalid_argument"
    );
    assert_eq!(
        env.cli(&["upgrade", "--workspace", "nope"]).error_code(),
        "not_provisioned"
    );
    assert_eq!(env.cli(&["upgrade"]).error_code(), "invalid_argument");
    assert_eq!(version(&env, "solo"), OLD);
    // One workspace, to an explicit version.
    let one = env
        .cli(&["upgrade", "--workspace", "solo", "--to", "0.2.0"])
        .json();
    assert_eq!(
        statuses(&one),
        [("solo".to_string(), "upgraded".to_string())]
    );
}
