//! Python tools with their defaults on fresh workspaces, through the URIs (or the parts) the
//! recipes in tests/tools_python/ name: Django (startproject, makemigrations, migrate; psycopg
//! 3), Alembic (init, two revisions, upgrade head), SQLAlchemy 2 (psycopg 3, and asyncpg's pool
//! through create_async_engine), pandas (to_sql, read_sql), asyncpg's create_pool() and psycopg
//! 3. One workspace runs them all with the direct URIs, another with the pooled ones (PgBouncer,
//! transaction mode), migrations included. Each tool prints one JSON line (tools.py); this test
//! asserts on it and on what the database holds afterwards: the tables and the tools'
//! bookkeeping in `tenant_custom`, owned by the override group, and each tool's upsert resolved.

mod common;

use common::*;
use dl_tenancy_ctl::Kind;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const TOOLS: [&str; 7] = [
    "django",
    "alembic",
    "sqlalchemy",
    "sqlalchemy_async",
    "pandas",
    "asyncpg",
    "psycopg",
];

/// The tools that write the seed's upsert (Alembic's writes are SQLAlchemy's).
const UPSERTING: [&str; 6] = [
    "django",
    "sqlalchemy",
    "sqlalchemy_async",
    "pandas",
    "asyncpg",
    "psycopg",
];

/// `person:0` .. `person:39` named `Name {i}`, stamped in the future and older as i grows: the
/// seed's read query returns exactly `person:0` .. `person:19` in order, whatever the tools
/// write meanwhile (their upserts are stamped now()).
fn seed_people(uri: &str) {
    connect(uri)
        .unwrap()
        .batch_execute(
            "INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch, updated_at)
             SELECT 'person:' || i, jsonb_build_object('display_name', 'Name ' || i),
                    timestamptz '2100-01-01 00:00:00+00' - i * interval '1 minute'
               FROM generate_series(0, 39) i",
        )
        .unwrap();
}

/// One tool's run: its JSON line (stdout and stderr in the panic when it fails).
fn run_tool(
    python: &str,
    script: &Path,
    tool: &str,
    work: &Path,
    env: &[(String, String)],
) -> Value {
    std::fs::create_dir_all(work).unwrap();
    let mut cmd = Command::new(python);
    without_env(&mut cmd, &["PG", "DB_", "DJANGO_SETTINGS_MODULE"])
        .arg(script)
        .arg(tool)
        .arg(work)
        .current_dir(work)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let (stdout, stderr) = run_ok(&mut cmd, &format!("{python} {tool}"));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{tool}: one JSON line:\n{stdout}\n{stderr}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{tool}: {e}: {}", lines[0]))
}

#[test]
fn python_tools_with_their_defaults_migrate_read_and_upsert() {
    let started = Instant::now();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/seed");
    let Some((dir, cache)) = install_tools(
        "tools_python",
        "python_tools_with_their_defaults_migrate_read_and_upsert",
    ) else {
        return;
    };
    let python = format!("{cache}/venv/bin/python");
    let installed = started.elapsed();
    let env = Env::new();
    for pooled in [false, true] {
        let ws = if pooled { "pypooled" } else { "pydirect" };
        env.t.provision(ws).unwrap();
        seed_people(&env.uri(ws, Kind::Override, false));
        let read = env.t.reveal(ws, Kind::Read, pooled).unwrap();
        let write = env.t.reveal(ws, Kind::Override, pooled).unwrap();
        assert!(!write.uri.contains('%'), "Alembic's ini: {}", write.uri);
        let mut vars = vec![
            ("DB_URI".to_string(), read.uri.clone()),
            ("DB_OVERRIDE_URI".to_string(), write.uri.clone()),
            ("DB_MIGRATE_URI".to_string(), write.uri.clone()),
            ("DL_SEED_DIR".to_string(), seed.display().to_string()),
        ];
        for (prefix, r) in [("DB", &write), ("DB_READ", &read)] {
            for (part, value) in [
                ("HOST", r.host.clone()),
                ("PORT", r.port.to_string()),
                ("NAME", r.database.clone()),
                ("USER", r.user.clone()),
                ("PASSWORD", r.password.clone()),
                ("SSLROOTCERT", r.sslrootcert.clone().expect("the local CA")),
            ] {
                vars.push((format!("{prefix}_{part}"), value));
            }
        }
        for tool in TOOLS {
            let t = Instant::now();
            let r = run_tool(
                &python,
                &dir.join("tools.py"),
                tool,
                &env.dir.join(format!("{ws}-{tool}")),
                &vars,
            );
            let what = format!("{tool} (pooled={pooled}): {r}");
            eprintln!("{what} in {:?}", t.elapsed());
            assert_eq!(r["tool"], tool, "{what}");
            if tool != "alembic" {
                assert_eq!(r["queries"], 200, "{what}");
                assert_eq!(r["errors"], 0, "{what}");
                assert_eq!(r["wrong"], 0, "{what}");
            }
            if UPSERTING.contains(&tool) {
                assert_eq!(r["resolved"], format!("Written by {tool}"), "{what}");
            }
            match tool {
                "django" => {
                    assert_eq!(
                        r["migrations"],
                        serde_json::json!(["0001_initial.py", "0002_note_body.py"]),
                        "{what}"
                    );
                    assert_eq!(r["second_applied"], true, "{what}");
                    assert_eq!(r["last_is_noop"], true, "{what}");
                    assert_eq!(r["notes"], 1, "{what}");
                }
                "alembic" => {
                    assert_eq!(r["second_applied"], true, "{what}");
                    assert_eq!(r["last_is_noop"], true, "{what}");
                    assert_eq!(r["current"], serde_json::json!(["0002 (head)"]), "{what}");
                }
                _ => {}
            }
        }

        // What the database holds: checked as the superuser.
        let mut admin = env.admin_ws(ws);
        assert_eq!(
            columns(&mut admin, "notes_note"),
            ["id", "title", "created_at", "body"]
        );
        assert_eq!(
            strings(
                &mut admin,
                "SELECT name::text FROM tenant_custom.django_migrations WHERE app = 'notes' ORDER BY id"
            ),
            ["0001_initial", "0002_note_body"]
        );
        // Django's own apps (admin, auth, contenttypes, sessions) migrated there too.
        assert!(
            count(
                &mut admin,
                "SELECT count(*) FROM tenant_custom.django_migrations WHERE app = 'auth'"
            ) >= 10
        );
        assert_eq!(
            count(&mut admin, "SELECT count(*) FROM tenant_custom.notes_note"),
            1
        );
        assert_eq!(columns(&mut admin, "auth_user").first().unwrap(), "id");
        assert_eq!(
            columns(&mut admin, "alembic_notes"),
            ["id", "title", "body"]
        );
        assert_eq!(
            strings(
                &mut admin,
                "SELECT version_num::text FROM tenant_custom.alembic_version"
            ),
            ["0002"]
        );
        assert_eq!(columns(&mut admin, "sa_segments"), ["id", "segment"]);
        assert_eq!(columns(&mut admin, "sa_tags"), ["id", "segment_id"]);
        assert_eq!(
            count(&mut admin, "SELECT count(*) FROM tenant_custom.sa_tags"),
            1
        );
        assert_eq!(
            columns(&mut admin, "pandas_scores"),
            ["index", "name", "score"]
        );
        assert_eq!(
            count(
                &mut admin,
                "SELECT count(*) FROM tenant_custom.pandas_scores"
            ),
            6
        );
        // Everything the tools made is the override group's (so it outlives the login), and
        // none of it landed outside tenant_custom.
        assert_eq!(
            strings(
                &mut admin,
                "SELECT relname::text FROM pg_class
                  WHERE relnamespace = 'tenant_custom'::regnamespace
                    AND relowner <> 'dl_tenant_override'::regrole ORDER BY 1"
            ),
            Vec::<String>::new()
        );
        let logins = [write.user.as_str(), read.user.as_str()];
        assert_eq!(
            admin
                .query_one(
                    "SELECT count(*) FROM pg_class
                      WHERE (relowner IN (SELECT oid FROM pg_roles WHERE rolname = ANY($1))
                             OR relowner = 'dl_tenant_override'::regrole)
                        AND relnamespace NOT IN ('tenant_custom'::regnamespace, 'pg_toast'::regnamespace)",
                    &[&&logins[..]],
                )
                .unwrap()
                .get::<_, i64>(0),
            0
        );
        // Each tool's upsert, resolved: the second round's patch over the first.
        for tool in UPSERTING {
            let row = admin
                .query_one(
                    "SELECT display_name, status, identity_payload->>'tool', raw_payload->>'source', is_overridden
                       FROM dl_resolved.people WHERE identity_key = $1",
                    &[&format!("person:{tool}")],
                )
                .unwrap();
            assert_eq!(row.get::<_, String>(0), format!("Written by {tool}"));
            assert_eq!(row.get::<_, String>(1), "verified");
            assert_eq!(row.get::<_, String>(2), tool);
            assert_eq!(row.get::<_, String>(3), tool);
            assert!(row.get::<_, bool>(4));
        }
    }
    let log = env.server_log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR:")).collect();
    eprintln!(
        "server log ERROR lines: {}\n{}",
        errors.len(),
        errors.join("\n")
    );
    eprintln!(
        "tools_python: install {installed:?}, all {:?}",
        started.elapsed()
    );
}
