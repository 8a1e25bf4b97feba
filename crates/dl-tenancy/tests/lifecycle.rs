//! Provision/status lifecycle, idempotency, deprovision, bad ids (library and CLI).

mod common;

use common::*;
use dl_tenancy_ctl::Kind;
use std::time::Instant;

#[test]
fn provision_status_metadata_schema_list_deprovision() {
    let env = Env::new();
    let t = &env.t;
    let st = t.status("acme").unwrap();
    assert_eq!(st.status, "not_provisioned");
    assert_eq!(st.database, None);

    let started = Instant::now();
    let st = t.provision("acme").unwrap();
    let took = started.elapsed();
    // Printed only: speed belongs to the benchmark, not to a test on a shared machine.
    eprintln!("provision of a new workspace took {took:?}");
    assert_eq!(st.status, "active");
    // An opaque name that says nothing of the customer.
    let db = st.database.clone().unwrap();
    assert!(db.starts_with("dlw_") && db.len() == 20, "{db}");
    assert!(db[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{db}");
    let read_login = format!("{db}_read_a");
    assert_eq!(st.extension_version, env.status.extension_version);
    assert!(st.extension_version.is_some());
    assert_eq!(t.status("acme").unwrap().status, "active");

    // The database: not owned by a tenant, no CONNECT for PUBLIC.
    let mut admin = env.admin("postgres");
    let row = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba), has_database_privilege('public', oid, 'CONNECT'),
                    has_database_privilege($1, oid, 'CONNECT'),
                    has_database_privilege($1, oid, 'TEMP')
               FROM pg_database WHERE datname = $2",
            &[&read_login, &db],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");
    assert!(!row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));
    assert!(!row.get::<_, bool>(3));
    // Logins: no CREATEROLE/CREATEDB/superuser; role settings as designed; no secret anywhere.
    let rows = admin
        .query(
            "SELECT rolname, rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls, rolcanlogin,
                    coalesce((SELECT string_agg(x, ';') FROM pg_db_role_setting s, unnest(s.setconfig) x
                               WHERE s.setrole = r.oid), '')
               FROM pg_roles r WHERE starts_with(rolname, $1) ORDER BY 1",
            &[&db],
        )
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        ["", "_override_a", "_override_b", "_read_a", "_read_b"].map(|s| format!("{db}{s}"))
    );
    for r in &rows {
        assert!(!r.get::<_, bool>(1));
        let name: String = r.get(0);
        // Only the logins holding a live credential may log in; the standby ones wait NOLOGIN.
        assert_eq!(r.get::<_, bool>(2), name.ends_with("_a"), "{name}");
        assert!(!name.contains("acme"), "{name}");
    }
    let settings: String = rows[3].get(3);
    assert!(settings.contains("role=dl_tenant_read"), "{settings}");
    assert!(
        settings.contains("search_path=dl_resolved, public, pg_catalog"),
        "{settings}"
    );
    let settings: String = rows[1].get(3);
    assert!(settings.contains("role=dl_tenant_override"), "{settings}");
    assert!(
        settings.contains("search_path=tenant_custom, dl_resolved, public, pg_catalog"),
        "{settings}"
    );

    // Metadata: no secrets.
    let md = t.metadata("acme").unwrap();
    assert_eq!(md.database, db);
    assert_eq!(md.server_id, "local");
    assert_eq!(md.roles["read"].login, read_login);
    assert_eq!(md.roles["override"].group_role, "dl_tenant_override");
    assert_eq!(md.direct.port, env.status.direct.port);
    assert_eq!(md.pooled.as_ref().unwrap().port, env.status.pooler.port);
    let md_json = serde_json::to_string(&md).unwrap();
    for kind in Kind::ALL {
        let uri = env.uri("acme", kind, false);
        let pw = uri.split(':').nth(2).unwrap().split('@').next().unwrap();
        assert!(!md_json.contains(pw));
    }

    // The contract.
    let schema = t.sql_schema("acme").unwrap();
    assert!(schema.to_string().contains("dl_resolved"), "{schema}");

    let list = t.list().unwrap();
    assert_eq!(list.workspaces.len(), 1);
    assert_eq!(list.workspaces[0].state, "active");

    // Deprovision refuses without the matching confirmation, and changes nothing.
    let e = t.deprovision("acme", "other").unwrap_err();
    assert_eq!(e.code(), "confirmation_required");
    assert_eq!(e.exit_code(), 2);
    assert!(databases(&mut admin).contains(&db));
    let out = env.cli(&["deprovision", "--workspace", "acme"]);
    assert_eq!(out.error_code(), "confirmation_required");
    assert_eq!(out.code, 2);
    assert_eq!(t.status("acme").unwrap().status, "active");

    // A live session is terminated by deprovision, which suspends (the data stays) ...
    let mut session = connect(&env.uri("acme", Kind::Read, false)).unwrap();
    session.simple_query("SELECT 1").unwrap();
    let d = env
        .cli(&["deprovision", "--workspace", "acme", "--confirm", "acme"])
        .json();
    assert_eq!(d["status"], "suspended");
    assert!(session.simple_query("SELECT 1").is_err());
    assert!(databases(&mut admin).contains(&db));
    assert_eq!(t.status("acme").unwrap().status, "suspended");
    // ... and purge drops it.
    let d = env
        .cli(&["purge", "--workspace", "acme", "--confirm", "acme"])
        .json();
    assert_eq!(d["status"], "deleted");
    assert_eq!(d["dropped_database"], true);
    assert_eq!(d["dropped_roles"].as_array().unwrap().len(), 5);
    assert!(!databases(&mut admin).contains(&db));
    assert!(!role_exists(&mut admin, &read_login));
    assert!(!role_exists(&mut admin, &db));
    assert_eq!(t.status("acme").unwrap().status, "not_provisioned");
    assert!(t.list().unwrap().workspaces.is_empty());
    assert_eq!(
        t.reveal("acme", Kind::Read, false).unwrap_err().code(),
        "not_provisioned"
    );
    // Deprovision and purge again: no-ops.
    assert_eq!(
        t.deprovision("acme", "acme").unwrap().status,
        "not_provisioned"
    );
    assert!(!t.purge("acme", "acme").unwrap().dropped_database);

    // And it can come back, with new names and credentials.
    let back = t.provision("acme").unwrap();
    assert_eq!(back.status, "active");
    assert_ne!(back.database.as_deref(), Some(db.as_str()));
    let mut c = connect(&env.uri("acme", Kind::Read, true)).unwrap();
    c.simple_query(READ_QUERY).unwrap();
}

#[test]
fn provision_is_idempotent_concurrent_and_repairs() {
    let env = Env::new();
    let t = &env.t;
    let mut admin = env.admin("postgres");

    // Twice: the second call is a no-op (same URI, same roles).
    t.provision("twice").unwrap();
    let uri = env.uri("twice", Kind::Override, false);
    let again = t.provision("twice").unwrap();
    assert_eq!(again.status, "active");
    assert_eq!(env.uri("twice", Kind::Override, false), uri);
    connect(&uri).unwrap().simple_query("SELECT 1").unwrap();

    // Concurrently from threads (library) and processes (CLI): one database, all active.
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| t.provision("race").unwrap().status))
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), "active");
        }
    });
    let kids: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_dl-tenancy"))
                .args(["provision", "--workspace", "race2"])
                .env("DL_TENANCY_DATA_DIR", &env.dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"], "active");
    }
    let dbs = databases(&mut admin);
    for ws in ["race", "race2"] {
        let db = env.database(ws);
        assert_eq!(dbs.iter().filter(|d| **d == db).count(), 1, "{dbs:?}");
    }
    // One database per workspace, none left over by the racing calls.
    let ours = dbs.iter().filter(|d| d.starts_with("dlw_")).count();
    assert_eq!(ours, 3, "{dbs:?}"); // twice, race, race2
    for ws in ["race", "race2"] {
        let mut c = connect(&env.uri(ws, Kind::Read, false)).unwrap();
        c.simple_query(READ_QUERY).unwrap();
    }

    // The database dropped by hand: status says so (no stale active); provision repairs it and
    // the revealed URI keeps working.
    let before = env.uri("twice", Kind::Read, true);
    let twice = env.database("twice");
    admin
        .batch_execute(&format!("DROP DATABASE \"{twice}\" WITH (FORCE)"))
        .unwrap();
    let st = t.status("twice").unwrap();
    assert_eq!(st.status, "not_provisioned");
    assert!(st.message.unwrap().contains("missing"));
    let out = env.cli(&["status", "--workspace", "twice"]).json();
    assert_eq!(out["status"], "not_provisioned");
    assert_eq!(t.provision("twice").unwrap().status, "active");
    assert_eq!(env.uri("twice", Kind::Read, true), before);
    connect(&before).unwrap().simple_query(READ_QUERY).unwrap();

    // Roles dropped by hand, credentials gone: provision recreates them with new passwords.
    admin
        .batch_execute(&format!(
            "DROP ROLE \"{twice}_read_a\"; DROP ROLE \"{twice}_read_b\""
        ))
        .unwrap();
    let mut ctl = env.admin("dl_control");
    ctl.execute(
        "DELETE FROM credentials WHERE workspace_id = 'twice' AND kind = 'read'",
        &[],
    )
    .unwrap();
    assert_eq!(t.provision("twice").unwrap().status, "active");
    let fresh = env.uri("twice", Kind::Read, false);
    assert_ne!(fresh, with_db(&before, &twice));
    connect(&fresh).unwrap().simple_query(READ_QUERY).unwrap();

    // A row left in `provisioning` (a crash before anything was created), by a tool before
    // 0.4.0 (legacy names, which provision keeps).
    ctl.execute(
        "INSERT INTO workspaces (id, server_id, database_name, state) VALUES ('halfway', 'local', 'ws_halfway', 'provisioning')",
        &[],
    )
    .unwrap();
    assert_eq!(t.status("halfway").unwrap().status, "provisioning");
    assert_eq!(
        t.reveal("halfway", Kind::Read, false).unwrap_err().code(),
        "provisioning_in_progress"
    );
    assert_eq!(t.provision("halfway").unwrap().status, "active");
    connect(&env.uri("halfway", Kind::Override, true))
        .unwrap()
        .simple_query(CUSTOM_TABLE)
        .unwrap();
}

#[test]
fn crash_half_way_then_provision_finishes() {
    let env = Env::new();
    let mut admin = env.admin("postgres");
    for (ws, point) in [
        ("crash-a", "after_record"),
        ("crash-b", "after_create_database"),
        ("crash-c", "after_roles"),
    ] {
        let out = env.cli_env(
            &["provision", "--workspace", ws],
            &[("DL_TENANCY_FAULT", point)],
        );
        assert_eq!(out.code, 97, "{point}: {out:?}");
        let st = env.cli(&["status", "--workspace", ws]).json();
        assert_eq!(st["status"], "provisioning", "{point}");
        let st = env.cli(&["provision", "--workspace", ws]).json();
        assert_eq!(st["status"], "active", "{point}");
        let uri = env.uri(ws, Kind::Override, false);
        let mut c = connect(&uri).unwrap();
        upsert(&mut c, "person:1", "active").unwrap();
        let mut c = connect(&env.uri(ws, Kind::Read, true)).unwrap();
        assert_eq!(c.query(READ_QUERY, &[]).unwrap().len(), 1);
    }
    let dbs = databases(&mut admin);
    assert_eq!(dbs.iter().filter(|d| d.starts_with("dlw_")).count(), 3);
}

#[test]
fn bad_workspace_ids_change_nothing() {
    let env = Env::new();
    let mut admin = env.admin("postgres");
    let dbs_before = databases(&mut admin);
    let roles_before = count(&mut admin, "SELECT count(*) FROM pg_roles");
    let long = format!("a{}", "b".repeat(48));
    for bad in [
        "",
        "Acme",
        "1acme",
        "-acme",
        "acme;drop database postgres",
        "a\"b",
        "a b",
        "ws/x",
        "acmé",
        long.as_str(),
    ] {
        assert_eq!(
            env.t.provision(bad).unwrap_err().code(),
            "invalid_workspace_id"
        );
        assert_eq!(env.t.status(bad).unwrap_err().http_status(), 400);
        for args in [
            vec!["provision", "--workspace", bad],
            vec!["status", "--workspace", bad],
            vec![
                "connection-uris",
                "reveal",
                "--workspace",
                bad,
                "--kind",
                "read",
            ],
            vec![
                "connection-uris",
                "rotate",
                "--workspace",
                bad,
                "--kind",
                "read",
            ],
            vec!["connection-uris", "metadata", "--workspace", bad],
            vec!["sql-schema", "--workspace", bad],
            vec!["deprovision", "--workspace", bad, "--confirm", bad],
        ] {
            let out = env.cli(&args);
            assert_eq!(out.code, 2, "{args:?}: {out:?}");
            assert_eq!(out.error_code(), "invalid_workspace_id", "{args:?}");
        }
    }
    // Longest valid id works (names fit in 63 bytes).
    let max = format!("a{}", "b".repeat(47));
    assert_eq!(env.t.provision(&max).unwrap().status, "active");
    env.t.deprovision(&max, &max).unwrap();
    env.t.purge(&max, &max).unwrap();
    // Other bad input: JSON errors with exit 2 (exit 1 for an unknown workspace). A grace
    // longer than the library's one limit (MAX_GRACE_SECONDS, a year) is refused before anything.
    for (line, code, exit) in [
        (
            "connection-uris reveal --workspace x --kind write",
            "invalid_argument",
            2,
        ),
        (
            "connection-uris rotate --workspace x --kind read --grace soon",
            "invalid_argument",
            2,
        ),
        (
            "connection-uris rotate --workspace x --kind read --grace 367d",
            "invalid_argument",
            2,
        ),
        (
            "connection-uris reveal --workspace nope --kind read",
            "not_provisioned",
            1,
        ),
    ] {
        let out = env.cli(&line.split(' ').collect::<Vec<_>>());
        assert_eq!(out.error_code(), code, "{line}: {out:?}");
        assert_eq!(out.code, exit, "{line}: {out:?}");
    }

    assert_eq!(databases(&mut admin), dbs_before);
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM pg_roles"),
        roles_before
    );
    assert!(env.t.list().unwrap().workspaces.is_empty());
}

#[test]
fn template_is_recreated_when_the_extension_version_changes() {
    let env = Env::new();
    let mut admin = env.admin("postgres");
    let template = |a: &mut postgres::Client| -> (u32, bool, bool) {
        let r = a
            .query_one(
                "SELECT oid, datallowconn, datistemplate FROM pg_database WHERE datname = 'dl_tenancy_template'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let (before, allowconn, istemplate) = template(&mut admin);
    assert!(!allowconn, "nobody may connect to the template");
    assert!(istemplate);
    env.t.provision("one").unwrap();
    assert_eq!(
        template(&mut admin).0,
        before,
        "same version: template kept"
    );

    // As if the installed default_version had changed since the template was made.
    let mut ctl = env.admin("dl_control");
    ctl.execute(
        "UPDATE servers SET template_version = '0.0.0-old' WHERE id = 'local'",
        &[],
    )
    .unwrap();
    env.t.provision("two").unwrap();
    let (after, allowconn, _) = template(&mut admin);
    assert_ne!(after, before, "template recreated");
    assert!(!allowconn);
    let v: Option<String> = ctl
        .query_one(
            "SELECT template_version FROM servers WHERE id = 'local'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, env.status.extension_version);
    assert_eq!(
        env.t.status("two").unwrap().extension_version,
        env.status.extension_version
    );
    // Workspaces made from the old template are untouched.
    assert_eq!(env.t.status("one").unwrap().status, "active");
}
