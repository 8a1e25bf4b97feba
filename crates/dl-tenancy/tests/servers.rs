//! Several servers: placement on the server with the fewest workspaces, a second cluster
//! (pg-harness, TLS on) with its own PgBouncer reached over TLS with a verified admin URL, and
//! `--admin-url` mode on an existing server.

mod common;

use common::*;
use dl_tenancy_ctl::local::{auth_query, AUTH_DBNAME, POOLER_AUTH_USER};
use dl_tenancy_ctl::Kind;
use pg_harness::{pgbouncer_ini, PgBouncer, PgBouncerIni};

fn bouncer_for(server: &TlsCluster) -> PgBouncer {
    let c = &server.pg;
    let tls = server.pooler_tls_settings();
    let extra: Vec<(&str, &str)> = std::iter::once(AUTH_DBNAME)
        .chain(tls.iter().map(|(k, v)| (*k, v.as_str())))
        .collect();
    PgBouncer::start(|port, dir| {
        let decoy = postgres_protocol::password::scram_sha_256(b"decoy-random-password-0123456789");
        let auth_query = auth_query(&decoy);
        let ini = pgbouncer_ini(&PgBouncerIni {
            dir,
            listen_port: port,
            server_socket_dir: c.socket_dir(),
            server_port: c.port(),
            auth_type: "scram-sha-256",
            auth_user: Some(POOLER_AUTH_USER),
            auth_query: Some(&auth_query),
            pool_mode: "transaction",
            extra: &extra,
        });
        let userlist = format!(
            "\"{POOLER_AUTH_USER}\" \"{}\"\n",
            postgres_protocol::password::scram_sha_256(b"unused-random-password-0123456789")
        );
        (ini, userlist)
    })
    .unwrap()
}

#[test]
fn placement_across_two_servers() {
    let env = Env::new();
    let tls_server = TlsCluster::start();
    let second = &tls_server.pg;
    let bouncer = bouncer_for(&tls_server);
    // The admin reaches the server over TCP with a password, TLS verified against its CA.
    let admin_password = "second-admin-password-9f3a";
    dl_tenancy_ctl::connect(&second.conn_string("postgres", "postgres"), None)
        .unwrap()
        .batch_execute(&format!("ALTER ROLE postgres PASSWORD '{admin_password}'"))
        .unwrap();
    let tcp_admin = format!(
        "postgresql://postgres:{admin_password}@127.0.0.1:{}/postgres",
        second.port()
    );
    let admin_url = with_tls(&tcp_admin, "verify-full", Some(&tls_server.certs.ca_cert));
    // A CA that did not sign the server's certificate: refused, and the error says why.
    let (foreign, foreign_dir) = foreign_ca();
    let bad_url = with_tls(&tcp_admin, "verify-full", Some(&foreign));
    let out = server_add(&env, "bad", &bad_url, &[]);
    assert_eq!(out.error_code(), "server_unreachable");
    assert!(
        out.stderr.contains("not signed by a CA in sslrootcert"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(admin_password), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(foreign_dir);
    // The server's admin URL from a file (a URL with a password must not be an argument).
    let out = server_add(
        &env,
        "second",
        &admin_url,
        &[
            "--pooler-port",
            &bouncer.port().to_string(),
            "--ca-file",
            tls_server.certs.ca_cert.to_str().unwrap(),
        ],
    )
    .json();
    assert_eq!(out["id"], "second");
    assert_eq!(out["direct"]["port"], second.port());
    assert_eq!(out["pooled"]["port"], bouncer.port());
    assert_eq!(out["pooled"]["host"], "127.0.0.1");
    assert!(out["template_version"].is_string(), "{out}");
    assert!(
        !out.to_string().contains("postgres "),
        "no admin URL in output"
    );
    // The pooler's auth user on the second server (the tool does not manage that pooler).
    let mut admin2 = dl_tenancy_ctl::connect(&admin_url, None).unwrap();
    admin2
        .batch_execute(&format!(
            "CREATE ROLE {POOLER_AUTH_USER} LOGIN IN ROLE dl_pooler_auth"
        ))
        .unwrap();

    for ws in ["p1", "p2", "p3", "p4"] {
        env.cli(&["provision", "--workspace", ws]).json();
    }
    let servers = env.cli(&["server", "list"]).json();
    let counts: Vec<(String, i64)> = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["workspaces"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("local".to_string(), 2), ("second".to_string(), 2)]
    );

    let on_second: Vec<String> = ["p1", "p2", "p3", "p4"]
        .iter()
        .filter(|w| env.t.metadata(w).unwrap().server_id == "second")
        .map(|w| w.to_string())
        .collect();
    assert_eq!(on_second.len(), 2);
    let ws = &on_second[0];
    let md = env
        .cli(&["connection-uris", "metadata", "--workspace", ws])
        .json();
    assert_eq!(md["direct"]["port"], second.port());
    let db = env.database(ws);
    assert_eq!(md["project_id"], format!("second/{db}"));
    assert!(databases(&mut admin2).contains(&db));
    assert!(!databases(&mut env.admin("postgres")).contains(&db));

    for pooled in [false, true] {
        // Tenants verify the second server with the CA given to `server add`.
        let reveal = env.t.reveal(ws, Kind::Read, pooled).unwrap();
        assert_eq!(reveal.sslmode, "verify-full");
        assert_eq!(
            reveal.ca_certificate.as_deref(),
            Some(
                std::fs::read_to_string(&tls_server.certs.ca_cert)
                    .unwrap()
                    .as_str()
            )
        );
        let over = env.uri(ws, Kind::Override, pooled);
        let mut o = connect(&over).unwrap();
        upsert(&mut o, "person:9", "ok").unwrap();
        o.batch_execute(CUSTOM_TABLE).unwrap();
        let read = env.uri(ws, Kind::Read, pooled);
        let mut r = connect(&read).unwrap();
        assert_eq!(r.query_typed(READ_QUERY, &[]).unwrap().len(), 1);
        // No pg_hba help on this server: CONNECT privileges alone keep tenants out.
        let other = &on_second[1];
        for target in [env.database(other), "postgres".into(), "template1".into()] {
            let e = connect(&with_db(&read, &target)).map(|_| ()).unwrap_err();
            if !pooled {
                assert_eq!(sqlstate(&e), "42501", "{target}: {e}");
            }
        }
    }
    // A second-server credential is useless on the local server, and vice versa.
    let local_ws = ["p1", "p2", "p3", "p4"]
        .into_iter()
        .find(|w| !on_second.contains(&w.to_string()))
        .unwrap();
    let u = env.uri(ws, Kind::Read, false);
    let moved = u.replace(
        &format!(":{}/", second.port()),
        &format!(":{}/", env.status.direct.port),
    );
    assert!(connect(&moved).is_err());
    let u = env.uri(local_ws, Kind::Read, false);
    let moved = u.replace(
        &format!(":{}/", env.status.direct.port),
        &format!(":{}/", second.port()),
    );
    assert!(connect(&moved).is_err());

    // Deprovision on the second server.
    let read_login = env.t.metadata(ws).unwrap().roles["read"].login.clone();
    let d = env
        .cli(&["deprovision", "--workspace", ws, "--confirm", ws])
        .json();
    assert_eq!(d["status"], "suspended");
    assert!(databases(&mut admin2).contains(&db));
    let d = env
        .cli(&["purge", "--workspace", ws, "--confirm", ws])
        .json();
    assert_eq!(d["dropped_database"], true);
    assert!(!databases(&mut admin2).contains(&db));
    assert!(!role_exists(&mut admin2, &read_login));
    // The next workspace goes to the emptier server.
    env.t.provision("p5").unwrap();
    assert_eq!(env.t.metadata("p5").unwrap().server_id, "second");
    drop(bouncer);
}

#[test]
fn admin_url_mode_on_an_existing_server() {
    // TLS on, but registered without its CA: tenants get `sslmode=require`.
    let tls_server = TlsCluster::start();
    let server = &tls_server.pg;
    let dir = pg_harness::temp_dir("dl-tenancy-admin-url").unwrap();
    let admin_url = server.conn_string("postgres", "postgres");
    let key = "11".repeat(32);
    let env_vars = [
        ("DL_TENANCY_ADMIN_URL", admin_url.as_str()),
        ("DL_TENANCY_SECRET_KEY", key.as_str()),
    ];
    let cli = |args: &[&str]| cli_in(&dir, args, &env_vars);
    // The arguments of `connection-uris reveal` for the workspace `remote`.
    let reveal = |kind| {
        [
            "connection-uris",
            "reveal",
            "--workspace",
            "remote",
            "--kind",
            kind,
        ]
    };
    // Opening the control plane changes nothing: before `init`, commands say what to run.
    let before = cli(&["status", "--workspace", "remote"]);
    assert_eq!(before.error_code(), "server_unreachable");
    assert!(
        before.stderr.contains("dl-tenancy init"),
        "{}",
        before.stderr
    );
    let mut admin = dl_tenancy_ctl::connect(&admin_url, None).unwrap();
    let control_dbs = count(
        &mut admin,
        "SELECT count(*) FROM pg_database WHERE datname = 'dl_control'",
    );
    assert_eq!(
        control_dbs, 0,
        "a command before init created the control database"
    );
    // init, twice: the second changes nothing.
    for _ in 0..2 {
        let servers = cli(&["init"]).json();
        assert_eq!(servers["servers"][0]["id"], "primary", "{servers}");
        assert_eq!(servers["servers"].as_array().unwrap().len(), 1);
    }
    let st = cli(&["provision", "--workspace", "remote"]).json();
    assert_eq!(st["status"], "active");
    assert_eq!(st["server_id"], "primary");
    assert!(!dir.join("secret.key").exists(), "key from the environment");
    let v = cli(&reveal("override")).json();
    let uri = v["uri"].as_str().unwrap();
    assert_eq!(v["sslmode"], "require");
    assert!(v["ca_certificate"].is_null(), "{v}");
    assert!(uri.ends_with("?sslmode=require"), "{uri}");
    let db = v["database"].as_str().unwrap();
    assert!(db.starts_with("dlw_"), "{db}");
    assert!(
        uri.contains(&format!("@localhost:{}/{db}", server.port()))
            || uri.contains(&format!(":{}/{db}", server.port())),
        "{uri}"
    );
    // Tenants connect over TCP; the harness cluster answers SCRAM on 127.0.0.1.
    let uri = uri.replace("@localhost:", "@127.0.0.1:");
    let mut c = connect(&uri).unwrap();
    upsert(&mut c, "k", "s").unwrap();
    c.batch_execute(CUSTOM_TABLE).unwrap();
    // No pooler registered for this server.
    let out = cli(&[&reveal("read")[..], &["--pooled"]].concat());
    assert_eq!(out.error_code(), "pooler_not_configured");
    // The top-level flag works as well as the environment; a wrong key cannot decrypt.
    let out = cli_in(
        &dir,
        &[&["--admin-url", &admin_url][..], &reveal("read")].concat(),
        &[("DL_TENANCY_SECRET_KEY", &"22".repeat(32))],
    );
    assert_eq!(out.error_code(), "secret_key");
    let list = cli(&["list"]).json();
    assert_eq!(list["workspaces"][0]["workspace"], "remote");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Passwords never ride on the command line, where every user of the machine reads them: a
/// connection string with one, given as an argument, is refused before anything is done.
#[test]
fn admin_urls_with_passwords_stay_off_the_command_line() {
    let dir = pg_harness::temp_dir("dl-tenancy-argv").unwrap();
    let with_password = "postgresql://admin:hunter2@127.0.0.1:1/postgres";
    let server_add = |url| vec!["server", "add", "--name", "db2", "--admin-url", url];
    for args in [
        vec!["--admin-url", with_password, "status", "--workspace", "a"],
        server_add(with_password),
        server_add("host=127.0.0.1 user=admin password=hunter2"),
        server_add("postgresql://admin:hunter2@127.0.0.1:1/postgres?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt"),
    ] {
        let out = cli_in(&dir, &args, &[]);
        assert_eq!(out.error_code(), "invalid_argument", "{args:?}");
        assert_eq!(out.code, 2);
        assert!(out.stderr.contains("process list"), "{}", out.stderr);
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
