//! A hostile tenant's code in the platform's load session (archive::TenantLoader), where the
//! tool counts the tenant's tables: counting plans them, and planning folds the tenant's
//! IMMUTABLE functions. There the code runs with the tenant's powers only, but it can still
//! stall: it catches the statement timeout's cancel (`EXCEPTION WHEN query_canceled`) and
//! sleeps on, and the watchdog leaves load logins alone. The backup then hung for as long as
//! the tenant liked, holding the dump's snapshot (vacuum and logical slot creation, server
//! wide) and the workspace's lock. The tool ends such a session at its statement timeout.
//!
//! A test binary of its own: it lowers the statement timeout of every platform session of the
//! process (`limit_platform_statements`, what `serve` does), which other tests must not get.

mod common;

use common::*;
use dl_tenancy_ctl::ErrorCode;
use std::time::Duration;

/// Folded while a load login plans a query over `stalled`: sleeps ten minutes, through every
/// cancel. Anyone else (the tenant creating the index) passes at once.
const STALL: &str = r#"
CREATE TABLE tenant_custom.stalled (x int);
INSERT INTO tenant_custom.stalled VALUES (1);
CREATE FUNCTION tenant_custom.stall(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
    IF session_user::text LIKE '%\_load' THEN
        RAISE WARNING 'dl-evidence stall runs as %', session_user;
        LOOP
            BEGIN
                PERFORM pg_catalog.pg_sleep(0.2);
            EXCEPTION WHEN query_canceled THEN
                RAISE WARNING 'dl-evidence stall caught a cancel';
            END;
            EXIT WHEN pg_catalog.clock_timestamp() > pg_catalog.statement_timestamp() + interval '10 minutes';
        END LOOP;
    END IF;
    RETURN x;
END $$;
CREATE INDEX stalled_expr ON tenant_custom.stalled ((tenant_custom.stall(1)));
"#;

/// A backup of a workspace whose table stalls its count answers `busy` within the platform's
/// statement timeout instead of hanging; the load login and its session are gone; the
/// neighbour works on, and so does the attacker's workspace.
#[test]
fn a_stalled_count_ends_at_the_platform_statement_timeout() {
    let env = Env::with_attacker_and_neighbour();
    env.run_as_override(ATTACKER, STALL);
    dl_tenancy_ctl::connection::limit_platform_statements(Duration::from_secs(3));

    let file = env.dir.join("stalled.backup");
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = env.dir.clone();
    std::thread::spawn(move || {
        let t = dl_tenancy_ctl::Tenancy::open(&dl_tenancy_ctl::Config {
            data_dir: dir,
            admin_url: None,
        })
        .unwrap();
        let _ = tx.send(t.backup(ATTACKER, &file));
    });
    let result = rx
        .recv_timeout(SAFETY_NET)
        .expect("the backup still waits for the tenant's stalled count");
    assert_eq!(result.unwrap_err().code, ErrorCode::Busy);
    assert!(
        env.server_log().contains("dl-evidence stall runs as"),
        "the tenant's code did not run in the load session"
    );
    let mut admin = env.admin("postgres");
    let left = count(
        &mut admin,
        "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '%\\_load'",
    );
    assert_eq!(left, 0, "a load session outlived the backup");
    let loaders = count(
        &mut admin,
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE '%\\_load'",
    );
    assert_eq!(loaders, 0, "the load login outlived the backup");
    for ws in [ATTACKER, NEIGHBOUR] {
        env.assert_reads(ws, true);
    }
}
