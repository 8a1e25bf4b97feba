//! What app developers' tools do with their defaults, through a workspace's own URIs, direct
//! and pooled: migration tools keep their bookkeeping in `current_schema()` and take an
//! advisory lock to run alone (Rails, Kysely), drivers' pools reset each connection they take
//! back (asyncpg), and apps name the resolved views unqualified.

mod common;

use common::*;
use dl_tenancy_ctl::Kind;
use postgres::Client;

fn text(c: &mut Client, sql: &str) -> String {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn boolean(c: &mut Client, sql: &str) -> bool {
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn migration_tools_and_pools_work_with_their_defaults() {
    let env = Env::new();
    env.t.provision("app").unwrap();
    for pooled in [false, true] {
        let uri = env.uri("app", Kind::Override, pooled);
        let mut c = connect(&uri).unwrap();
        // Django, Alembic, knex, TypeORM, ...: the first schema of the path is the tenant's.
        assert_eq!(
            text(&mut c, "SELECT current_schema()::text"),
            "tenant_custom"
        );
        let table = format!("schema_migrations_{pooled}");
        c.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (version text PRIMARY KEY);
             INSERT INTO {table} VALUES ('20261207000000');"
        ))
        .unwrap();
        let schema = format!(
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = '{table}'::regclass"
        );
        assert_eq!(text(&mut c, &schema), "tenant_custom");
        // drizzle-kit's first statement, for a schema the login may use; another schema
        // is still the database owner's to create.
        c.batch_execute("CREATE SCHEMA IF NOT EXISTS tenant_custom")
            .unwrap();
        let e = c
            .batch_execute("CREATE SCHEMA IF NOT EXISTS drizzle")
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e}");
        // The resolved views, unqualified.
        c.batch_execute("SELECT count(*) FROM people; SELECT count(*) FROM companies")
            .unwrap();
        // Rails' and Kysely's migration locks: a session lock another session cannot take,
        // released by its holder (direct: through a transaction pooler two clients may share
        // one server session, as PgBouncer documents); a transaction lock.
        assert!(boolean(&mut c, "SELECT pg_try_advisory_lock(5432100)"));
        if !pooled {
            let mut other = connect(&uri).unwrap();
            assert!(!boolean(&mut other, "SELECT pg_try_advisory_lock(5432100)"));
        }
        assert!(boolean(&mut c, "SELECT pg_advisory_unlock(5432100)"));
        c.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7, 8); COMMIT")
            .unwrap();
        // asyncpg's pool reset, as it sends it, and the all-in-one one other pools send.
        c.batch_execute("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL")
            .unwrap();
        c.batch_execute("DISCARD ALL").unwrap();
        c.batch_execute("SELECT count(*) FROM people").unwrap();
        // The budget: 16 locks a session, then 54000 with a clear message.
        let e = c
            .batch_execute("SELECT count(pg_advisory_lock(g)) FROM generate_series(1, 17) g")
            .unwrap_err();
        assert_eq!(sqlstate(&e), "54000", "{e}");
        assert!(
            e.as_db_error().unwrap().message().contains("at most 16"),
            "{e}"
        );
        c.batch_execute("SELECT pg_advisory_unlock_all()").unwrap();
    }
    for pooled in [false, true] {
        let mut r = connect(&env.uri("app", Kind::Read, pooled)).unwrap();
        assert_eq!(text(&mut r, "SELECT current_schema()::text"), "dl_resolved");
        r.batch_execute(
            "SELECT identity_key, display_name FROM people ORDER BY updated_at DESC LIMIT 20",
        )
        .unwrap();
    }
}

/// `reveal` gives every form a tool takes, and each connects: the URI (with no `%` a tool
/// could read specially), the libpq keyword string (psql, PHP PDO), the parts, and a pgjdbc
/// URL naming the same server, database, login and TLS.
#[test]
fn revealed_connection_strings_fit_every_ecosystem() {
    let env = Env::new();
    env.t.provision("forms").unwrap();
    for kind in Kind::ALL {
        for pooled in [false, true] {
            let r = env.t.reveal("forms", kind, pooled).unwrap();
            assert!(!r.uri.contains('%'), "{}", r.uri);
            assert_eq!(r.user, r.login);
            let ca = r.sslrootcert.clone().expect("the local cluster's CA");
            assert_eq!(
                r.keywords,
                format!(
                    "host={} port={} user={} password={} dbname={} sslmode=verify-full sslrootcert={ca}",
                    r.host, r.port, r.user, r.password, r.database
                )
            );
            assert_eq!(
                r.jdbc_url,
                format!(
                    "jdbc:postgresql://{}:{}/{}?user={}&password={}&sslmode=verify-full&sslrootcert={ca}",
                    r.host, r.port, r.database, r.user, r.password
                )
            );
            for form in [&r.uri, &r.keywords] {
                let mut c = connect(form).unwrap_or_else(|e| panic!("{form}: {e}"));
                c.batch_execute(READ_QUERY).unwrap();
            }
            if psql_available().is_ok() {
                let out = psql(&r.keywords, "SELECT 1");
                assert!(out.status.success(), "{out:?}");
            }
        }
    }
}

/// A session `SET` one pooled client makes (Rails sets its search_path, an app lifts its
/// statement timeout) is never seen by the clients that get that server connection next: the
/// pooler resets it. Ten fresh clients of the same login see the login's own defaults.
#[test]
fn a_pooled_clients_session_settings_stay_its_own() {
    let env = Env::new();
    env.t.provision("sessions").unwrap();
    let uri = env.uri("sessions", Kind::Override, true);
    let mut setter = connect(&uri).unwrap();
    setter
        .batch_execute(
            "SET work_mem = '17MB'; SET search_path = public; SET statement_timeout = 0;
             SET application_name = 'setter'",
        )
        .unwrap();
    let defaults = (
        "16MB".to_string(),
        "tenant_custom, dl_resolved, public, pg_catalog".to_string(),
        "1min".to_string(),
    );
    let mut others: Vec<Client> = (0..10).map(|_| connect(&uri).unwrap()).collect();
    for (i, c) in others.iter_mut().enumerate() {
        let row = c
            .query_one(
                "SELECT current_setting('work_mem'), current_setting('search_path'),
                        current_setting('statement_timeout')",
                &[],
            )
            .unwrap();
        let seen: (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(seen, defaults, "client {i} sees another client's settings");
    }
}

/// A typo in the database name of a pooled URI is refused at once, on the first try and on
/// every one after, with the server's own refusal rather than the pooler's "server down".
/// psql's `connect_timeout=1` bounds each try: a refusal that took longer would show up as
/// psql's timeout instead, and fail the check.
#[test]
fn a_wrong_database_on_the_pooled_uri_is_refused_at_once() {
    if let Err(why) = psql_available() {
        return skip_or_fail(
            "a_wrong_database_on_the_pooled_uri_is_refused_at_once",
            &why,
        );
    }
    let env = Env::new();
    env.t.provision("typo").unwrap();
    let uri = env.uri("typo", Kind::Read, true);
    let db = env.database("typo");
    let wrong = uri.replacen(&format!("/{db}?"), &format!("/{db}x?connect_timeout=1&"), 1);
    assert_ne!(wrong, uri);
    for attempt in 0..10 {
        let out = psql(&wrong, "SELECT 1");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "attempt {attempt}: {stderr}");
        assert!(
            stderr.contains("pg_hba.conf rejects connection") && !stderr.contains("timeout"),
            "attempt {attempt}: {stderr}"
        );
    }
}
