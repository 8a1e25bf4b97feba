//! Point-in-time recovery of a workspace on a server added with `server add` (issue 24): a
//! second real PostgreSQL, whose archiving its operator sets up as the README says
//! (`archive_mode`, `archive_command` through pgBackRest with the host's own configuration, a
//! stanza, a full backup), registered with its repository (`--backrest-stanza`,
//! `--backrest-config`); its workspace is restored as it was at a time from that repository,
//! row for row, and `archive status --server` shows its backups and archive lag. Repositories
//! that are not the server's, and a server that does not archive, are refused. Order comes
//! from observed state (the archiver's progress), never from sleeps.

mod common;

use common::*;
use dl_tenancy_ctl::Kind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const STANZA: &str = "db2";

/// Every row of the workspace's overrides, their history and its custom table, as text.
fn rows_at(uri: &str) -> Vec<Vec<String>> {
    let mut c = connect(uri).unwrap();
    [
        "SELECT o::text FROM dl_override.person_overrides AS o ORDER BY o.identity_key",
        "SELECT h::text FROM dl_override.person_override_history AS h ORDER BY h.changed_at, h.history_id",
        "SELECT s::text FROM tenant_custom.account_segments AS s ORDER BY s.id",
    ]
    .iter()
    .map(|q| strings(&mut c, q))
    .collect()
}

/// `pgbackrest --config=<conf> --stanza=db2 <args>` as the server OS user, as the operator
/// runs it on the server's host.
fn backrest(conf: &Path, args: &[&str]) {
    let mut cmd = pg_harness::server_command("pgbackrest");
    cmd.arg(format!("--config={}", conf.display()))
        .arg(format!("--stanza={STANZA}"))
        .args(args);
    run_ok(&mut cmd, &format!("pgbackrest {args:?}"));
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_workspace_on_an_added_server_is_restored_from_that_servers_repository() {
    let env = Env::new();
    let second = TlsCluster::start();
    let url = second.pg.conn_string("postgres", "postgres");
    let port = second.pg.port().to_string();
    let add = |extra: &[&str]| {
        let mut args = vec!["--host", "127.0.0.1", "--port", &port];
        args.extend_from_slice(extra);
        server_add(&env, STANZA, &url, &args)
    };

    // The operator's side, on the server's host: a repository, pgBackRest's configuration.
    let host = env.dir.join("db2-host");
    for d in [
        &host,
        &host.join("repo"),
        &host.join("log"),
        &host.join("lock"),
    ] {
        pg_harness::make_server_dir(d, 0o700).unwrap();
    }
    let host_conf = host.join("pgbackrest.conf");
    let repo = host.join("repo");
    pg_harness::write_server_file(
        &host_conf,
        &format!(
            "[global]\nrepo1-path={}\nlog-path={}\nlock-path={}\nstart-fast=y\n\n[{STANZA}]\npg1-path={}\npg1-socket-path={}\npg1-port={port}\npg1-user=postgres\n",
            repo.display(),
            host.join("log").display(),
            host.join("lock").display(),
            second.pg.data_dir().display(),
            second.pg.socket_dir().display(),
        ),
        0o600,
    )
    .unwrap();
    // What the tool is given: the repository only.
    let tool_conf = env.dir.join("db2-repo.conf");
    write_file(
        &tool_conf,
        &format!(
            "# db2's repository\n[global]\nrepo1-path={}\n",
            repo.display()
        ),
    );
    let conf_arg = tool_conf.to_str().unwrap();

    // Not archiving yet: refused, the server not registered with a repository.
    let out = add(&["--backrest-stanza", STANZA, "--backrest-config", conf_arg]);
    assert_eq!(
        out.error_code(),
        "archiving_not_configured",
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("archive_mode = off"), "{}", out.stderr);

    let mut admin = postgres::Client::connect(
        &second.pg.conn_string("postgres", "postgres"),
        postgres::NoTls,
    )
    .unwrap();
    admin
        .batch_execute("ALTER SYSTEM SET archive_mode = on")
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER SYSTEM SET archive_command = 'pgbackrest --config={} --stanza={STANZA} archive-push %p'",
            host_conf.display()
        ))
        .unwrap();
    drop(admin);
    let mut second = second;
    second.pg.stop().unwrap();
    second.pg.restart().unwrap();
    backrest(&host_conf, &["stanza-create"]);
    backrest(&host_conf, &["backup", "--type=full"]);

    // Another cluster's repository (the local server's, stanza `local`): refused.
    let local_repo = env.dir.join("local-repo.conf");
    write_file(
        &local_repo,
        &format!("repo1-path={}\n", env.dir.join("pgbackrest/repo").display()),
    );
    let added = add(&["--backrest-stanza", STANZA, "--backrest-config", conf_arg]).json();
    assert_eq!(added["archive"]["stanza"], STANZA, "{added}");
    assert_eq!(
        added["archive"]["repository"],
        format!("posix:{}", repo.display())
    );
    let stored = Path::new(added["archive"]["config_file"].as_str().unwrap());
    assert!(
        stored.starts_with(env.dir.join("pgbackrest")),
        "{}",
        stored.display()
    );
    assert_eq!(
        std::fs::metadata(stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // `server archive` (the update path) of db2 with a stanza and a configuration file.
    let archive = |stanza: &str, conf: &str| {
        env.cli(&[
            "server",
            "archive",
            "--name",
            STANZA,
            "--backrest-stanza",
            stanza,
            "--backrest-config",
            conf,
        ])
    };
    let out = archive("local", local_repo.to_str().unwrap());
    assert_eq!(out.error_code(), "conflict", "{}", out.stderr);
    assert!(
        out.stderr.contains("archives another cluster"),
        "{}",
        out.stderr
    );
    let out = archive("nope", conf_arg);
    assert_eq!(out.error_code(), "invalid_argument", "{}", out.stderr);
    // The refused settings left the stored ones as they were.
    assert!(std::fs::read_to_string(stored)
        .unwrap()
        .contains(&repo.display().to_string()));

    // A workspace on db2 (the local server holds one, so placement picks db2).
    env.t.provision("anchor").unwrap();
    env.t.provision("omega").unwrap();
    assert_eq!(
        env.t.status("omega").unwrap().server_id.as_deref(),
        Some(STANZA)
    );
    let omega = env.uri("omega", Kind::Override, false);
    {
        let mut c = connect(&omega).unwrap();
        for i in 0..4 {
            upsert(&mut c, &format!("person:omega-{i}"), "active").unwrap();
        }
        c.batch_execute(CUSTOM_TABLE).unwrap();
        c.batch_execute(
            "INSERT INTO tenant_custom.account_segments (id, segment) VALUES ('o-a', 'gold'), ('o-b', 'silver')",
        )
        .unwrap();
    }
    let then = rows_at(&omega);
    let mut db2_admin = postgres::Client::connect(
        &second.pg.conn_string("postgres", "postgres"),
        postgres::NoTls,
    )
    .unwrap();
    let at = archived_now(&mut db2_admin);
    connect(&omega)
        .unwrap()
        .batch_execute(
            "DELETE FROM dl_override.person_overrides WHERE identity_key = 'person:omega-0';
             UPDATE tenant_custom.account_segments SET segment = 'lead' WHERE id = 'o-a';
             INSERT INTO tenant_custom.account_segments (id, segment) VALUES ('o-z', 'new')",
        )
        .unwrap();
    let now = rows_at(&omega);
    assert_ne!(now, then);

    // archive status of db2: its backup, its archive.
    let status = env.cli(&["archive", "status", "--server", STANZA]).json();
    assert_eq!(status["server"], STANZA, "{status}");
    assert_eq!(status["stanza"], STANZA);
    assert_eq!(status["last_backup"]["type"], "full", "{status}");
    assert!(status["archive_lag_bytes"].is_u64(), "{status}");
    assert!(status["window"]["from"].is_string(), "{status}");
    // ... and the same in what serve's /metrics renders, beside the local server's.
    let snap = env.t.load_snapshot().unwrap();
    let figures: Vec<&str> = snap.archives.iter().map(|a| a.server.as_str()).collect();
    assert_eq!(figures, [STANZA, "local"], "{figures:?}");
    let added = snap.archives.iter().find(|a| a.server == STANZA).unwrap();
    assert!(added.last_backup_at.is_some() && added.lag_bytes.is_some());

    // omega as it was at `at`, from db2's repository, into a new workspace.
    let report = env
        .cli(&[
            "restore",
            "--workspace",
            "omega",
            "--at",
            &at,
            "--into",
            "omega2",
        ])
        .json();
    assert_eq!(report["into"], "omega2", "{report}");
    assert_eq!(rows_at(&env.uri("omega2", Kind::Override, false)), then);
    assert_eq!(rows_at(&omega), now, "the source is left as it is");
    let left: Vec<_> = std::fs::read_dir(env.dir.join("pitr"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    // Outside db2's window: refused, naming it.
    let out = env.cli(&[
        "restore",
        "--workspace",
        "omega",
        "--at",
        "2001-01-01",
        "--into",
        "omega3",
    ]);
    assert_eq!(
        out.error_code(),
        "outside_recovery_window",
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the recoverable window is"),
        "{}",
        out.stderr
    );
}
