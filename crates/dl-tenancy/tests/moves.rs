//! Moving workspaces between servers: the pooled URI kept and no acknowledged write lost
//! while an app writes, crashes at each step undone or finished, both ways of copying
//! (streamed by logical replication, or dumped in the pause), and a hostile tenant against a
//! move in flight. Real clusters, real PgBouncer, real tenant logins.

mod common;

use common::*;
use dl_tenancy_ctl::Kind;
use postgres::{Client, NoTls};

/// A superuser session on the second cluster.
fn second_admin(second: &TlsCluster, db: &str) -> Client {
    Client::connect(&second.pg.conn_string("postgres", db), NoTls).unwrap()
}

/// Nothing of a move's stream is left on a server: no slot, subscription or move login, and
/// (in the workspace database, when it is there) no publication or marker table.
fn assert_no_stream_left(admin: &mut Client, ws_db: Option<&mut Client>, label: &str) {
    let left = count(
        admin,
        "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_subscription)
              + (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'dl\\_move\\_%')",
    );
    assert_eq!(left, 0, "{label}: slots, subscriptions or move logins left");
    if let Some(db) = ws_db {
        let left = count(
            db,
            "SELECT (SELECT count(*) FROM pg_publication)
                  + (SELECT count(*) FROM pg_class WHERE relname LIKE 'dl\\_move\\_%')",
        );
        assert_eq!(left, 0, "{label}: publications or marker tables left");
    }
}

/// An app writing overrides through the pooled URI, one key after another, retrying a key
/// until the write is acknowledged. Returns the acknowledged keys when stopped.
struct Writer(pg_harness::AppLoop<String>);

impl Writer {
    fn start(uri: String) -> Writer {
        let sep = if uri.contains('?') { '&' } else { '?' };
        let uri = format!("{uri}{sep}connect_timeout=5");
        let mut client: Option<Client> = None;
        Writer(pg_harness::AppLoop::start(move |i| {
            let key = format!("moving:{i}");
            if client.is_none() {
                client = connect(&uri).ok();
            }
            let written = client.as_mut().map(|c| upsert(c, &key, "acked"));
            if let Some(Ok(_)) = written {
                return Ok(key);
            }
            client = None;
            Err(())
        }))
    }

    /// Wait (by observed state) until `n` writes more than now are acknowledged.
    fn wait_for_more(&self, n: usize) {
        self.0.wait_for_more(n, SAFETY_NET).unwrap();
    }

    fn stop(self) -> (Vec<String>, usize) {
        let (acked, errors) = self.0.stop().unwrap();
        (acked.into_iter().map(|(k, _)| k).collect(), errors)
    }
}

/// `ws` and `beside` provisioned on the local server, the second server added, and `sql` (the
/// tenant's own objects) run by `ws`'s override login: the second server and `ws`'s database.
fn ready_to_move(env: &Env, ws: &str, beside: &str, sql: &str) -> (TlsCluster, String) {
    env.t.provision(ws).unwrap();
    env.t.provision(beside).unwrap();
    let second = add_second(env);
    let db = env.database(ws);
    env.run_as_override(ws, sql);
    (second, db)
}

#[test]
fn move_keeps_the_pooled_uri_and_every_acknowledged_write() {
    let env = Env::new();
    let t = &env.t;
    let (second, db) = ready_to_move(
        &env,
        "mover",
        "stays",
        &format!(
            "{CUSTOM_OBJECTS}; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO dl_tenant_read"
        ),
    );
    let pooled = env.uri("mover", Kind::Override, true);
    let pooled_read = env.uri("mover", Kind::Read, true);
    let old_direct = env.uri("mover", Kind::Override, false);

    let writer = Writer::start(pooled.clone());
    writer.wait_for_more(20);
    let m = env
        .cli(&["move", "--workspace", "mover", "--to", "second"])
        .json();
    eprintln!(
        "move: write-unavailable window {} ms (from PAUSE to RESUME)",
        m["paused_ms"]
    );
    assert_eq!(m["status"], "moved", "{m}");
    assert_eq!(m["method"], "logical", "{m}");
    assert_eq!(m["rows"]["tenant_custom.segments"], 40);
    // The resolved store streamed as it was (an apply worker fires no triggers).
    assert!(
        m["rows"]["dl_internal.resolved_people"].as_i64().unwrap() > 20,
        "{m}"
    );
    writer.wait_for_more(20);
    let (acked, errors) = writer.stop();
    eprintln!(
        "{} writes acknowledged, {errors} failed and retried",
        acked.len()
    );

    // The same pooled URIs; the direct one names the new server.
    assert_eq!(env.uri("mover", Kind::Override, true), pooled);
    assert_eq!(env.uri("mover", Kind::Read, true), pooled_read);
    let direct = env.uri("mover", Kind::Override, false);
    assert!(
        direct.contains(&format!(":{}/", second.pg.port())),
        "{direct}"
    );
    assert_eq!(t.metadata("mover").unwrap().server_id, "second");
    assert_eq!(t.status("mover").unwrap().status, "active");
    // Every acknowledged write is on the new server.
    let mut moved =
        postgres::Client::connect(&second.pg.conn_string("postgres", &db), postgres::NoTls)
            .unwrap();
    let keys: std::collections::BTreeSet<String> = moved
        .query(
            "SELECT identity_key FROM dl_override.person_overrides WHERE identity_key LIKE 'moving:%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for key in &acked {
        assert!(keys.contains(key), "acknowledged write {key} lost");
    }
    assert_eq!(
        count(&mut moved, "SELECT count(*) FROM tenant_custom.segments"),
        40
    );
    // What the tenant set outside tenant_custom moved too.
    assert_eq!(count(&mut moved, "SELECT count(*) FROM pg_default_acl"), 1);
    // Reads through the unchanged pooled URI and the new direct one see the new server.
    for uri in [&pooled_read, &direct] {
        let mut c = connect(uri).unwrap();
        assert!(!c.query_typed(READ_QUERY, &[]).unwrap().is_empty());
    }
    // The pooler reaches the new server over TLS it verifies against the server's CA.
    let tls = std::fs::read_to_string(env.dir.join("pgbouncer/server_tls.ini")).unwrap();
    assert!(tls.contains("server_tls_sslmode = verify-full"), "{tls}");
    let pooler_sessions = moved
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = $1 AND a.client_addr IS NOT NULL AND a.pid <> pg_backend_pid()",
            &[&db],
        )
        .unwrap();
    let (sessions, with_tls): (i64, i64) = (pooler_sessions.get(0), pooler_sessions.get(1));
    assert!(
        sessions > 0 && sessions == with_tls,
        "{with_tls} of {sessions} pooled sessions use TLS"
    );
    // The source copy is gone; the old direct URI is refused.
    let mut local = env.admin("postgres");
    assert!(!databases(&mut local).contains(&db));
    assert!(connect(&old_direct).is_err());
    assert!(databases(&mut env.admin("postgres")).contains(&env.database("stays")));

    // Not on a server that holds workspaces.
    assert_eq!(
        env.cli(&["server", "remove", "second"]).error_code(),
        "conflict"
    );
    assert_eq!(
        env.cli(&["server", "remove", "local"]).error_code(),
        "conflict"
    );
    // Drain the second server: back to the local one, pooled URI still the same.
    let d = env.cli(&["server", "drain", "second"]).json();
    assert_eq!(d["moved"][0]["workspace"], "mover", "{d}");
    assert_eq!(d["moved"][0]["to_server"], "local");
    assert_eq!(d["moved"][0]["method"], "logical", "{d}");
    assert_no_stream_left(&mut env.admin("postgres"), None, "after the drain");
    assert_no_stream_left(
        &mut second_admin(&second, "postgres"),
        None,
        "after the drain",
    );
    assert_eq!(t.metadata("mover").unwrap().server_id, "local");
    assert_eq!(env.uri("mover", Kind::Override, true), pooled);
    let mut c = connect(&pooled).unwrap();
    upsert(&mut c, "after-drain", "ok").unwrap();
    // Its route now names the local server's socket again, as the `*` entry does.
    let routes = std::fs::read_to_string(env.dir.join("pgbouncer/routes.ini")).unwrap();
    let route = routes.lines().find(|l| l.starts_with(&db)).unwrap();
    assert!(
        route.contains(&format!("port={} ", env.status.postgres.port)),
        "{route}"
    );
    assert!(!route.contains("auth_user"), "{route}");
    let list = env.cli(&["server", "remove", "second"]).json();
    let ids: Vec<&str> = list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["local"]);

    // A server registered without its CA: the pooler could not verify it, so nothing that
    // the local pooler serves moves there; the workspace stays where it is and works.
    register(&env, "unverified", &second, false);
    let out = env.cli(&["move", "--workspace", "mover", "--to", "unverified"]);
    assert_eq!(out.error_code(), "invalid_argument");
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);
    assert_eq!(t.metadata("mover").unwrap().server_id, "local");
    upsert(&mut connect(&pooled).unwrap(), "after-refusal", "ok").unwrap();
}

/// A move killed half-way is undone (before the switch) or finished (after it) by running
/// it again; the workspace works throughout what follows.
#[test]
fn a_move_killed_half_way_is_undone_or_finished_on_rerun() {
    let env = Env::new();
    let t = &env.t;
    t.provision("crashmove").unwrap();
    let second = add_second(&env);
    let db = env.database("crashmove");
    let pooled = env.uri("crashmove", Kind::Override, true);
    upsert(&mut connect(&pooled).unwrap(), "before", "ok").unwrap();
    let args = ["move", "--workspace", "crashmove", "--to", "second"];
    let rounds = [
        ("logical", "after_move_sync"),
        ("logical", "after_move_pause"),
        ("logical", "after_move_copy"),
        ("copy", "after_move_pause"),
        ("copy", "after_move_copy"),
    ];
    for (method, point) in rounds {
        let mut with_method = args.to_vec();
        with_method.extend(["--method", method]);
        let out = env.cli_env(&with_method, &[("DL_TENANCY_FAULT", point)]);
        assert_eq!(out.code, 97, "{method} {point}: {out:?}");
        // Still recorded on the local server; the re-run undoes the attempt first.
        assert_eq!(t.metadata("crashmove").unwrap().server_id, "local");
        let m = env.cli(&with_method).json();
        assert_eq!(m["recovered"], "undone", "{method} {point}: {m}");
        assert_eq!(
            (m["status"].as_str(), m["method"].as_str()),
            (Some("moved"), Some(method))
        );
        let label = format!("{method} {point}");
        assert_no_stream_left(&mut env.admin("postgres"), None, &label);
        assert_no_stream_left(
            &mut second_admin(&second, "postgres"),
            Some(&mut second_admin(&second, &db)),
            &label,
        );
        upsert(&mut connect(&pooled).unwrap(), &label, "ok").unwrap();
        // And back, for the next round.
        env.cli(&["move", "--workspace", "crashmove", "--to", "local"])
            .json();
    }
    // Killed after the switch: the re-run finishes (the source copy goes).
    let out = env.cli_env(&args, &[("DL_TENANCY_FAULT", "after_move_switch")]);
    assert_eq!(out.code, 97, "{out:?}");
    assert_eq!(t.metadata("crashmove").unwrap().server_id, "second");
    upsert(&mut connect(&pooled).unwrap(), "switched", "ok").unwrap();
    let m = env.cli(&args).json();
    assert_eq!(
        (m["status"].as_str(), m["recovered"].as_str()),
        (Some("moved"), Some("finished"))
    );
    assert!(!databases(&mut env.admin("postgres")).contains(&db));
    let mut moved =
        postgres::Client::connect(&second.pg.conn_string("postgres", &db), postgres::NoTls)
            .unwrap();
    assert_eq!(
        count(
            &mut moved,
            "SELECT count(*) FROM dl_override.person_overrides"
        ),
        7,
        "before, one per killed attempt, and one after the switch"
    );
    // A move that fails on its own (the target has a database of that name) changes nothing.
    t.provision("blocked").unwrap();
    let blocked_db = env.database("blocked");
    postgres::Client::connect(
        &second.pg.conn_string("postgres", "postgres"),
        postgres::NoTls,
    )
    .unwrap()
    .batch_execute(&format!("CREATE DATABASE {blocked_db}"))
    .unwrap();
    let out = env.cli(&["move", "--workspace", "blocked", "--to", "second"]);
    assert_eq!(out.error_code(), "conflict");
    assert_eq!(t.metadata("blocked").unwrap().server_id, "local");
    for pooled in [true, false] {
        connect(&env.uri("blocked", Kind::Read, pooled))
            .unwrap()
            .batch_execute(READ_QUERY)
            .unwrap();
    }
}

/// The pooler's admin console (which a move drives) and the auth user of moved workspaces'
/// routes are out of a tenant's reach: its logins cannot open the console, and neither
/// tool-owned pooler user accepts a tenant's password.
#[test]
fn the_pooler_console_is_out_of_tenant_reach() {
    let env = Env::new();
    env.t.provision("tenant").unwrap();
    for kind in Kind::ALL {
        let uri = env.uri("tenant", kind, true);
        // Its own login on the console database: PgBouncer refuses non-admin users.
        let e = connect(&with_db(&uri, "pgbouncer"))
            .map(|_| ())
            .unwrap_err();
        let why = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        eprintln!("{kind} on the console: {why}");
        assert_eq!(sqlstate(&e), "08P01", "{kind}: {e:?}");
        let (mut cfg, tls) = dl_tenancy_ctl::connection::client_config(&uri).unwrap();
        for user in [
            dl_tenancy_ctl::POOLER_ADMIN_USER,
            dl_tenancy_ctl::POOLER_REMOTE_AUTH_USER,
        ] {
            for db in ["pgbouncer", &env.database("tenant")] {
                cfg.user(user).dbname(db);
                let e = cfg.connect(tls.clone()).map(|_| ()).unwrap_err();
                let why = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_default();
                eprintln!("{user} with a tenant's password on {db}: {why}");
                assert!(
                    ["08P01", "28P01"].contains(&sqlstate(&e).as_str()),
                    "{user} on {db}: {e:?}"
                );
            }
        }
    }
    // The workspace still works through the pooler.
    env.assert_reads("tenant", true);
}

/// While a move streams (stopped after the first copy, before the pause), the tenant attacks
/// the stream from its logins, direct and pooled, and from the target server: every attempt
/// is refused with 42501 (or 28P01 for the move's login), the workspace keeps taking writes,
/// and the re-run undoes the attempt and moves, leaving nothing of the stream behind.
#[test]
fn a_tenant_cannot_touch_a_move_in_flight() {
    let env = Env::new();
    let (second, db) = ready_to_move(&env, "victim", "neighbour", CUSTOM_OBJECTS);
    // A neighbour of the target server.
    env.cli(&["move", "--workspace", "neighbour", "--to", "second"])
        .json();
    let to_second = ["move", "--workspace", "victim", "--to", "second"];
    let out = env.cli_env(&to_second, &[("DL_TENANCY_FAULT", "after_move_sync")]);
    assert_eq!(out.code, 97, "{out:?}");
    let handle: String = env
        .admin_ws("victim")
        .query_one("SELECT pubname::text FROM pg_publication", &[])
        .unwrap()
        .get(0);
    assert!(handle.starts_with("dl_move_"), "{handle}");
    assert_eq!(
        count(
            &mut second_admin(&second, "postgres"),
            &format!("SELECT count(*) FROM pg_subscription WHERE subname = '{handle}'")
        ),
        1
    );

    for pooled in [false, true] {
        let mut c = connect(&env.uri("victim", Kind::Override, pooled)).unwrap();
        // Live while the data streams.
        upsert(&mut c, &format!("streaming-{pooled}"), "ok").unwrap();
        for sql in [
            format!("DROP PUBLICATION {handle}"),
            format!("ALTER PUBLICATION {handle} ADD TABLE tenant_custom.segments"),
            format!("ALTER PUBLICATION {handle} OWNER TO CURRENT_USER"),
            format!("SELECT pg_drop_replication_slot('{handle}')"),
            format!("SELECT count(*) FROM pg_logical_slot_peek_changes('{handle}', NULL, NULL)"),
            format!("INSERT INTO dl_internal.{handle} VALUES (true)"),
            format!("ALTER ROLE {handle} PASSWORD 'mine'"),
            "CREATE PUBLICATION mine FOR TABLE dl_override.person_overrides".into(),
        ] {
            let e = c.batch_execute(&sql).unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "pooled={pooled} {sql}: {e}");
        }
    }
    // The move's login does not take a tenant's password.
    let read = env.uri("victim", Kind::Read, false);
    let creds = &read[read.find("//").unwrap() + 2..read.find('@').unwrap()];
    let password = creds.split_once(':').unwrap().1;
    let as_mover = read.replacen(creds, &format!("{handle}:{password}"), 1);
    let e = connect(&as_mover).err().expect("the move's login refused");
    assert_eq!(sqlstate(&e), "28P01", "{e}");

    // On the target: the copy is shut to the tenant until the switch, and the subscription's
    // connection string (it holds the move login's password) is not readable by a neighbour.
    let local_port = format!(":{}/", env.status.direct.port);
    let second_port = format!(":{}/", second.pg.port());
    let at_target = with_tls(
        &env.uri("victim", Kind::Override, false)
            .replace(&local_port, &second_port),
        "verify-full",
        Some(&second.certs.ca_cert),
    );
    let e = connect(&at_target).err().expect("the target copy refused");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    for pooled in [false, true] {
        let mut on_target = connect(&env.uri("neighbour", Kind::Override, pooled)).unwrap();
        let e = on_target
            .batch_execute("SELECT subconninfo FROM pg_catalog.pg_subscription")
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e}");
    }

    // The re-run undoes the attempt, then moves; the writes made while streaming arrived.
    let m = env.cli(&to_second).json();
    assert_eq!(
        (
            m["recovered"].as_str(),
            m["status"].as_str(),
            m["method"].as_str()
        ),
        (Some("undone"), Some("moved"), Some("logical")),
        "{m}"
    );
    let mut moved = second_admin(&second, &db);
    assert_eq!(
        count(
            &mut moved,
            "SELECT count(*) FROM dl_override.person_overrides WHERE identity_key LIKE 'streaming-%'"
        ),
        2
    );
    assert_eq!(
        count(&mut moved, "SELECT count(*) FROM tenant_custom.segments"),
        40
    );
    assert_no_stream_left(&mut env.admin("postgres"), None, "after the move");
    assert_no_stream_left(
        &mut second_admin(&second, "postgres"),
        Some(&mut moved),
        "after the move",
    );
    upsert(
        &mut connect(&env.uri("victim", Kind::Override, true)).unwrap(),
        "after",
        "ok",
    )
    .unwrap();
}

/// A source server without `wal_level = logical` cannot stream: `--method logical` is refused
/// before anything is made, and `auto` copies inside the pause and says why.
#[test]
fn a_source_without_logical_wal_copies_and_says_why() {
    let env = Env::new();
    let t = &env.t;
    t.provision("plainwal").unwrap();
    let second = add_second_with_wal_level(&env, "replica");
    env.cli(&[
        "move",
        "--workspace",
        "plainwal",
        "--to",
        "second",
        "--method",
        "copy",
    ])
    .json();
    let pooled = env.uri("plainwal", Kind::Override, true);
    upsert(&mut connect(&pooled).unwrap(), "on-second", "ok").unwrap();
    let back = ["move", "--workspace", "plainwal", "--to", "local"];
    let mut logical = back.to_vec();
    logical.extend(["--method", "logical"]);
    let out = env.cli(&logical);
    assert_eq!(out.error_code(), "invalid_argument", "{out:?}");
    assert!(out.stderr.contains("wal_level = replica"), "{}", out.stderr);
    assert_eq!(t.metadata("plainwal").unwrap().server_id, "second");
    assert!(!databases(&mut env.admin("postgres")).contains(&env.database("plainwal")));
    upsert(&mut connect(&pooled).unwrap(), "after-refusal", "ok").unwrap();
    let m = env.cli(&back).json();
    assert_eq!(
        (m["status"].as_str(), m["method"].as_str()),
        (Some("moved"), Some("copy")),
        "{m}"
    );
    assert!(
        m["method_note"]
            .as_str()
            .unwrap()
            .contains("wal_level = replica"),
        "{m}"
    );
    let mut c = connect(&pooled).unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM dl_override.person_overrides"),
        2
    );
    assert_no_stream_left(
        &mut second_admin(&second, "postgres"),
        None,
        "after the copy",
    );
}
