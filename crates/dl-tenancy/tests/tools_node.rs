//! Node.js migration tools and ORMs with their defaults on a fresh workspace, through its
//! revealed URIs (tests/tools_node/: one program per tool, each printing one JSON line; the
//! part an app developer copies is marked `recipe: <tool>` ... `end recipe`):
//! - knex, TypeORM, sequelize-cli, Kysely's Migrator and drizzle-kit run their migrations
//!   (a table, then a column) twice through the override login's direct URI: the second run
//!   is a no-op, and the tables and each tool's bookkeeping land in `tenant_custom`;
//! - those, drizzle-orm, Prisma 7 (adapter-pg; client generated offline), node-postgres and
//!   postgres.js read the seed's query 200 times over 4 connections (every row checked) and
//!   write the seed's upsert with jsonb, through the pooled and the direct URIs.

mod common;

use common::*;
use dl_tenancy_ctl::Kind;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const WS: &str = "nodetools";
/// People seeded before the tools run: `person:0` .. `person:39`, display name `Name {i}`.
const PEOPLE: usize = 40;

/// Tools with a migration step: program, its `tool` in the JSON, its table in tenant_custom,
/// its bookkeeping table there, and what its second run prints (None: checked by rows only).
const MIGRATING: &[(&str, &str, &str, &str, Option<&str>)] = &[
    (
        "knex.mjs",
        "knex",
        "knex_notes",
        "knex_migrations",
        Some("Already up to date"),
    ),
    (
        "typeorm.mjs",
        "typeorm",
        "typeorm_notes",
        "migrations",
        Some("No migrations are pending"),
    ),
    (
        "sequelize.mjs",
        "sequelize",
        "sequelize_notes",
        "SequelizeMeta",
        Some("No migrations were executed"),
    ),
    (
        "kysely.mjs",
        "kysely",
        "kysely_notes",
        "kysely_migration",
        None,
    ),
    (
        "drizzle.mjs",
        "drizzle",
        "drizzle_notes",
        "__drizzle_migrations",
        None,
    ),
];

/// Programs with the app step (reads and the upsert), and their `tool`.
const APPS: &[(&str, &str)] = &[
    ("knex.mjs", "knex"),
    ("typeorm.mjs", "typeorm"),
    ("sequelize.mjs", "sequelize"),
    ("kysely.mjs", "kysely"),
    ("drizzle.mjs", "drizzle"),
    ("node_postgres.mjs", "node-postgres"),
    ("postgres_js.mjs", "postgres.js"),
    ("prisma.mjs", "prisma"),
];

struct Uris {
    migrate: String,
    read: String,
    write: String,
    pooled: bool,
}

fn run(dir: &Path, cache: &str, program: &str, step: &str, uris: &Uris) -> Value {
    let (stdout, stderr) = run_ok(
        without_env(&mut Command::new("node"), &["PG"])
            .arg(dir.join(program))
            .env("DL_STEP", step)
            .env("DL_POOLED", uris.pooled.to_string())
            .env("DATABASE_URL", &uris.migrate)
            .env("DB_URI", &uris.read)
            .env("DB_OVERRIDE_URI", &uris.write)
            .env("DL_NODE_MODULES", format!("{cache}/node/node_modules"))
            .env("DL_PRISMA_MODULES", format!("{cache}/prisma/node_modules")),
        &format!("node {program} {step} (pooled={})", uris.pooled),
    );
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{program} {step}: {e}:\n{stdout}\n{stderr}"));
    assert!(v["fatal"].is_null(), "{program} {step}: {v:#}");
    v
}

#[test]
fn node_migration_tools_and_orms_work_with_their_defaults() {
    let test = "node_migration_tools_and_orms_work_with_their_defaults";
    let started = Instant::now();
    let Some((dir, cache)) = install_tools("tools_node", test) else {
        return;
    };
    let installed = started.elapsed();
    let prisma = std::fs::read_to_string(format!("{cache}/prisma/status")).unwrap_or_default();
    let prisma_ok = prisma.trim() == "PRISMA_OK";

    let env = Env::new();
    env.t.provision(WS).unwrap();
    seed_named_people(&env, WS, PEOPLE);
    let uris = |pooled| Uris {
        migrate: env.uri(WS, Kind::Override, false),
        read: env.uri(WS, Kind::Read, pooled),
        write: env.uri(WS, Kind::Override, pooled),
        pooled,
    };

    // Migrations, each tool's command twice, through the direct URI.
    for (program, tool, _, _, second) in MIGRATING {
        let v = run(&dir, &cache, program, "migrate", &uris(false));
        assert_eq!(v["tool"], *tool, "{v:#}");
        let runs = v["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{v:#}");
        for r in runs {
            assert_eq!(r["ok"], true, "{tool}: {}", r["out"].as_str().unwrap_or(""));
        }
        if let Some(second) = second {
            let out = runs[1]["out"].as_str().unwrap();
            assert!(out.contains(second), "{tool}: second run: {out}");
        }
        if *tool == "kysely" {
            assert_eq!(runs[1]["out"], "[]", "kysely: second run: {v:#}");
        }
        if *tool == "drizzle" {
            // drizzle-kit's default: CREATE SCHEMA IF NOT EXISTS "drizzle", refused (42501);
            // the recipe keeps its table in tenant_custom.
            assert_eq!(v["default_schema_run"]["ok"], false, "{v:#}");
            let log = env.server_log();
            assert!(
                log.contains("STATEMENT:  CREATE SCHEMA IF NOT EXISTS \"drizzle\""),
                "drizzle-kit's default schema was not what failed"
            );
        }
    }
    let mut admin = env.admin_ws(WS);
    for (_, tool, table, bookkeeping, _) in MIGRATING {
        assert_eq!(
            columns(&mut admin, table),
            ["id", "body", "author"],
            "{tool}: tenant_custom.{table}"
        );
        let applied: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM tenant_custom.\"{bookkeeping}\""),
                &[],
            )
            .unwrap_or_else(|e| panic!("{tool}: tenant_custom.{bookkeeping}: {e}"))
            .get(0);
        assert_eq!(applied, 2, "{tool}: rows of tenant_custom.{bookkeeping}");
    }
    // Nothing landed outside tenant_custom (but the platform's own dl_meta.schema_migrations),
    // and the locks are free.
    let elsewhere: Vec<String> = admin
        .query(
            "SELECT c.relnamespace::regnamespace || '.' || c.relname FROM pg_class c
              WHERE c.relkind IN ('r', 'p') AND c.relname ~ '(notes|migration|Sequelize)'
                AND c.relnamespace::regnamespace::text !~ '^(tenant_custom|dl_|pg_|information_schema)'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    let locked: i32 = admin
        .query_one(
            "SELECT is_locked FROM tenant_custom.knex_migrations_lock",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(locked, 0);
    let locked = count(
        &mut admin,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
    );
    assert_eq!(locked, 0);

    // Reads and the upsert, pooled then direct.
    let mut passed = vec![];
    for pooled in [true, false] {
        for (program, tool) in APPS {
            if *tool == "prisma" && !prisma_ok {
                continue;
            }
            let v = run(&dir, &cache, program, "app", &uris(pooled));
            let what = format!("{tool} (pooled={pooled})");
            assert_eq!(v["tool"], *tool, "{v:#}");
            assert_eq!(v["reads"], 200, "{what}: {v:#}");
            assert_eq!(v["errors"], 0, "{what}: {v:#}");
            assert_eq!(v["wrong"], 0, "{what}: wrong rows: {v:#}");
            assert_eq!(v["upsert_ok"], true, "{what}: {v:#}");
            passed.push(what);
        }
    }
    for (_, tool) in APPS {
        if *tool == "prisma" && !prisma_ok {
            continue;
        }
        let key = format!("person:tool-{tool}");
        let row = admin
            .query_one(
                "SELECT display_name, status, identity_payload->'emails' = '[\"a@example.com\"]',
                        raw_payload = jsonb_build_object('source', $2::text, 'tags', '[\"x\",\"y\"]'::jsonb)
                   FROM dl_resolved.people WHERE identity_key = $1",
                &[&key, tool],
            )
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(row.get::<_, String>(0), format!("Written by {tool}"));
        assert_eq!(row.get::<_, String>(1), "reviewed", "{key}");
        assert!(row.get::<_, bool>(2), "{key}: identity patch's array");
        assert!(row.get::<_, bool>(3), "{key}: raw patch");
    }
    eprintln!(
        "tools_node: {} passed in {:?} (install {:?}): {passed:?}",
        passed.len(),
        started.elapsed(),
        installed
    );
    if !prisma_ok {
        skip_or_fail(&format!("{test} (Prisma)"), prisma.trim());
    }
}
