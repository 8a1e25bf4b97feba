//! Tools outside Python and Node with their defaults, through a workspace's revealed forms
//! (tests/tools_other/, installed by its install.sh from Debian 12's packages): Rails'
//! ActiveRecord (migrations with its advisory lock on the direct URI, models through the
//! pooled one), Go with pgx v4 (pgxpool), JDBC (pgjdbc 42.5 with the revealed `jdbc_url`,
//! past `prepareThreshold`) and PHP PDO (`"pgsql:" . $keywords`). Each one migrates twice
//! into `tenant_custom` (the second run a no-op), reads the seed's query 200 times over 4
//! connections with every row checked, and does the seed's upsert with jsonb parameters,
//! through the pooled URI and the direct one. Each program prints one JSON line per run.

mod common;

use common::*;
use dl_tenancy_ctl::{Kind, Reveal};
use postgres::Client;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const WS: &str = "tools";
/// `person:0` .. `person:39`, display name `Name {i}` (as drivers.rs).
const PEOPLE: usize = 40;

/// Which revealed form a tool takes.
#[derive(Clone, Copy)]
enum Form {
    Uri,
    Keywords,
    Jdbc,
}

struct Tool {
    name: &'static str,
    program: String,
    args: Vec<String>,
    cwd: PathBuf,
    form: Form,
    /// The variables the program reads the override and the read login's form from.
    vars: (&'static str, &'static str),
    /// Whether migrations run on the direct URI only (a session advisory lock).
    direct_migrations: bool,
}

fn form(r: &Reveal, form: Form) -> String {
    match form {
        Form::Uri => r.uri.clone(),
        Form::Keywords => r.keywords.clone(),
        Form::Jdbc => r.jdbc_url.clone(),
    }
}

/// Runs a tool's program once; its one JSON line. With `ca`, the forms name that CA file
/// as `sslrootcert` instead of the revealed one.
fn run(env: &Env, tool: &Tool, mode: &str, pooled: bool, ca: Option<&Path>) -> Value {
    let over = env.t.reveal(WS, Kind::Override, pooled).unwrap();
    let read = env.t.reveal(WS, Kind::Read, pooled).unwrap();
    let form = |r: &Reveal| {
        let f = form(r, tool.form);
        match ca {
            Some(ca) => {
                let ours = r.sslrootcert.as_deref().expect("the local cluster's CA");
                assert!(f.contains(ours), "{f}");
                f.replace(ours, ca.to_str().unwrap())
            }
            None => f,
        }
    };
    let started = Instant::now();
    let out = Command::new(&tool.program)
        .args(&tool.args)
        .arg(mode)
        .current_dir(&tool.cwd)
        .env(tool.vars.0, form(&over))
        .env(tool.vars.1, form(&read))
        .env("DL_READ_QUERY", READ_QUERY.trim())
        .env("DL_UPSERT", UPSERT.trim())
        .env("DL_KEY", format!("person:{}", tool.name))
        .env("RAILS_ENV", "test")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.program));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{} {mode} (pooled={pooled}): {:.1}s",
        tool.name,
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{} {mode} (pooled={pooled}) failed:\n{stdout}\n{stderr}\n--- server log (tail) ---\n{}",
        tool.name,
        tail(&env.server_log(), 40)
    );
    let line = stdout.lines().last().unwrap_or_default();
    eprintln!("  {line}");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{} {mode}: {e}: {stdout}\n{stderr}", tool.name))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The schemas holding a relation named `name`.
fn schemas_of(admin: &mut Client, name: &str) -> Vec<String> {
    admin
        .query(
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = $1 ORDER BY 1",
            &[&name],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn tools(dir: &Path, cache: &str) -> Vec<Tool> {
    vec![
        Tool {
            name: "activerecord",
            program: "ruby".into(),
            args: vec!["ar_tool.rb".into()],
            cwd: dir.join("activerecord"),
            form: Form::Uri,
            vars: ("DATABASE_URL", "READ_DATABASE_URL"),
            direct_migrations: true,
        },
        Tool {
            name: "pgx",
            program: format!("{cache}/pgx_tool"),
            args: vec![],
            cwd: dir.to_path_buf(),
            form: Form::Uri,
            vars: ("DATABASE_URL", "READ_DATABASE_URL"),
            direct_migrations: false,
        },
        Tool {
            name: "jdbc",
            program: "java".into(),
            args: vec![
                "-XX:TieredStopAtLevel=1".into(),
                "-Xshare:auto".into(),
                "-cp".into(),
                format!("{cache}/java:/usr/share/java/postgresql.jar"),
                "JdbcTool".into(),
            ],
            cwd: dir.to_path_buf(),
            form: Form::Jdbc,
            vars: ("JDBC_URL", "READ_JDBC_URL"),
            direct_migrations: false,
        },
        Tool {
            name: "pdo",
            program: "php".into(),
            args: vec!["pdo_tool.php".into()],
            cwd: dir.to_path_buf(),
            form: Form::Keywords,
            vars: ("DB_KEYWORDS", "READ_DB_KEYWORDS"),
            direct_migrations: false,
        },
    ]
}

#[test]
fn activerecord_pgx_jdbc_and_pdo_work_with_their_defaults() {
    let test = "activerecord_pgx_jdbc_and_pdo_work_with_their_defaults";
    let started = Instant::now();
    let Some((dir, cache)) = install_tools("tools_other", test) else {
        return;
    };
    eprintln!("install: {:.1}s", started.elapsed().as_secs_f64());
    let env = Env::new();
    env.t.provision(WS).unwrap();
    seed_named_people(&env, WS, PEOPLE);
    let tools = tools(&dir, &cache);
    let mut admin = env.admin_ws(WS);

    // 1. Migrations, twice: the second run changes nothing.
    for tool in &tools {
        let first = run(&env, tool, "migrate", false, None);
        let second = run(&env, tool, "migrate", !tool.direct_migrations, None);
        for r in [&first, &second] {
            assert_eq!(r["current_schema"], "tenant_custom", "{}: {r}", tool.name);
        }
        if tool.name == "activerecord" {
            let versions = serde_json::json!(["20261207000001", "20261207000002"]);
            assert_eq!(first["applied"], versions, "{first}");
            assert_eq!(second["applied"], serde_json::json!([]), "{second}");
            assert_eq!(second["versions"], versions, "{second}");
            for r in [&first, &second] {
                assert_eq!(r["advisory_lock"], true, "the migration lock is on: {r}");
                assert_eq!(r["advisory_unlock"], true, "{r}");
            }
        }
    }
    // ActiveRecord: its table, its bookkeeping (schema_migrations, ar_internal_metadata).
    assert_eq!(
        columns(&mut admin, "widgets"),
        ["id", "name", "created_at", "updated_at", "color"]
    );
    for table in ["widgets", "ar_internal_metadata"] {
        assert_eq!(schemas_of(&mut admin, table), ["tenant_custom"], "{table}");
    }
    // The platform's own dl_meta.schema_migrations stays apart (not on the search path).
    assert_eq!(
        schemas_of(&mut admin, "schema_migrations"),
        ["dl_meta", "tenant_custom"]
    );
    assert_eq!(
        strings(
            &mut admin,
            "SELECT version FROM tenant_custom.schema_migrations ORDER BY 1"
        ),
        ["20261207000001", "20261207000002"]
    );
    let environment: String = admin
        .query_one(
            "SELECT value FROM tenant_custom.ar_internal_metadata WHERE key = 'environment'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(environment, "test");
    // The others: their table with the column the second step added, once.
    for table in ["pgx_gadgets", "jdbc_gadgets", "pdo_gadgets"] {
        assert_eq!(
            columns(&mut admin, table),
            ["id", "name", "color"],
            "{table}"
        );
        assert_eq!(schemas_of(&mut admin, table), ["tenant_custom"], "{table}");
    }

    // 2 and 3. Reads and the upsert, pooled (the apps' URI) and direct.
    for pooled in [true, false] {
        for tool in &tools {
            let r = run(&env, tool, "app", pooled, None);
            let what = format!("{} (pooled={pooled}): {r}", tool.name);
            if tool.name == "jdbc" {
                assert_eq!(r["server_prepared"], 4, "past prepareThreshold: {what}");
            } else {
                assert_eq!(r["prepared_statements"], true, "the default: {what}");
            }
            assert_eq!(r["queries"], 200, "{what}");
            assert_eq!(r["errors"], 0, "{what}");
            assert_eq!(r["wrong"], 0, "wrong rows: {what}");
            assert!(r["connections"].as_u64().unwrap() >= 4, "{what}");
            assert!(r["upsert_error"].is_null(), "{what}");
            let name = format!("Written by {}", tool.name);
            assert_eq!(r["resolved_name"], name.as_str(), "{what}");
            assert_eq!(r["resolved_payload_name"], name.as_str(), "{what}");
            assert_eq!(r["resolved_status"], "verified", "{what}");
            // What the upsert left, read by the superuser.
            let key = format!("person:{}", tool.name);
            let row = admin
                .query_one(
                    "SELECT o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned,
                            p.display_name
                       FROM dl_override.person_overrides o
                       JOIN dl_resolved.people p USING (identity_key)
                      WHERE o.identity_key = $1",
                    &[&key],
                )
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "verified", "{what}");
            assert_eq!(
                row.get::<_, Value>(1),
                serde_json::json!({ "display_name": name }),
                "{what}"
            );
            assert_eq!(
                row.get::<_, Value>(2),
                serde_json::json!({ "source": "app" }),
                "{what}"
            );
            assert!(!row.get::<_, bool>(3), "{what}");
            assert_eq!(row.get::<_, String>(4), name, "{what}");
        }
    }

    // TLS is verified: with sslrootcert naming another CA, every tool refuses the server.
    let (foreign, foreign_dir) = foreign_ca();
    for pooled in [true, false] {
        for tool in &tools {
            let r = run(&env, tool, "connect", pooled, Some(&foreign));
            assert_eq!(
                r["connected"], false,
                "{} (pooled={pooled}) connected although sslrootcert named another CA: {r}",
                tool.name
            );
        }
    }
    let _ = std::fs::remove_dir_all(foreign_dir);
    eprintln!("total: {:.1}s", started.elapsed().as_secs_f64());
}
