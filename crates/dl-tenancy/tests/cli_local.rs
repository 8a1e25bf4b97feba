//! The CLI's `local up/down/status` on its own data directory: idempotent up, restart after
//! a crash (servers killed with SIGKILL), down, and errors as JSON.

mod common;

use common::*;
use std::path::PathBuf;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = dl_tenancy_ctl::local::down(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pid_of(path: PathBuf) -> i32 {
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn local_up_is_idempotent_and_restarts_after_a_crash() {
    let dir = Dir(pg_harness::temp_dir("dl-tenancy-cli").unwrap());
    let d = &dir.0;
    // Before `local up`: a JSON error, not a panic.
    let out = cli_in(d, &["status", "--workspace", "demo"], &[]);
    assert_eq!(out.error_code(), "local_not_initialized");
    // Too few connection slots for the platform's and the direct logins' reserves, or more
    // than it takes: refused before anything is written or started.
    for n in ["39", "10001"] {
        let out = cli_in(d, &["local", "up", "--max-connections", n], &[]);
        assert_eq!(out.error_code(), "invalid_argument", "{n}: {}", out.stderr);
        assert!(!d.join("local.json").exists());
    }

    let pg = pg_harness::free_port();
    let mut pool = pg_harness::free_port();
    while pool == pg {
        pool = pg_harness::free_port();
    }
    let up = cli_in(
        d,
        &[
            "local",
            "up",
            "--pg-port",
            &pg.to_string(),
            "--pooler-port",
            &pool.to_string(),
        ],
        &[],
    )
    .json();
    assert_eq!(up["postgres"]["running"], true);
    assert_eq!(up["pooler"]["running"], true);
    assert_eq!(up["postgres"]["port"], pg);
    assert_eq!(up["pooler"]["port"], pool);
    assert_eq!(up["control_database"], "dl_control");
    let ca_file = up["ca_file"].as_str().unwrap();
    assert!(ca_file.ends_with("/tls/ca.crt"), "{ca_file}");
    assert!(std::fs::read_to_string(ca_file)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    // Second up: same result, nothing breaks; ports remembered without flags.
    let again = cli_in(d, &["local", "up"], &[]).json();
    assert_eq!(again, up);
    let local_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("local.json")).unwrap()).unwrap();
    assert_eq!(local_json["pg_port"], pg);

    assert_eq!(
        cli_in(d, &["provision", "--workspace", "demo"], &[]).json()["status"],
        "active"
    );
    let reveal = |pooled: bool| {
        let mut args = vec![
            "connection-uris",
            "reveal",
            "--workspace",
            "demo",
            "--kind",
            "read",
        ];
        if pooled {
            args.push("--pooled");
        }
        cli_in(d, &args, &[]).json()["uri"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let direct = reveal(false);
    let pooled = reveal(true);

    // Crash: SIGKILL both servers.
    let pg_pid = pid_of(d.join("pg/postmaster.pid"));
    let bouncer_pid = pid_of(d.join("pgbouncer/pgbouncer.pid"));
    unsafe {
        libc::kill(bouncer_pid, libc::SIGKILL);
        libc::kill(pg_pid, libc::SIGKILL);
    }
    // Wait until both are gone (in a container, PID 1 reaps the zombies after a moment). The
    // deadline is only a safety net.
    let deadline = std::time::Instant::now() + SAFETY_NET;
    let st = loop {
        let st = cli_in(d, &["local", "status"], &[]).json();
        if st["postgres"]["running"] == false && st["pooler"]["running"] == false
            || std::time::Instant::now() > deadline
        {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(st["postgres"]["running"], false);
    assert_eq!(st["pooler"]["running"], false);
    let out = cli_in(d, &["status", "--workspace", "demo"], &[]);
    assert_eq!(out.error_code(), "server_unreachable");

    let up = cli_in(d, &["local", "up"], &[]).json();
    assert_eq!(up["postgres"]["running"], true);
    assert_eq!(up["pooler"]["running"], true);
    assert_eq!(
        cli_in(d, &["status", "--workspace", "demo"], &[]).json()["status"],
        "active"
    );
    assert_eq!(reveal(false), direct);
    connect(&direct).unwrap().batch_execute(READ_QUERY).unwrap();
    connect(&pooled).unwrap().batch_execute(READ_QUERY).unwrap();

    let list = cli_in(d, &["list"], &[]).json();
    assert_eq!(list["workspaces"][0]["workspace"], "demo");
    let schema = cli_in(d, &["sql-schema", "--workspace", "demo"], &[]).json();
    assert!(schema.is_object(), "{schema}");

    let down = cli_in(d, &["local", "down"], &[]).json();
    assert_eq!(down["postgres"]["running"], false);
    assert_eq!(down["pooler"]["running"], false);
    let down = cli_in(d, &["local", "down"], &[]).json();
    assert_eq!(down["postgres"]["running"], false);
    // `local` refuses --admin-url.
    let out = cli_in(
        d,
        &["local", "up"],
        &[("DL_TENANCY_ADMIN_URL", "host=/nowhere")],
    );
    assert_eq!(out.error_code(), "invalid_argument");
    // Usage errors are JSON too.
    let out = cli_in(d, &["provision"], &[]);
    assert_eq!(out.error_code(), "invalid_argument");
    assert_eq!(out.code, 2);
}
