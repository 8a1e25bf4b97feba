//! Pooled URIs with a driver's defaults: rust-postgres prepares every statement under a name
//! (`s0`, `s1`, ...) with the extended protocol, as psycopg 3, asyncpg and node-postgres with
//! named statements do. Through PgBouncer 1.18 in transaction mode a statement prepared on one
//! server connection was missing on the next ("prepared statement ... does not exist"), or a
//! name met another client's statement. The local pooler (PgBouncer 1.21+,
//! max_prepared_statements) keeps each client's statements its own on every server connection.

mod common;

use common::*;
use dl_tenancy_ctl::Kind;
use serde_json::Value;
use std::process::Command;

/// The workspace `ws` provisioned, `keys` upserted as `verified` through its pooled override
/// URI (that client closed), and two clients on its pooled read URI.
fn two_pooled_readers(
    env: &Env,
    ws: &str,
    keys: &[String],
) -> (postgres::Client, postgres::Client) {
    env.t.provision(ws).unwrap();
    let mut writer = connect(&env.uri(ws, Kind::Override, true)).unwrap();
    for key in keys {
        upsert(&mut writer, key, "verified").unwrap();
    }
    drop(writer);
    let uri = env.uri(ws, Kind::Read, true);
    (connect(&uri).unwrap(), connect(&uri).unwrap())
}

#[test]
fn named_prepared_statements_of_two_clients_stay_apart_through_the_pooler() {
    let env = Env::new();
    let keys: Vec<String> = (0..40).map(|i| format!("person:{i}")).collect();
    let (mut a, mut b) = two_pooled_readers(&env, "prep", &keys);
    // Two clients, statements of different text and result shape, interleaved.
    let by_key = a
        .prepare("SELECT identity_key FROM dl_resolved.people WHERE identity_key = $1")
        .unwrap();
    let status_of = b
        .prepare(
            "SELECT status, length(identity_key) FROM dl_resolved.people WHERE identity_key = $1",
        )
        .unwrap();
    let mut checked = 0;
    for round in 0..5 {
        for key in &keys {
            let rows = a.query(&by_key, &[key]).unwrap();
            assert_eq!(rows.len(), 1, "round {round}: {key}");
            assert_eq!(
                rows[0].get::<_, String>(0),
                *key,
                "round {round}: client a got another row"
            );
            let rows = b.query(&status_of, &[key]).unwrap();
            assert_eq!(rows.len(), 1, "round {round}: {key}");
            assert_eq!(rows[0].get::<_, String>(0), "verified");
            assert_eq!(rows[0].get::<_, i32>(1), key.len() as i32);
            checked += 2;
        }
        // A statement prepared again, and one prepared inside a transaction, keep working.
        let again = a
            .prepare("SELECT count(*) FROM dl_resolved.people WHERE identity_key = ANY($1)")
            .unwrap();
        assert_eq!(a.query_one(&again, &[&keys]).unwrap().get::<_, i64>(0), 40);
        let mut tx = b.transaction().unwrap();
        let inside = tx
            .prepare("SELECT identity_key FROM dl_resolved.people ORDER BY identity_key LIMIT 1")
            .unwrap();
        assert_eq!(
            tx.query_one(&inside, &[]).unwrap().get::<_, String>(0),
            "person:0"
        );
        tx.commit().unwrap();
    }
    assert_eq!(checked, 5 * 40 * 2);
}

/// A statement prepared on one server connection, executed when the pooler has to hand the
/// client another one (a third client holds the first in a transaction): the pooler prepares
/// it there too. Without max_prepared_statements this fails with 26000 ("prepared statement
/// ... does not exist").
#[test]
fn a_prepared_statement_follows_its_client_to_another_server_connection() {
    let env = Env::new();
    let (mut app, mut other) = two_pooled_readers(&env, "moves", &["person:1".to_string()]);
    let stmt = app
        .prepare("SELECT status FROM dl_resolved.people WHERE identity_key = $1")
        .unwrap();
    for _ in 0..3 {
        // The other client's open transaction keeps the server connection the statement was
        // prepared on (the pool's only idle one) busy: the app's next execute gets a new one.
        other.batch_execute("BEGIN; SELECT 1").unwrap();
        let rows = app
            .query(&stmt, &[&"person:1"])
            .unwrap_or_else(|e| panic!("{e} ({:?})", e.code()));
        assert_eq!(rows[0].get::<_, String>(0), "verified");
        other.batch_execute("COMMIT").unwrap();
    }
}

/// People in the driver tests' workspace: `person:0` .. `person:39`, display name `Name {i}`.
const PEOPLE: usize = 40;

/// Python (psycopg 3, asyncpg alone and through its pool, SQLAlchemy 2 on both) and Node.js (node-postgres with unnamed
/// and named statements, postgres.js) with their defaults, four concurrent connections each,
/// through the pooled and the direct URI (TLS, `sslmode=verify-full` with the revealed CA):
/// every point read of key k returns k's row, with no error, and every driver refuses the
/// server when `sslrootcert` names another CA (tests/drivers/*: one JSON line per driver).
#[test]
fn popular_drivers_with_their_defaults_get_the_right_rows() {
    let Some((dir, cache)) = install_tools(
        "drivers",
        "popular_drivers_with_their_defaults_get_the_right_rows",
    ) else {
        return;
    };
    let env = Env::new();
    env.t.provision("drivers").unwrap();
    seed_named_people(&env, "drivers", PEOPLE);
    let (foreign, foreign_dir) = foreign_ca();
    let mut seen = vec![];
    for pooled in [true, false] {
        let read = env.uri("drivers", Kind::Read, pooled);
        let write = env.uri("drivers", Kind::Override, pooled);
        for (program, args) in [
            (
                format!("{cache}/venv/bin/python"),
                dir.join("python_drivers.py"),
            ),
            ("node".to_string(), dir.join("node_drivers.mjs")),
        ] {
            let (stdout, _) = run_ok(
                Command::new(&program)
                    .arg(&args)
                    .env("DL_URI", &read)
                    .env("DL_OVERRIDE_URI", &write)
                    .env("DL_KEYS", PEOPLE.to_string())
                    .env("DL_FOREIGN_CA", &foreign)
                    .env("DL_NODE_MODULES", format!("{cache}/node/node_modules")),
                &format!("{program} {args:?} (pooled={pooled})"),
            );
            for line in stdout.lines() {
                let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let driver = format!("{} (pooled={pooled})", r["driver"].as_str().unwrap());
                assert!(r["queries"].as_u64().unwrap() >= 400, "{driver}: {line}");
                assert_eq!(r["errors"], 0, "{driver}: {line}");
                assert_eq!(r["wrong"], 0, "{driver}: wrong rows: {line}");
                assert_eq!(
                    r["foreign_ca_refused"], true,
                    "{driver}: connected although sslrootcert named another CA: {line}"
                );
                seen.push(driver);
            }
        }
    }
    let _ = std::fs::remove_dir_all(foreign_dir);
    seen.sort();
    assert_eq!(seen.len(), 2 * 8, "{seen:?}");
    // psycopg's Jsonb patch landed.
    let mut admin = env.admin_ws("drivers");
    let name: String = admin
        .query_one(
            "SELECT display_name FROM dl_resolved.people WHERE identity_key = 'person:psycopg'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(name, "Written by psycopg");
}
