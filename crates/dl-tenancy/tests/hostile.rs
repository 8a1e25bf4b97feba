//! A hostile tenant, holding only its own workspace's logins and token, attacks the shared
//! cluster, direct and through PgBouncer. Every attack fails with a specific SQLSTATE; the
//! server does not crash; a neighbour's open session survives; platform writes in the
//! attacked workspace and in the neighbour's still succeed.

mod common;

use std::collections::BTreeSet;

use common::*;
use dl_tenancy_ctl::fences::DEFAULT_LIMITS;
use dl_tenancy_ctl::{tokens, Kind};
use postgres::Client;

/// A workspace the attacker holds and a neighbour with an open session.
struct Arena {
    env: Env,
    neighbour: Client,
}

impl Arena {
    fn new() -> Arena {
        let env = Env::with_attacker_and_neighbour();
        let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, false)).unwrap();
        neighbour.batch_execute(READ_QUERY).unwrap();
        Arena { env, neighbour }
    }

    /// The attacker's sessions: read and override, direct and pooled.
    fn attacker_sessions(&self) -> Vec<(String, Client)> {
        let mut sessions = vec![];
        for kind in Kind::ALL {
            for pooled in [false, true] {
                let uri = self.env.uri(ATTACKER, kind, pooled);
                let client =
                    connect(&uri).unwrap_or_else(|e| panic!("{kind} pooled={pooled}: {e}"));
                sessions.push((format!("{kind} pooled={pooled}"), client));
            }
        }
        sessions
    }

    /// Nobody else was harmed: no backend crashed, the neighbour's session still answers, and
    /// the platform still writes in both workspaces.
    fn assert_nobody_harmed(&mut self) {
        let log = self.env.server_log();
        for crash in [
            "was terminated by signal",
            "all server processes terminated",
        ] {
            assert!(
                !log.contains(crash),
                "the server log shows a crash ({crash}):\n{log}"
            );
        }
        self.neighbour.batch_execute(READ_QUERY).unwrap();
        for ws in [ATTACKER, NEIGHBOUR] {
            self.env
                .admin_ws(ws)
                .batch_execute(
                    r#"SET ROLE dl_platform_runtime;
                       SELECT dl_upsert_person_enrichment('platform-write', '{"name":"P"}', '{}')"#,
                )
                .unwrap_or_else(|e| panic!("platform write in {ws}: {e}"));
        }
    }
}

fn state_of(client: &mut Client, statement: &str) -> String {
    match client.batch_execute(statement) {
        Ok(()) => "00000".into(),
        Err(e) => sqlstate(&e),
    }
}

/// A JSON document nested `depth` objects deep, built by the server (no huge statement text).
fn deep_document(depth: usize) -> String {
    format!("(repeat('{{\"a\":', {depth}) || '1' || repeat('}}', {depth}))::jsonb")
}

/// 0.3.0 died with SIGSEGV on a patch nested 10,000 deep and took every workspace's
/// sessions with it (crash recovery). Now every entry point either merges or refuses with
/// 54001, at any depth PostgreSQL's own jsonb input accepts.
#[test]
fn a_deeply_nested_patch_is_refused_not_a_crash() {
    let mut arena = Arena::new();
    let mut refused = 0;
    for (who, mut client) in arena.attacker_sessions() {
        for depth in [10_000, 20_000, 40_000] {
            let deep = deep_document(depth);
            if state_of(&mut client, &format!("SELECT {deep} IS NOT NULL")) != "00000" {
                continue; // deeper than jsonb input itself accepts
            }
            let mut entry_points = vec![format!("SELECT dl_jsonb_merge_patch('{{}}', {deep})")];
            if who.starts_with("override") {
                entry_points.push(format!(
                    "INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) VALUES ('deep', {deep})"
                ));
                entry_points.push(format!(
                    "SELECT dl_apply_person_override('deep', NULL, {deep}, NULL)"
                ));
                entry_points.push(format!(
                    "UPDATE dl_override.person_overrides SET raw_payload_patch = {deep} WHERE identity_key = 'deep'"
                ));
            }
            for statement in entry_points {
                match state_of(&mut client, &statement).as_str() {
                    "00000" => {}
                    "54001" => refused += 1,
                    other => panic!("{who}, depth {depth}: {other} from {statement}"),
                }
            }
        }
        if who.starts_with("override") {
            // COPY, the bulk path: the text of a patch 10,000 deep (the depth that crashed 0.3.0).
            let patch = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
            let copied = (|| {
                let mut writer = client.copy_in(
                    "COPY dl_override.person_overrides (identity_key, raw_payload_patch) FROM STDIN",
                )?;
                std::io::Write::write_all(&mut writer, format!("copied\t{patch}\n").as_bytes())
                    .expect("COPY data is sent");
                writer.finish()
            })();
            match copied {
                Ok(rows) => assert_eq!(rows, 1),
                Err(e) => {
                    assert_eq!(sqlstate(&e), "54001", "{who}: COPY: {e}");
                    refused += 1;
                }
            }
        }
        // The attacker's own session survives its failed statements.
        client.batch_execute(READ_QUERY).unwrap();
    }
    assert!(refused > 0, "no depth reached the stack limit");
    arena.assert_nobody_harmed();
}

/// The shared lock table, large objects and the notification queue are out of reach of
/// both tenant roles. Advisory locks are theirs only through the extension's bounded
/// functions (0.6.0): a flood stops at the session's budget (54000), and the built-ins stay
/// refused.
#[test]
fn shared_server_state_is_out_of_reach() {
    let mut arena = Arena::new();
    let attacks = [
        "SELECT pg_catalog.pg_advisory_lock(1::bigint)",
        "SELECT pg_catalog.pg_advisory_lock(1, 2)",
        "SELECT pg_catalog.pg_try_advisory_xact_lock_shared(7::bigint)",
        "SELECT count(pg_catalog.pg_advisory_lock(g)) FROM generate_series(1, 2000000) g",
        "SELECT lo_create(0)",
        "SELECT lo_from_bytea(0, decode(repeat('ab', 1000), 'hex'))",
        "SELECT pg_notify('channel', 'payload')",
        "LISTEN channel",
        "NOTIFY channel, 'payload'",
    ];
    let mut admin = arena.env.admin_ws(ATTACKER);
    for (who, mut client) in arena.attacker_sessions() {
        for attack in attacks {
            assert_eq!(state_of(&mut client, attack), "42501", "{who}: {attack}");
        }
        for flood in [
            "SELECT count(pg_advisory_lock(g)) FROM generate_series(1, 2000000) g",
            "SELECT count(pg_try_advisory_lock(g, 1)) FROM generate_series(1, 2000000) g",
        ] {
            assert_eq!(state_of(&mut client, flood), "54000", "{who}: {flood}");
        }
        let most = count(
            &mut admin,
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM pg_locks
                  WHERE locktype = 'advisory' AND objsubid IN (1, 2) GROUP BY pid) AS s",
        );
        assert!(most <= 16, "{who}: a session holds {most} advisory locks");
        client
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .unwrap();
    }
    let large_objects = count(&mut admin, "SELECT count(*) FROM pg_largeobject_metadata");
    assert_eq!(large_objects, 0);
    arena.assert_nobody_harmed();
}

/// A login cannot persist settings for itself, nor give itself a password; its session
/// defaults are the platform's.
#[test]
fn a_login_cannot_change_its_role() {
    let mut arena = Arena::new();
    for (who, mut client) in arena.attacker_sessions() {
        for attack in [
            "ALTER ROLE CURRENT_USER SET work_mem = '10GB'",
            "SET ROLE NONE; ALTER ROLE CURRENT_USER SET statement_timeout = 0",
            "SET ROLE NONE; ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-attacker'",
        ] {
            assert_eq!(state_of(&mut client, attack), "42501", "{who}: {attack}");
        }
        assert_eq!(show(&mut client, "statement_timeout"), "1min", "{who}");
    }
    // No setting stored for any of the attacker's roles (named after its database).
    let mut admin = arena.env.admin("postgres");
    let roles = format!("{}\\_%", arena.env.database(ATTACKER));
    let (roles_seen, settings): (i64, i64) = admin
        .query_one(
            "SELECT count(DISTINCT r.oid), count(s.setrole) FROM pg_roles r
               LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND array_to_string(s.setconfig, ',') LIKE '%10GB%'
              WHERE r.rolname LIKE $1",
            &[&roles],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(
        roles_seen >= 4,
        "the attacker's roles are found: {roles_seen}"
    );
    assert_eq!(settings, 0);
    arena.assert_nobody_harmed();
}

/// The errors a tenant's statements raise are PostgreSQL's own (SQLSTATE, message, detail,
/// hint), or the guard's refusal with its own detail: never Rust internals. 0.4.0's guard
/// passed each utility statement on through pgrx, which turned any error into a panic and
/// back: with RUST_BACKTRACE set in the server's environment, a tenant creating a table
/// twice read the extension's backtrace in the DETAIL. The cluster runs here with
/// RUST_BACKTRACE=1 on purpose, the worst an operator's environment can give it.
#[test]
fn tenant_errors_carry_no_internals() {
    let env = Env::new();
    env.cli(&["local", "down"]).json();
    env.cli_env(&["local", "up"], &[("RUST_BACKTRACE", "1")])
        .json();
    env.t.provision(ATTACKER).unwrap();
    for pooled in [false, true] {
        let mut client = connect(&env.uri(ATTACKER, Kind::Override, pooled)).unwrap();
        client
            .batch_execute(
                "DROP TABLE IF EXISTS tenant_custom.t CASCADE;
                 CREATE TABLE tenant_custom.t (id int);
                 CREATE VIEW tenant_custom.v AS SELECT id FROM tenant_custom.t",
            )
            .unwrap();
        let expected = [
            ("CREATE TABLE tenant_custom.t (id int)", "42P07", None, None),
            (
                "DROP TABLE tenant_custom.t",
                "2BP01",
                Some("view v depends on table t"),
                Some("Use DROP ... CASCADE to drop the dependent objects too."),
            ),
            (
                "LISTEN anything",
                "42501",
                Some("The notification queue is shared by every database of the server."),
                Some("Poll a table in tenant_custom, or use your own message broker."),
            ),
        ];
        for (statement, code, detail, hint) in expected {
            let e = client.batch_execute(statement).expect_err(statement);
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{statement}: {e}"));
            let shown = format!("{db:?}");
            assert_eq!(
                db.code().code(),
                code,
                "pooled={pooled} {statement}: {shown}"
            );
            assert_eq!(db.detail(), detail, "pooled={pooled} {statement}: {shown}");
            assert_eq!(db.hint(), hint, "pooled={pooled} {statement}: {shown}");
            // What a client shows its user: no Rust internals (a backtrace names pgrx, the
            // panic machinery and source lines).
            let text = [Some(db.message()), db.detail(), db.hint()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n");
            for internal in ["pgrx", "panic", "backtrace", ".rs:"] {
                assert!(
                    !text.contains(internal),
                    "pooled={pooled} {statement}: {shown}"
                );
            }
        }
        client.batch_execute("SELECT 1").unwrap();
    }
}

/// After a rotation with no grace, the retired login's open sessions (direct and pooled)
/// are ended, and it cannot log in again, with its old password or any other.
#[test]
fn a_rotated_login_is_revoked_for_good() {
    let mut arena = Arena::new();
    let old_direct = arena.env.uri(ATTACKER, Kind::Read, false);
    let old_pooled = arena.env.uri(ATTACKER, Kind::Read, true);
    let mut direct = connect(&old_direct).unwrap();
    let mut pooled = connect(&old_pooled).unwrap();
    direct.batch_execute(READ_QUERY).unwrap();
    pooled.batch_execute(READ_QUERY).unwrap();
    // From the open session, before the rotation: try to set a password of its own choice.
    assert_eq!(
        state_of(
            &mut direct,
            "SET ROLE NONE; ALTER ROLE CURRENT_USER PASSWORD 'mine'"
        ),
        "42501"
    );

    arena.env.t.rotate(ATTACKER, Kind::Read, 0).unwrap();

    assert!(
        direct.batch_execute(READ_QUERY).is_err(),
        "direct session survived the rotation"
    );
    assert!(
        pooled.batch_execute(READ_QUERY).is_err(),
        "pooled session survived the rotation"
    );
    for uri in [&old_direct, &old_pooled] {
        assert!(connect(uri).is_err(), "old credential still logs in");
        let chosen = uri.replacen(&password_of(uri), "mine", 1);
        assert!(connect(&chosen).is_err(), "chosen password logs in");
    }
    let mut admin = arena.env.admin("postgres");
    let can_login: bool = admin
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&login_of(&old_direct)],
        )
        .unwrap()
        .get(0);
    assert!(!can_login);
    // The new credential works, direct and pooled.
    for pooled in [false, true] {
        connect(&arena.env.uri(ATTACKER, Kind::Read, pooled))
            .unwrap()
            .batch_execute(READ_QUERY)
            .unwrap();
    }
    arena.assert_nobody_harmed();
}

/// One workspace at its connection caps leaves the others room: a login stops at its cap
/// (53300), the database at its own, and the neighbour still connects.
#[test]
fn connection_caps_fence_a_workspace_in() {
    let mut arena = Arena::new();
    let mut held = vec![];
    // The read login alone: stopped by its own cap.
    connect_until_refused(&arena.env.uri(ATTACKER, Kind::Read, false), &mut held);
    assert_eq!(held.len(), DEFAULT_LIMITS.login_connections as usize);
    // Then the override login: stopped by the database's cap (superusers do not count).
    connect_until_refused(&arena.env.uri(ATTACKER, Kind::Override, false), &mut held);
    assert_eq!(held.len(), DEFAULT_LIMITS.database_connections as usize);
    // The neighbour connects, direct and pooled.
    for pooled in [false, true] {
        connect(&arena.env.uri(NEIGHBOUR, Kind::Read, pooled))
            .unwrap()
            .batch_execute(READ_QUERY)
            .unwrap();
    }
    drop(held);
    arena.assert_nobody_harmed();
}

/// Limits are per workspace: an operator tightens one workspace's (CLI), they apply at once
/// and survive a provision, the neighbour keeps the defaults, and values outside their bounds
/// are refused without changing anything.
#[test]
fn limits_are_per_workspace_and_applied_at_once() {
    let mut arena = Arena::new();
    let out = arena
        .env
        .cli(&[
            "limits",
            "--workspace",
            ATTACKER,
            "--login-connections",
            "3",
            "--statement-timeout",
            "5s",
            "--work-mem-mb",
            "4",
        ])
        .json();
    assert_eq!(out["customized"], true);
    assert_eq!(out["limits"]["login_connections"], 3);
    assert_eq!(
        out["limits"]["database_connections"],
        DEFAULT_LIMITS.database_connections
    );
    arena.env.t.provision(ATTACKER).unwrap(); // re-asserts them, does not reset them
    let mut held = vec![];
    connect_until_refused(&arena.env.uri(ATTACKER, Kind::Read, false), &mut held);
    assert_eq!(held.len(), 3);
    assert_eq!(show(&mut held[0], "statement_timeout"), "5s");
    assert_eq!(show(&mut held[0], "work_mem"), "4MB");
    // The statement timeout ends a long statement (57014), the session goes on.
    let e = held[0].batch_execute("SELECT pg_sleep(30)").unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    drop(held);
    // The neighbour keeps the defaults.
    let defaults = arena.env.cli(&["limits", "--workspace", NEIGHBOUR]).json();
    assert_eq!(defaults["customized"], false);
    assert_eq!(show(&mut arena.neighbour, "statement_timeout"), "1min");
    // Out of bounds: refused (exit 2), nothing changed.
    for bad in [
        ["--database-connections", "0"],
        ["--login-connections", "500"],
        ["--work-mem-mb", "-1"],
        ["--statement-timeout", "forever"],
    ] {
        let out = arena
            .env
            .cli(&["limits", "--workspace", ATTACKER, bad[0], bad[1]]);
        assert_eq!(out.error_code(), "invalid_argument", "{bad:?}");
        assert_eq!(out.code, 2);
    }
    let still = arena.env.cli(&["limits", "--workspace", ATTACKER]).json();
    assert_eq!(still["limits"], out["limits"]);
    arena.assert_nobody_harmed();
}

/// Failed logins through the pooler, and through the direct front (a PgBouncer too, since
/// 0.7.0), tell nothing about which logins or databases exist.
/// Without the right password (a wrong one, an unknown login, a standby login, any database):
/// all 28P01 "SASL authentication failed" (0.3.0's pooler said "no such user" for some). With its
/// own right password, into a database that is not its workspace (a neighbour's, one that does
/// not exist, the server's own): the same refusal for each, at once (0.3.0's pooler held a
/// login to an unknown database until query_wait_timeout, 120 s, and 0.4.0's said it did not
/// exist).
#[test]
fn login_failures_do_not_tell_which_logins_exist() {
    let arena = Arena::new();
    let env = &arena.env;
    for pooled in [true, false] {
        login_failures_tell_nothing(env, pooled);
    }
}

fn login_failures_tell_nothing(env: &Env, pooled: bool) {
    let ours = env.uri(ATTACKER, Kind::Read, pooled);
    let theirs = env.uri(NEIGHBOUR, Kind::Read, pooled);
    let standby = env.t.metadata(ATTACKER).unwrap().roles["read"]
        .standby_login
        .clone();
    let no_workspace = "dlw_0000000000000000";
    let refusal = |what: &str, uri: &str| {
        let e = connect(uri).map(|_| ()).expect_err(what);
        let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e}"));
        // The names the client sent itself do not count as something the pooler told.
        let message = [login_of(uri), database_of(uri)]
            .iter()
            .fold(db.message().to_string(), |m, name| {
                m.replace(name.as_str(), "<name>")
            });
        (db.code().code().to_string(), message)
    };
    let wrong_password = ours.replacen(&password_of(&ours), "wrong", 1);
    let unknown_login = ours.replacen(&login_of(&ours), "nosuchlogin", 1);
    let without_password = [
        ("wrong password", wrong_password.clone()),
        ("unknown login", unknown_login.clone()),
        (
            "a standby login",
            ours.replacen(&login_of(&ours), &standby, 1),
        ),
        (
            "wrong password, a neighbour's database",
            with_db(&wrong_password, &env.database(NEIGHBOUR)),
        ),
        (
            "unknown login, a database that is no workspace",
            with_db(&unknown_login, no_workspace),
        ),
    ];
    let answers: BTreeSet<_> = without_password
        .iter()
        .map(|(what, uri)| refusal(what, uri))
        .collect();
    assert_eq!(
        answers.into_iter().collect::<Vec<_>>(),
        [(
            "28P01".to_string(),
            "SASL authentication failed".to_string()
        )],
        "the pooler told the cases apart"
    );
    let foreign_database = [
        (
            "a neighbour's database",
            with_db(&ours, &env.database(NEIGHBOUR)),
        ),
        (
            "a database that is no workspace",
            with_db(&ours, no_workspace),
        ),
        ("the server's own database", with_db(&ours, "postgres")),
        (
            "a neighbour's login, our database",
            with_db(&theirs, &env.database(ATTACKER)),
        ),
    ];
    let answers: BTreeSet<_> = foreign_database
        .iter()
        .map(|(what, uri)| refusal(what, uri))
        .collect();
    assert_eq!(
        answers.len(),
        1,
        "the pooler told the databases apart: {answers:?}"
    );
    // The server's refusal, and nothing from inside a database.
    let (code, message) = answers.into_iter().next().unwrap();
    assert!(
        code.starts_with("28") || code == "08P01",
        "{code} {message}"
    );
    assert!(!message.contains("does not exist"), "{message}");
    connect(&ours).unwrap().batch_execute(READ_QUERY).unwrap();
}

/// 600 bare TCP sockets to the pooler, no credentials sent (0.3.0's pooler took 500 clients
/// in all, so this locked every workspace out): pooled logins of the neighbour still work,
/// and the pooler drops the silent sockets itself (client_login_timeout).
#[test]
fn a_socket_flood_does_not_lock_others_out_of_the_pooler() {
    let mut arena = Arena::new();
    let pooler = ("127.0.0.1", arena.env.status.pooler.port);
    let mut silent: Vec<std::net::TcpStream> = (0..600)
        .map(|i| std::net::TcpStream::connect(pooler).unwrap_or_else(|e| panic!("socket {i}: {e}")))
        .collect();
    for kind in Kind::ALL {
        connect(&arena.env.uri(NEIGHBOUR, kind, true))
            .unwrap()
            .batch_execute(READ_QUERY)
            .unwrap();
    }
    // The pooler closes a socket that never logs in, at most with an ErrorResponse ('E'):
    // reading it ends (EOF or reset).
    let first = &mut silent[0];
    first.set_read_timeout(Some(SAFETY_NET)).unwrap();
    let mut answer = vec![];
    match std::io::Read::read_to_end(first, &mut answer) {
        Ok(_) => assert!(
            answer.is_empty() || answer[0] == b'E',
            "the pooler sent a silent client {answer:?}"
        ),
        Err(e) => assert!(
            matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
            "the pooler did not close a silent socket: {e}"
        ),
    }
    drop(silent);
    arena.assert_nobody_harmed();
}

/// A login dropped by hand: status says `error` (not `active`), provision repairs it, and the
/// revealed URI works again. Status never shows the stored provisioning error's internals.
#[test]
fn status_reports_broken_logins_and_hides_internal_errors() {
    let arena = Arena::new();
    let login = login_of(&arena.env.uri(ATTACKER, Kind::Read, false));
    let mut admin = arena.env.admin("postgres");
    admin
        .batch_execute(&format!("DROP ROLE \"{login}\""))
        .unwrap();
    let st = arena.env.t.status(ATTACKER).unwrap();
    assert_eq!(st.status, "error");
    assert!(st.message.unwrap().contains("run provision"));
    assert_eq!(arena.env.t.provision(ATTACKER).unwrap().status, "active");
    assert_eq!(arena.env.t.status(ATTACKER).unwrap().status, "active");
    arena.env.assert_reads(ATTACKER, true);

    let mut ctl = arena.env.admin("dl_control");
    ctl.execute(
        "UPDATE workspaces SET state = 'error',
                error_message = 'cannot connect to /srv/secret/run:5432/ws_mallory: SELECT 1 FROM pg_authid'
          WHERE id = $1",
        &[&ATTACKER],
    )
    .unwrap();
    let st = arena.env.t.status(ATTACKER).unwrap();
    assert_eq!(st.status, "error");
    let message = st.message.unwrap();
    for internal in ["/srv", "5432", "pg_authid", "SELECT"] {
        assert!(!message.contains(internal), "{message}");
    }
}

/// Tokens die with their workspace: after deprovision, the old token verifies as nobody.
#[test]
fn api_tokens_die_with_their_workspace() {
    let arena = Arena::new();
    let issued = tokens::create(&arena.env.t, ATTACKER).unwrap();
    let store = tokens::TokenStore::open(arena.env.t.clone()).unwrap();
    assert!(store.verify(&issued.token).unwrap().is_some());
    arena.env.t.deprovision(ATTACKER, ATTACKER).unwrap();
    assert_eq!(store.verify(&issued.token).unwrap(), None);
    // Nor after an undelete, nor on a later workspace of the same id.
    arena.env.t.undelete(ATTACKER).unwrap();
    assert_eq!(store.verify(&issued.token).unwrap(), None);
    arena.env.t.deprovision(ATTACKER, ATTACKER).unwrap();
    arena.env.t.purge(ATTACKER, ATTACKER).unwrap();
    arena.env.t.provision(ATTACKER).unwrap();
    assert_eq!(store.verify(&issued.token).unwrap(), None);
}

/// Names are opaque and collision-free: a workspace whose id looks like another's login
/// (`acme_read_a` next to `acme`, which reached each other's data in 0.3.0) shares nothing
/// with it, and no catalog a tenant can read names another customer.
#[test]
fn names_say_nothing_and_cannot_collide() {
    let mut arena = Arena::new();
    let lookalike = format!("{ATTACKER}_read_a");
    arena.env.t.provision(&lookalike).unwrap();
    let ours = arena.env.t.metadata(ATTACKER).unwrap();
    let theirs = arena.env.t.metadata(&lookalike).unwrap();
    assert_ne!(ours.database, theirs.database);
    for md in [&ours, &theirs] {
        assert!(
            md.database.starts_with("dlw_") && md.database.len() == 20,
            "{}",
            md.database
        );
        for role in md.roles.values() {
            assert!(role.login.starts_with(&md.database), "{}", role.login);
            assert!(!role.login.contains(ATTACKER), "{}", role.login);
        }
    }
    // The look-alike's read login cannot reach the attacker's database, and the other way
    // (the local cluster's pg_hba refuses before CONNECT privileges would: 28000).
    let read = arena.env.uri(&lookalike, Kind::Read, false);
    let e = connect(&with_db(&read, &ours.database))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28000", "{e}");
    let read = arena.env.uri(ATTACKER, Kind::Read, false);
    let e = connect(&with_db(&read, &theirs.database))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28000", "{e}");
    // Deprovisioning one leaves the other whole.
    arena.env.t.deprovision(&lookalike, &lookalike).unwrap();
    arena.env.assert_reads(ATTACKER, true);
    // What a tenant can list says nothing of its neighbour (whose session is open).
    for (who, mut client) in arena.attacker_sessions() {
        for catalog in [
            "SELECT string_agg(datname, ',') FROM pg_database",
            "SELECT string_agg(rolname, ',') FROM pg_roles",
            "SELECT string_agg(concat_ws('/', datname, usename, application_name), ',') FROM pg_stat_activity",
            "SELECT string_agg(datname, ',') FROM pg_stat_database",
        ] {
            let rows = client.simple_query(catalog).unwrap();
            let listed = rows
                .iter()
                .find_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .unwrap_or_default();
            assert!(!listed.is_empty(), "{who}: {catalog}");
            assert!(!listed.contains(NEIGHBOUR), "{who}: {catalog}: {listed}");
        }
    }
    arena.assert_nobody_harmed();
}

/// A workspace provisioned before 0.4.0 (`ws_<id>` names) is migrated by `dl-tenancy
/// migrate-names`: its data stays, its sessions end once, its passwords stay, the old names
/// are gone, and a re-run changes nothing.
#[test]
fn legacy_names_are_migrated_and_the_data_stays() {
    let arena = Arena::new();
    let env = &arena.env;
    let mut over = connect(&env.uri(ATTACKER, Kind::Override, false)).unwrap();
    upsert(&mut over, "person:kept", "vip").unwrap();
    drop(over);
    // Put the workspace back as a 0.3.0 tool left it: ws_<id> names, no handle.
    let opaque = env.database(ATTACKER);
    let legacy = format!("ws_{ATTACKER}");
    let mut admin = env.admin("postgres");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{opaque}\" RENAME TO \"{legacy}\""
        ))
        .unwrap();
    for suffix in ["", "_read_a", "_read_b", "_override_a", "_override_b"] {
        admin
            .batch_execute(&format!(
                "ALTER ROLE \"{opaque}{suffix}\" RENAME TO \"{legacy}{suffix}\""
            ))
            .unwrap();
    }
    let mut ctl = env.admin("dl_control");
    ctl.batch_execute(&format!(
        "UPDATE workspaces SET database_name = '{legacy}', handle = NULL WHERE id = '{ATTACKER}';
         UPDATE credentials SET login_name = replace(login_name, '{opaque}', '{legacy}') WHERE workspace_id = '{ATTACKER}';"
    ))
    .unwrap();
    let old_uri = env.uri(ATTACKER, Kind::Read, false);
    assert!(old_uri.contains(&format!("/{legacy}")), "{old_uri}");
    let mut legacy_session = connect(&old_uri).unwrap();
    legacy_session.batch_execute(READ_QUERY).unwrap();

    let report = env.cli(&["migrate-names", "--all"]).json();
    assert_eq!(
        (
            report["migrated"].as_u64(),
            report["already_opaque"].as_u64()
        ),
        (Some(1), Some(1)),
        "{report}"
    );
    assert!(
        legacy_session.batch_execute(READ_QUERY).is_err(),
        "the legacy session survived"
    );
    assert!(connect(&old_uri).is_err());
    let migrated = env.database(ATTACKER);
    assert!(migrated.starts_with("dlw_") && migrated != legacy);
    for pooled in [false, true] {
        let uri = env.uri(ATTACKER, Kind::Read, pooled);
        assert_eq!(
            password_of(&uri),
            password_of(&old_uri),
            "the password stays"
        );
        let mut c = connect(&uri).unwrap();
        let rows = c
            .simple_query(
                "SELECT status FROM dl_resolved.people WHERE identity_key = 'person:kept'",
            )
            .unwrap();
        assert!(
            rows.iter().any(
                |m| matches!(m, postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("vip"))
            ),
            "pooled={pooled}"
        );
    }
    let mut admin = env.admin("postgres");
    let leftovers = count(
        &mut admin,
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'ws\\_%')
                  + (SELECT count(*) FROM pg_database WHERE datname LIKE 'ws\\_%')",
    );
    assert_eq!(leftovers, 0);
    assert_eq!(env.t.status(ATTACKER).unwrap().status, "active");
    let again = env.cli(&["migrate-names", "--all"]).json();
    assert_eq!(again["migrated"].as_u64(), Some(0));
}

/// Open sessions with `uri` into `held` until the server refuses one, which must be for a
/// connection limit (53300); fails if no cap stops it within the database's limit.
fn connect_until_refused(uri: &str, held: &mut Vec<Client>) {
    loop {
        match connect(uri) {
            Ok(c) => held.push(c),
            Err(e) => {
                assert_eq!(sqlstate(&e), "53300", "{e}");
                return;
            }
        }
        assert!(
            held.len() <= DEFAULT_LIMITS.database_connections as usize,
            "no connection cap stopped {} sessions",
            held.len()
        );
    }
}

/// What `SHOW setting` says in a session (simple protocol: works through the pooler too).
fn show(client: &mut Client, setting: &str) -> String {
    client
        .simple_query(&format!("SHOW {setting}"))
        .unwrap()
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("SHOW {setting} returned no row"))
}

/// The database a URI names.
fn database_of(uri: &str) -> String {
    let base = uri.split('?').next().unwrap();
    base[base.rfind('/').unwrap() + 1..].to_string()
}
