//! Fleet operations: soft delete (deprovision suspends, undelete, purge, the sweep), usage per
//! workspace, backup and restore. Real clusters, real PgBouncer, real tenant logins; the
//! tenant is hostile.

mod common;

use common::http::{check, cluster, Api, Server};
use common::*;
use dl_tenancy_ctl::progress::Progress;
use dl_tenancy_ctl::{tokens, Kind, MoveMethod};
use postgres::Client;
use serde_json::{json, Value};

/// Every URI of a workspace: (label, uri) for read/override, direct/pooled.
fn uris(env: &Env, ws: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    for kind in Kind::ALL {
        for pooled in [false, true] {
            out.push((format!("{kind} pooled={pooled}"), env.uri(ws, kind, pooled)));
        }
    }
    out
}

/// A login with this URI is refused (direct: an authentication SQLSTATE; pooled: PgBouncer
/// fails the SCRAM exchange against its decoy, or the server refuses the pool's login).
fn assert_refused(label: &str, uri: &str) {
    match connect(uri) {
        Ok(mut c) => {
            // PgBouncer may accept the client before it needs a server connection: the first
            // statement is where the server refuses.
            let e = c
                .simple_query("SELECT 1")
                .expect_err(&format!("{label}: a suspended login still runs statements"));
            eprintln!("{label}: refused at the first statement: {e}");
        }
        Err(e) => {
            if let Some(code) = e.code() {
                assert!(
                    ["28000", "28P01", "08P01", "08006"].contains(&code.code()),
                    "{label}: {e}"
                );
            }
        }
    }
}

/// Provisions `acme` and `beside`; `acme` gets `keys` (each set to `value`) and the custom
/// table through a pooled override login. Returns acme's database and that login, still open.
fn acme_with_rows(env: &Env, beside: &str, keys: &[&str], value: &str) -> (String, Client) {
    env.t.provision("acme").unwrap();
    env.t.provision(beside).unwrap();
    let db = env.database("acme");
    let mut over = connect(&env.uri("acme", Kind::Override, true)).unwrap();
    for key in keys {
        upsert(&mut over, key, value).unwrap();
    }
    over.batch_execute(CUSTOM_TABLE).unwrap();
    (db, over)
}

#[test]
fn deprovision_suspends_undelete_brings_back_purge_drops() {
    let env = Env::new();
    let t = &env.t;
    let (db, _over) = acme_with_rows(&env, "other", &["person:1"], "kept");
    let old_uris = uris(&env, "acme");
    let mut open: Vec<(String, Client)> = old_uris
        .iter()
        .map(|(l, u)| (l.clone(), connect(u).unwrap()))
        .collect();
    for (_, c) in &mut open {
        c.simple_query("SELECT 1").unwrap();
    }
    let token = tokens::create(t, "acme").unwrap();
    let store = tokens::TokenStore::open(t.clone()).unwrap();

    // Without the confirmation nothing happens.
    let out = env.cli(&["deprovision", "--workspace", "acme"]);
    assert_eq!(out.error_code(), "confirmation_required");
    assert_eq!(t.status("acme").unwrap().status, "active");
    let deprovision = |retention| {
        env.cli(&[
            "deprovision",
            "--workspace",
            "acme",
            "--confirm",
            "acme",
            "--retention",
            retention,
        ])
    };
    assert_eq!(deprovision("367d").error_code(), "invalid_argument");

    let s = deprovision("7d").json();
    eprintln!("{s:#}");
    assert_eq!(s["status"], "suspended");
    assert_eq!(s["database"], db.as_str());
    assert_eq!(s["retention_seconds"], 7 * 86400);
    assert!(s["sessions_ended"].as_i64().unwrap() >= 4, "{s}");
    // Logins refused at once: open sessions (direct and pooled) are gone, new ones refused.
    for (label, c) in &mut open {
        assert!(c.simple_query("SELECT 1").is_err(), "{label} survived");
    }
    for (label, uri) in &old_uris {
        assert_refused(label, uri);
    }
    assert_eq!(store.verify(&token.token).unwrap(), None);
    // Recorded: status and list say suspended, with the purge time 7 days on.
    let st = t.status("acme").unwrap();
    assert_eq!(st.status, "suspended");
    assert_eq!(st.database.as_deref(), Some(db.as_str()));
    let purge_after = st.purge_after.clone().expect("a purge time");
    let mut ctl = env.admin("dl_control");
    let (state, days): (String, f64) = {
        let r = ctl
            .query_one(
                "SELECT state, extract(epoch FROM purge_after - suspended_at)::float8 / 86400,
                        purge_after::text FROM workspaces WHERE id = 'acme'",
                &[],
            )
            .unwrap();
        assert_eq!(r.get::<_, String>(2), purge_after);
        (r.get(0), r.get(1))
    };
    assert_eq!((state.as_str(), days), ("suspended", 7.0));
    let listed = t.list().unwrap();
    assert!(listed
        .workspaces
        .iter()
        .any(|w| w.workspace == "acme" && w.state == "suspended"));
    // The data is kept.
    let mut admin_db = env.admin(&db);
    assert_eq!(
        count(
            &mut admin_db,
            "SELECT count(*) FROM dl_override.person_overrides"
        ),
        1
    );
    drop(admin_db);
    // Everything a tenant could call refuses; provision does not revive it.
    for e in [
        t.reveal("acme", Kind::Read, true).unwrap_err(),
        t.metadata("acme").unwrap_err(),
        t.provision("acme").unwrap_err(),
        t.rotate("acme", Kind::Read, 0).unwrap_err(),
    ] {
        assert_eq!(e.code(), "workspace_suspended", "{e}");
        assert_eq!(e.http_status(), 409);
    }
    assert_eq!(t.status("acme").unwrap().status, "suspended");
    // Purge refuses a workspace that is not suspended.
    let out = env.cli(&["purge", "--workspace", "other", "--confirm", "other"]);
    assert_eq!(out.error_code(), "not_suspended");
    assert_eq!(t.status("other").unwrap().status, "active");
    let out = env.cli(&["undelete", "--workspace", "nobody"]);
    assert_eq!(out.error_code(), "not_suspended");
    let out = env.cli(&["purge", "--workspace", "acme"]);
    assert_eq!(out.error_code(), "confirmation_required");
    // The sweep leaves a workspace whose retention is not over.
    assert!(t.purge_expired().unwrap().is_empty());

    // Idempotent: the same purge time, nothing more to end.
    let again = t.suspend("acme", "acme", 60).unwrap();
    assert_eq!(again.purge_after.as_deref(), Some(purge_after.as_str()));

    // Undelete: active, the data there, fresh passwords (the old URIs stay refused).
    let back = env.cli(&["undelete", "--workspace", "acme"]).json();
    assert_eq!(back["status"], "active");
    assert_eq!(back["database"], db.as_str());
    assert_eq!(t.status("acme").unwrap().status, "active");
    for (label, uri) in &old_uris {
        assert_refused(label, uri);
    }
    for (label, uri) in uris(&env, "acme") {
        let mut c = connect(&uri).unwrap_or_else(|e| panic!("{label}: {e}"));
        let rows = c
            .query_typed(READ_QUERY, &[])
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(rows.len(), 1, "{label}: the override is back");
        if label.starts_with("override") {
            assert_eq!(
                count(
                    &mut c,
                    "SELECT count(*) FROM tenant_custom.account_segments"
                ),
                0,
                "{label}: the custom table is back"
            );
        }
    }
    // The old token stays revoked.
    assert_eq!(store.verify(&token.token).unwrap(), None);
    // Undelete again: a no-op.
    assert_eq!(t.undelete("acme").unwrap().status, "active");

    // Deprovision and purge: dropped, for good.
    let read_login = t.metadata("acme").unwrap().roles["read"].login.clone();
    t.deprovision("acme", "acme").unwrap();
    let p = env
        .cli(&["purge", "--workspace", "acme", "--confirm", "acme"])
        .json();
    assert_eq!(p["status"], "deleted");
    assert_eq!(p["dropped_database"], true);
    let mut admin = env.admin("postgres");
    assert!(!databases(&mut admin).contains(&db));
    assert!(!role_exists(&mut admin, &read_login));
    assert_eq!(t.status("acme").unwrap().status, "not_provisioned");
    assert_eq!(t.undelete("acme").unwrap_err().code(), "not_suspended");
    assert!(!t.purge("acme", "acme").unwrap().dropped_database);
    // The event log has each step.
    let actions: Vec<String> = ctl
        .query(
            "SELECT action FROM workspace_events WHERE workspace_id = 'acme' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["suspend", "undelete", "suspend", "purge"]);
    // The neighbour never noticed.
    env.assert_reads("other", true);
}

/// A crash after each recorded step leaves the tenant refused, and re-running the command
/// (or the sweep, for a purge) finishes it.
#[test]
fn soft_delete_steps_survive_a_crash_and_finish_on_rerun() {
    let env = Env::new();
    let t = &env.t;
    t.provision("crashy").unwrap();
    let fault = |args: &[&str], point: &str| {
        let out = env.cli_env(args, &[("DL_TENANCY_FAULT", point)]);
        assert_eq!(out.code, 97, "{args:?} at {point}: {out:?}");
    };
    let deprovision = [
        "deprovision",
        "--workspace",
        "crashy",
        "--confirm",
        "crashy",
    ];

    // Crash after recording the suspension, before the server: tenant calls refuse already
    // (no provision can revive it), and the re-run shuts the logins out.
    let old = uris(&env, "crashy");
    fault(&deprovision, "after_suspend_record");
    assert_eq!(t.status("crashy").unwrap().status, "suspended");
    assert_eq!(
        t.provision("crashy").unwrap_err().code(),
        "workspace_suspended"
    );
    env.cli(&deprovision).json();
    for (label, uri) in &old {
        assert_refused(label, uri);
    }

    // Crash in undelete after its record: status says provisioning; the re-run finishes.
    fault(
        &["undelete", "--workspace", "crashy"],
        "after_undelete_record",
    );
    assert_eq!(t.status("crashy").unwrap().status, "provisioning");
    assert_eq!(
        env.cli(&["undelete", "--workspace", "crashy"]).json()["status"],
        "active"
    );
    for (label, uri) in uris(&env, "crashy") {
        connect(&uri)
            .unwrap_or_else(|e| panic!("{label}: {e}"))
            .batch_execute(READ_QUERY)
            .unwrap();
    }

    // Crash in purge after its record: no undelete any more, logins still refused, and the
    // sweep finishes the purge although the retention is not over.
    let db = env.database("crashy");
    let old = uris(&env, "crashy");
    env.cli(&deprovision).json();
    fault(
        &["purge", "--workspace", "crashy", "--confirm", "crashy"],
        "after_purge_record",
    );
    assert_eq!(t.status("crashy").unwrap().status, "suspended");
    assert_eq!(t.undelete("crashy").unwrap_err().code(), "not_suspended");
    for (label, uri) in &old {
        assert_refused(label, uri);
    }
    let swept = env.cli(&["purge", "--expired"]).json();
    assert_eq!(swept["purged"][0]["workspace"], "crashy", "{swept}");
    assert!(!databases(&mut env.admin("postgres")).contains(&db));
    assert_eq!(t.status("crashy").unwrap().status, "not_provisioned");
}

/// Over HTTP: the old token is refused, a new one cannot undelete (provision answers 409),
/// status shows `suspended` with the purge time, and `serve`'s sweep purges a workspace
/// deleted with no retention.
#[test]
fn a_tenant_cannot_undelete_itself_and_serve_purges_expired() {
    let c = cluster();
    let ws = "fleet-http-suspend";
    let server = Server::start(&["--purge-sweep-seconds", "1"]);
    let api = server.api_for(ws);
    let r = api.post("/api/v2/tenants/provision", json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    let deprovision = |ws, retention| {
        c.cli(&[
            "deprovision",
            "--workspace",
            ws,
            "--confirm",
            ws,
            "--retention",
            retention,
        ])
    };
    deprovision(ws, "30d");
    let r = api.get("/api/v2/tenants/status");
    assert_eq!(r.status, 401, "the old token is revoked: {}", r.text);
    let api = server.api_for(ws);
    let r = api.get("/api/v2/tenants/status");
    check("GET", "/api/v2/tenants/status", &r);
    assert_eq!(r.json["status"], "suspended", "{}", r.text);
    assert!(r.json["purge_after"].is_string(), "{}", r.text);
    for (method, path, body) in [
        ("POST", "/api/v2/tenants/provision", json!({})),
        (
            "POST",
            "/api/v2/tenants/connection-uris/reveal",
            json!({"kind": "override"}),
        ),
        (
            "POST",
            "/api/v2/tenants/connection-uris/rotate",
            json!({"kind": "read"}),
        ),
        (
            "GET",
            "/api/v2/tenants/connection-uris/metadata",
            Value::Null,
        ),
    ] {
        let r = if method == "GET" {
            api.get(path)
        } else {
            api.post(path, body)
        };
        check(method, path, &r);
        assert_eq!(r.status, 409, "{method} {path}: {}", r.text);
        assert_eq!(r.code(), "workspace_suspended", "{method} {path}");
    }
    assert_eq!(c.cli(&["status", "--workspace", ws])["status"], "suspended");

    // Deleted with no retention: the running server's sweep purges it.
    let gone = "fleet-http-expire";
    c.cli(&["provision", "--workspace", gone]);
    deprovision(gone, "0");
    server.wait_log("the sweep purged the workspace", |v| {
        v["fields"]["message"] == "deleted workspace purged" && v["fields"]["workspace"] == gone
    });
    assert_eq!(
        c.cli(&["status", "--workspace", gone])["status"],
        "not_provisioned"
    );
}

/// Size and sessions of a database as the catalog says, from a connection elsewhere.
fn catalog_figures(admin: &mut Client, db: &str) -> (i64, i64) {
    let r = admin
        .query_one(
            "SELECT pg_database_size($1::text::name),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = $1::text::name)",
            &[&db],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn usage_figures_match_the_catalog() {
    let env = Env::new();
    let t = &env.t;
    let (db, _over) = acme_with_rows(&env, "quiet", &["person:1", "person:2", "person:3"], "ok");
    env.admin(&db)
        .batch_execute(
            r#"SET ROLE dl_platform_runtime;
               SELECT dl_upsert_person_enrichment('p-' || g, '{"name":"P"}', '{}') FROM generate_series(1, 25) g"#,
        )
        .unwrap();
    // Two idle direct sessions and the pooled one's server connection.
    let _idle: Vec<Client> = (0..2)
        .map(|_| connect(&env.uri("acme", Kind::Read, false)).unwrap())
        .collect();

    // Measured between two identical catalog readings (a closed session's backend leaves
    // pg_stat_activity when it has exited, not when its client closed).
    let mut admin = env.admin("postgres");
    let started = std::time::Instant::now();
    let (u, before) = loop {
        let before = catalog_figures(&mut admin, &db);
        let u = t.usage("acme").unwrap();
        if catalog_figures(&mut admin, &db) == before {
            break (u, before);
        }
        assert!(started.elapsed() < SAFETY_NET, "the database never settled");
    };
    eprintln!("{}", serde_json::to_string_pretty(&u).unwrap());
    assert_eq!(u.summary.workspace, "acme");
    assert_eq!(u.summary.status, "active");
    assert_eq!(u.summary.database, db);
    assert_eq!(u.summary.database_size_bytes, before.0);
    assert_eq!(u.summary.connections, before.1);
    assert!(u.summary.connections >= 3, "{u:?}");
    let limit: i32 = admin
        .query_one(
            "SELECT datconnlimit FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .unwrap()
        .get(0);
    assert_eq!(u.summary.connection_limit, limit);
    // Every data table of the extension, each count equal to count(*).
    let mut wsdb = env.admin(&db);
    let registered: Vec<String> = wsdb
        .query(
            "SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'dl_tenancy' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(u.rows.keys().cloned().collect::<Vec<_>>(), registered);
    for (table, n) in &u.rows {
        assert_eq!(
            *n,
            count(&mut wsdb, &format!("SELECT count(*) FROM {table}")),
            "{table}"
        );
    }
    assert_eq!(u.rows["dl_override.person_overrides"], 3);
    assert_eq!(u.rows["dl_cache.person_enrichments"], 25);
    // The last activity: not before the newest write, not after now.
    let last = u.last_activity.clone().expect("a last activity");
    let ok: bool = wsdb
        .query_one(
            "SELECT $1::text::timestamptz >= (SELECT max(updated_at) FROM dl_cache.person_enrichments)
                AND $1::text::timestamptz >= (SELECT max(updated_at) FROM dl_override.person_overrides)
                AND $1::text::timestamptz <= now()",
            &[&last],
        )
        .unwrap()
        .get(0);
    assert!(ok, "last_activity {last}");

    // The CLI prints the same figures; without a workspace, every one per server.
    let one = env.cli(&["usage", "--workspace", "acme"]).json();
    assert_eq!(one["rows"]["dl_cache.person_enrichments"], 25);
    t.deprovision("quiet", "quiet").unwrap();
    let all = env.cli(&["usage"]).json();
    eprintln!("{all:#}");
    let local = &all["servers"][0];
    assert_eq!(local["server_id"], "local");
    let listed: Vec<(&str, &str)> = local["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["workspace"].as_str().unwrap(),
                w["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [("acme", "active"), ("quiet", "suspended")]);
    assert_eq!(
        env.cli(&["usage", "--workspace", "nobody"]).error_code(),
        "not_provisioned"
    );
}

/// `GET /api/v2/tenants/usage` answers for the token's workspace and nothing else: no query
/// string, header or body names another one.
#[test]
fn a_token_sees_only_its_own_usage() {
    let c = cluster();
    let (ours, theirs) = ("fleet-usage-a", "fleet-usage-b");
    let server = Server::start(&[]);
    let a = server.api_for(ours);
    let b = server.api_for(theirs);
    let r = a.get("/api/v2/tenants/usage");
    check("GET", "/api/v2/tenants/usage", &r);
    assert_eq!((r.status, r.code()), (404, "not_provisioned"), "{}", r.text);
    for api in [&a, &b] {
        assert_eq!(api.post("/api/v2/tenants/provision", json!({})).status, 200);
    }
    let db_b = c.cli(&["status", "--workspace", theirs])["database"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        "/api/v2/tenants/usage".to_string(),
        format!("/api/v2/tenants/usage?workspace={theirs}"),
        format!("/api/v2/tenants/usage?database={db_b}"),
    ] {
        let r = a.get(&path);
        check("GET", "/api/v2/tenants/usage", &r);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["workspace"], ours, "{path}");
        assert_ne!(r.json["database"], db_b.as_str(), "{path}");
        assert!(
            !r.text.contains(theirs) && !r.text.contains(&db_b),
            "{}",
            r.text
        );
    }
    let r = a
        .with_headers(&[("X-Workspace", theirs)])
        .get("/api/v2/tenants/usage");
    assert_eq!(r.json["workspace"], ours);
    let r = b.get("/api/v2/tenants/usage");
    assert_eq!(r.json["workspace"], theirs);
    assert_eq!(r.json["database"], db_b.as_str());
    let r = Api::new(&server.base, None).get("/api/v2/tenants/usage");
    assert_eq!(r.status, 401);
}

/// Every row of a table as JSON text, in a stable order.
fn table_rows(c: &mut Client, table: &str) -> Vec<String> {
    c.query(
        &format!(
            "SELECT t::text FROM (SELECT row_to_json(x)::text AS t FROM {table} AS x) s ORDER BY 1"
        ),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Owner and ACL of every object in tenant_custom.
fn custom_grants(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT relname || ' ' || relkind::text || ' ' || pg_get_userbyid(relowner) || ' ' || coalesce(relacl::text, '-')
           FROM pg_class WHERE relnamespace = 'tenant_custom'::regnamespace ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn backup_then_restore_keeps_every_row_and_grant() {
    let env = Env::new();
    let t = &env.t;
    t.provision("source").unwrap();
    let mut over = connect(&env.uri("source", Kind::Override, true)).unwrap();
    for i in 0..30 {
        upsert(&mut over, &format!("person:{i}"), "kept").unwrap();
    }
    over.batch_execute(
        r#"SELECT dl_tombstone_person('person:3');
           SELECT dl_apply_company_override('company:1', 'vip', '{"name":"Acme"}', NULL);"#,
    )
    .unwrap();
    over.batch_execute(CUSTOM_OBJECTS).unwrap();
    env.admin_ws("source")
        .batch_execute(
            r#"SET ROLE dl_platform_runtime;
               SELECT dl_upsert_person_enrichment('person:' || g, '{"name":"P"}', '{"raw":1}') FROM generate_series(1, 50) g;
               INSERT INTO dl_meta.tenant_settings (key, value) VALUES ('plan', '"pro"');"#,
        )
        .unwrap();
    let passwords: Vec<String> = uris(&env, "source")
        .iter()
        .map(|(_, u)| dl_tenancy_ctl::connection::parse(u).unwrap().0)
        .map(|c| String::from_utf8(c.get_password().unwrap().to_vec()).unwrap())
        .collect();

    let file = env.dir.join("source.backup");
    let file_arg = file.to_str().unwrap();
    let b = env
        .cli(&["backup", "--workspace", "source", "--to", file_arg])
        .json();
    assert_eq!(b["manifest"]["rows"]["dl_override.person_overrides"], 30);
    assert_eq!(b["manifest"]["rows"]["tenant_custom.segments"], 40);
    // One file, a manifest, no secret in it.
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"dl-tenancy-backup 1\n"));
    let text = String::from_utf8_lossy(&bytes);
    for secret in passwords
        .iter()
        .map(String::as_str)
        .chain(["SCRAM-SHA-256$"])
    {
        assert!(!text.contains(secret), "the backup holds a secret");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        env.cli(&["backup", "--workspace", "source", "--to", file_arg])
            .error_code(),
        "conflict",
        "an existing file is not overwritten"
    );

    let r = env
        .cli(&["restore", "--from", file_arg, "--workspace", "copy"])
        .json();
    eprintln!("{r:#}");
    assert_eq!(r["from_workspace"], "source");
    let (src_db, copy_db) = (env.database("source"), env.database("copy"));
    assert_ne!(src_db, copy_db);
    let (mut src, mut copy) = (env.admin(&src_db), env.admin(&copy_db));
    // Row for row: every table of the backup, and the resolved views built from them.
    let tables: Vec<String> = b["manifest"]["rows"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .chain(["dl_resolved.people".into(), "dl_resolved.companies".into()])
        .collect();
    for table in &tables {
        assert_eq!(
            table_rows(&mut src, table),
            table_rows(&mut copy, table),
            "{table}"
        );
    }
    assert_eq!(custom_grants(&mut src), custom_grants(&mut copy));
    assert_eq!(
        custom_grants(&mut copy).len(),
        3,
        "table, its index, the view"
    );

    // The copy's own, fresh logins work, direct and pooled.
    let copy_uris = uris(&env, "copy");
    for (label, uri) in &copy_uris {
        let mut c = connect(uri).unwrap_or_else(|e| panic!("{label}: {e}"));
        let sql = if label.starts_with("override") {
            "SELECT count(*) FROM tenant_custom.enterprise"
        } else {
            "SELECT count(*) FROM dl_resolved.people"
        };
        let expected = if label.starts_with("override") {
            13
        } else {
            50
        };
        assert_eq!(count(&mut c, sql), expected, "{label}");
        let password = dl_tenancy_ctl::connection::parse(uri).unwrap().0;
        let password = String::from_utf8(password.get_password().unwrap().to_vec()).unwrap();
        assert!(!passwords.contains(&password), "{label}: a fresh password");
    }
    let mut c = connect(&env.uri("copy", Kind::Override, true)).unwrap();
    c.batch_execute("INSERT INTO tenant_custom.segments VALUES ('new', 'tier-9')")
        .unwrap();
    // The source's logins do not reach the copy.
    for (label, uri) in uris(&env, "source") {
        if label.contains("pooled=false") {
            let e = connect(&with_db(&uri, &copy_db)).map(|_| ()).unwrap_err();
            assert_eq!(sqlstate(&e), "28000", "{label}: {e}");
        }
    }

    // Only into a new or empty workspace: not into the copy again, nor into one with a
    // tenant_custom object and no data.
    let out = env.cli(&["restore", "--from", file_arg, "--workspace", "copy"]);
    assert_eq!(out.error_code(), "conflict");
    t.provision("custom-only").unwrap();
    env.run_as_override("custom-only", "CREATE TABLE tenant_custom.mine (a int)");
    let out = env.cli(&["restore", "--from", file_arg, "--workspace", "custom-only"]);
    assert_eq!(out.error_code(), "conflict");
    // An empty provisioned workspace takes it.
    t.provision("empty").unwrap();
    let r = env
        .cli(&["restore", "--from", file_arg, "--workspace", "empty"])
        .json();
    assert_eq!(r["rows"]["tenant_custom.segments"], 40);
    // Not a backup: refused as bad input.
    let junk = env.dir.join("junk");
    std::fs::write(&junk, "hello\n").unwrap();
    let out = env.cli(&[
        "restore",
        "--from",
        junk.to_str().unwrap(),
        "--workspace",
        "other",
    ]);
    assert_eq!(
        (out.code, out.error_code().as_str()),
        (2, "invalid_argument")
    );
    assert_eq!(t.status("other").unwrap().status, "not_provisioned");
}

/// A backup of an older extension version restores through ALTER EXTENSION UPDATE: the data
/// is kept and the migrations log tells the whole story.
#[test]
fn restore_of_an_older_version_goes_through_the_update() {
    let env = Env::new();
    let t = &env.t;
    t.provision("old").unwrap();
    env.admin_ws("old")
        .batch_execute(
            r#"DROP EXTENSION dl_tenancy CASCADE;
               CREATE EXTENSION dl_tenancy VERSION '0.1.0';
               SELECT dl_apply_person_override('p1', 'vip', '{"name": "Old"}', NULL);
               SELECT dl_apply_person_override('p2', NULL, '{"name": "Older"}', NULL);
               CREATE TABLE tenant_custom.notes (id int PRIMARY KEY, body text);
               ALTER TABLE tenant_custom.notes OWNER TO dl_tenant_override;
               INSERT INTO tenant_custom.notes VALUES (1, 'kept');"#,
        )
        .unwrap();
    let file = env.dir.join("old.backup");
    let b = t.backup("old", &file).unwrap();
    assert_eq!(b.manifest.extension_version, "0.1.0");
    let r = t.restore(&file, "new").unwrap();
    assert_eq!(r.from_extension_version, "0.1.0");
    let current = env.status.extension_version.clone().unwrap();
    assert_eq!(r.extension_version, current);
    assert_eq!(
        t.status("new").unwrap().extension_version,
        Some(current.clone())
    );
    let mut new = env.admin_ws("new");
    let mut old = env.admin_ws("old");
    for table in ["dl_override.person_overrides", "tenant_custom.notes"] {
        assert_eq!(
            table_rows(&mut old, table),
            table_rows(&mut new, table),
            "{table}"
        );
    }
    let versions: Vec<String> = new
        .query(
            "SELECT version || ' ' || action FROM dl_meta.schema_migrations ORDER BY applied_at, version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions.first().map(String::as_str), Some("0.1.0 install"));
    assert_eq!(versions.last(), Some(&format!("{current} update")));
    let mut reader = connect(&env.uri("new", Kind::Read, true)).unwrap();
    let names: Vec<String> = reader
        .query(
            "SELECT display_name FROM dl_resolved.people ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["Old", "Older"]);
}

/// A tenant plants code that runs when its rows are loaded (a CHECK constraint, a generated
/// column and a domain calling its own function) and that would escalate if it ran as the
/// restoring superuser. Restore and move load the tenant's objects as its group role: the
/// code runs without privileges, the data arrives.
#[test]
fn restored_tenant_code_runs_without_privileges() {
    let env = Env::new();
    let t = &env.t;
    t.provision("planter").unwrap();
    let mut over = connect(&env.uri("planter", Kind::Override, false)).unwrap();
    over.batch_execute(
        r#"CREATE FUNCTION tenant_custom.escalate(x int) RETURNS boolean LANGUAGE plpgsql AS $$
           BEGIN
               IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                   EXECUTE 'CREATE ROLE pwned_' || x || ' SUPERUSER LOGIN';
               END IF;
               -- Behind a SET ROLE, the session user's rights come back with RESET ROLE.
               IF (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
                   RESET ROLE;
                   EXECUTE 'CREATE ROLE pwned_reset_' || x || ' SUPERUSER LOGIN';
               END IF;
               RETURN true;
           END $$;
           CREATE FUNCTION tenant_custom.twice(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
           BEGIN PERFORM tenant_custom.escalate(x + 100); RETURN 2 * x; END $$;
           CREATE DOMAIN tenant_custom.checked AS int CHECK (tenant_custom.escalate(VALUE + 200));
           CREATE TABLE tenant_custom.trap (
               x int CHECK (tenant_custom.escalate(x)),
               y int GENERATED ALWAYS AS (tenant_custom.twice(x)) STORED,
               z tenant_custom.checked);
           INSERT INTO tenant_custom.trap (x, z) VALUES (1, 1), (2, 2);"#,
    )
    .unwrap();
    let file = env.dir.join("planted.backup");
    t.backup("planter", &file).unwrap();
    let r = t.restore(&file, "restored").unwrap();
    assert_eq!(r.rows["tenant_custom.trap"], 2);
    let second = add_second(&env);
    // Both ways of moving load the tenant's objects: there by streaming, back by copying.
    for (to, method) in [("second", MoveMethod::Logical), ("local", MoveMethod::Copy)] {
        let m = t.move_workspace_with("planter", to, method).unwrap();
        assert_eq!(m.rows["tenant_custom.trap"], 2);
    }
    let mut admin = env.admin("postgres");
    let mut admin2 = postgres::Client::connect(
        &second.pg.conn_string("postgres", "postgres"),
        postgres::NoTls,
    )
    .unwrap();
    for a in [&mut admin, &mut admin2] {
        let planted = count(
            a,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pwned%'",
        );
        assert_eq!(planted, 0, "tenant code ran as a superuser");
    }
    let mut c = connect(&env.uri("restored", Kind::Override, true)).unwrap();
    assert_eq!(
        count(&mut c, "SELECT sum(y)::bigint FROM tenant_custom.trap"),
        6
    );
}

/// Backup, restore and move report their steps as they happen, in order (the CLI prints them
/// on a terminal), naming only the workspace being worked on.
#[test]
fn long_operations_report_their_steps() {
    let env = Env::new();
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = steps.clone();
    let t = env.t.clone().with_progress(Progress::to(move |s| {
        seen.lock().unwrap().push(s.to_string())
    }));
    t.provision("stepper").unwrap();
    let file = env.dir.join("stepper.backup");
    t.backup("stepper", &file).unwrap();
    t.restore(&file, "stepper2").unwrap();
    let _second = add_second(&env);
    t.move_workspace("stepper", "second").unwrap();
    let steps = steps.lock().unwrap().clone();
    let expected = [
        "stepper: dumping",
        "stepper: wrote",
        "stepper2: loading the backup of stepper",
        "stepper2: ",
        "stepper: logins ready on second",
        "stepper: 11 of 11 tables copied while live",
        "stepper: paused",
        "stepper: copied",
        "stepper: on second and resumed",
        "stepper: dropped the copy on local",
    ];
    let mut rest = steps.iter();
    for want in expected {
        assert!(
            rest.any(|s| s.starts_with(want)),
            "no step {want:?} in order in {steps:#?}"
        );
    }
    assert!(steps.iter().all(|s| !s.contains("dlw_")), "{steps:#?}");
}
