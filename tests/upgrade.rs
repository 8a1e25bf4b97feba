//! ALTER EXTENSION dl_tenancy UPDATE from every released version: nothing lost, the result
//! equal to a fresh install, customers writing meanwhile, and pg_dump round trips.

use dl_tenancy_extension_tests::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

const OLDEST: &str = "CREATE EXTENSION dl_tenancy VERSION '0.1.0'";
/// Every released version (sql/released/), oldest first, and the version this tree builds.
const RELEASED: [&str; 6] = ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0"];
const CURRENT: &str = "0.7.0";

#[test]
fn upgrade_from_every_release_keeps_every_row_and_equals_a_fresh_install() {
    let tc = TenantCluster::start();
    let mut fresh = tc.create_db_with("fresh", "CREATE EXTENSION dl_tenancy");
    let installed = catalog_snapshot(&mut fresh);
    assert!(
        installed.len() > 200,
        "the snapshot covers the extension: {} lines",
        installed.len()
    );
    for from in RELEASED {
        let db = format!("from_{}", from.replace('.', "_"));
        let mut old = tc.create_db_with(
            &db,
            &format!("CREATE EXTENSION dl_tenancy VERSION '{from}'"),
        );
        old.batch_execute(LOAD_TENANT_DATA).unwrap();
        let before = tenant_rows(&mut old);

        old.batch_execute("ALTER EXTENSION dl_tenancy UPDATE")
            .unwrap();
        let after = tenant_rows(&mut old);
        // 0.4.0's hardening reached the upgraded database: no tenant role may run a built-in
        // that writes state shared by the whole server (releasing advisory locks aside: 0.6.0).
        let shared_state: i64 = old
            .query_one(
                "SELECT count(*) FROM pg_proc p, unnest(ARRAY['dl_tenant_read', 'dl_tenant_override']) r
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace
                    AND (p.proname ~ '^pg_(try_)?advisory_' OR p.proname ~ '^lo_' OR p.proname IN ('loread', 'lowrite', 'pg_notify'))
                    AND p.proname !~ '^pg_advisory_unlock'
                    AND has_function_privilege(r, p.oid, 'EXECUTE')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(shared_state, 0, "from {from}");
        for ((name, was), (_, is)) in before.iter().zip(&after) {
            assert_eq!(was, is, "{name} changed in the upgrade from {from}");
        }
        assert!(before
            .iter()
            .all(|(_, rows)| rows.as_array().is_some_and(|r| !r.is_empty())));

        // overridden_fields (0.2.0) is right for every existing row.
        let wrong: i64 = old
            .query_one(
                "SELECT count(*) FROM dl_resolved.people p LEFT JOIN dl_override.person_overrides o USING (identity_key)
                  WHERE p.overridden_fields IS DISTINCT FROM
                        COALESCE(ARRAY(SELECT f FROM (SELECT jsonb_object_keys(o.identity_payload_patch) f
                                                      UNION SELECT 'status' WHERE o.status IS NOT NULL) s ORDER BY f COLLATE \"C\"), '{}')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(wrong, 0, "from {from}");
        let fields: Value = old
            .query_one("SELECT to_jsonb(overridden_fields) FROM dl_resolved.people WHERE identity_key = 'person-2'", &[])
            .unwrap()
            .get(0);
        assert_eq!(fields, json!(["address", "status", "tags", "title"]));
        // Each existing override has exactly one history row: imported by the 0.2.0 update,
        // or recorded when it was written at 0.2.0.
        let history = old
            .query_one(
                "SELECT count(*), count(DISTINCT identity_key), bool_and(operation = $1)
                   FROM dl_override.person_override_history",
                &[&if from == "0.1.0" { "import" } else { "insert" }],
            )
            .unwrap();
        assert_eq!(history.get::<_, i64>(0), 120);
        assert_eq!(history.get::<_, i64>(1), 120);
        assert!(history.get::<_, bool>(2));
        let migrations: Vec<String> = old
            .query("SELECT version || ' ' || action FROM dl_meta.schema_migrations ORDER BY applied_at, version", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: Vec<String> = std::iter::once(format!("{from} install"))
            .chain(
                RELEASED
                    .iter()
                    .chain([&CURRENT])
                    .filter(|v| **v > from)
                    .map(|v| format!("{v} update")),
            )
            .collect();
        assert_eq!(migrations, expected);

        let upgraded = catalog_snapshot(&mut old);
        let only_upgraded: Vec<_> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
        let only_fresh: Vec<_> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
        assert!(
            only_upgraded.is_empty() && only_fresh.is_empty(),
            "a database upgraded from {from} differs from a fresh install\nonly upgraded:\n{only_upgraded:#?}\nonly fresh:\n{only_fresh:#?}"
        );
    }
    // A fresh install records only itself.
    let migrations: Vec<String> = fresh
        .query(
            "SELECT version || ' ' || action FROM dl_meta.schema_migrations",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(migrations, [format!("{CURRENT} install")]);
}

/// Customers keep writing overrides (helper and raw SQL) while the upgrade runs: every write
/// that reported success is there afterwards, and no error but a retryable one was seen.
///
/// The overlap is observed, not timed: the writers are seen writing, the upgrade runs in a
/// transaction that stays open until the server shows a writer waiting for its locks, and after
/// the commit every writer is seen writing again.
#[test]
fn writes_during_the_upgrade_are_kept() {
    const WRITERS: usize = 2;
    let tc = TenantCluster::start();
    let mut admin = tc.create_db_with("busy", OLDEST);
    admin.batch_execute(LOAD_TENANT_DATA).unwrap();
    // The loaded overrides date from 2025, and so do the history rows the 0.2.0 step imports
    // for them: from 0.7.0 on, the history's age retention deletes those at the next write.
    // This test counts them, so its writers keep every age.
    admin
        .batch_execute("ALTER DATABASE busy SET dl_tenancy.history_max_age = 0")
        .unwrap();
    let mut observer = tc.admin("busy");
    let upgrader = backend_pid(&mut admin);

    let stop = Arc::new(AtomicBool::new(false));
    // Writes each writer has seen succeed so far.
    let acknowledged: Vec<Arc<AtomicUsize>> = (0..WRITERS)
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let (pid_tx, pid_rx) = mpsc::channel();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let conn = tc.cluster.conn_string("postgres", "busy");
            let stop = stop.clone();
            let ack = acknowledged[w].clone();
            let pid_tx = pid_tx.clone();
            thread::spawn(move || {
                let mut client = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
                pid_tx.send(backend_pid(&mut client)).unwrap();
                let mut written = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) || i < 50 {
                    let key = format!("w{w}-{i}");
                    let statement = if i % 2 == 0 {
                        "SELECT 1 FROM dl_apply_person_override($1, NULL, jsonb_build_object('name', $1::text), NULL)"
                    } else {
                        "INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch)
                         VALUES ($1, jsonb_build_object('name', $1::text))"
                    };
                    loop {
                        match client.execute(statement, &[&key]) {
                            Ok(_) => break,
                            Err(e) => {
                                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                                // Deadlock and serialization failures are the retryable kind.
                                assert!(code == "40P01" || code == "40001", "writer {w}: {key}: {e:?}");
                            }
                        }
                    }
                    written.push(key);
                    i += 1;
                    ack.store(i, Ordering::SeqCst);
                }
                written
            })
        })
        .collect();
    let pids: Vec<i32> = (0..WRITERS)
        .map(|_| pid_rx.recv_timeout(SAFETY_NET).expect("a writer connects"))
        .collect();
    // Writers end only when told to stop, or when one fails.
    let a_writer_ended = || writers.iter().any(|h| h.is_finished());
    let counts = || -> Vec<usize> {
        acknowledged
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    };

    // Every writer is writing.
    wait_until(
        "every writer to acknowledge writes before the upgrade",
        || counts().iter().all(|&n| n >= 5),
        a_writer_ended,
    );
    let before_upgrade = counts();
    // The upgrade, in a transaction kept open until a writer is seen waiting for its locks: the
    // writes overlap it. Should the upgrade be chosen as a deadlock victim, it is retried, as
    // an operator would.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match admin.batch_execute("BEGIN; ALTER EXTENSION dl_tenancy UPDATE") {
            Ok(()) => break,
            Err(e) if attempts < 5 && e.code().map(|c| c.code()) == Some("40P01") => {
                eprintln!("the upgrade was a deadlock victim; retrying");
                admin.batch_execute("ROLLBACK").unwrap();
            }
            Err(e) => panic!("ALTER EXTENSION dl_tenancy UPDATE: {e}"),
        }
    }
    let waiting = wait_until_blocked_by(&mut observer, &pids, upgrader, a_writer_ended);
    eprintln!(
        "writers {waiting:?} wait for the open upgrade; acknowledged before it {before_upgrade:?}, now {:?}",
        counts()
    );
    admin.batch_execute("COMMIT").unwrap();
    // After the commit, every writer is writing again (on the upgraded extension).
    let at_commit = counts();
    wait_until(
        "every writer to acknowledge writes after the upgrade committed",
        || {
            counts()
                .iter()
                .zip(&at_commit)
                .all(|(&n, &then)| n >= then + 5)
        },
        a_writer_ended,
    );
    stop.store(true, Ordering::SeqCst);
    let written: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(written.len() >= 100);

    let version: String = admin
        .query_one("SELECT dl_tenancy_version()", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, CURRENT);
    let missing: i64 = admin
        .query_one(
            "SELECT count(*) FROM unnest($1::text[]) k
              WHERE NOT EXISTS (SELECT FROM dl_resolved.people p WHERE p.identity_key = k AND p.display_name = k)",
            &[&written],
        )
        .unwrap()
        .get(0);
    assert_eq!(missing, 0, "writes lost in the upgrade");
    // Every override is accounted for in the history: imported at the upgrade or recorded since.
    let unrecorded: i64 = admin
        .query_one(
            "SELECT count(*) FROM dl_override.person_overrides o
              WHERE NOT EXISTS (SELECT FROM dl_override.person_override_history h WHERE h.identity_key = o.identity_key)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unrecorded, 0);
}

fn pg_tool(tc: &TenantCluster, tool: &str, args: &[&str]) {
    let status = pg_harness::server_command(pg_harness::pg_bin_dir().join(tool))
        .args([
            "-h",
            &tc.cluster.socket_dir().display().to_string(),
            "-p",
            &tc.cluster.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(status.success(), "{tool} {args:?}: {status}");
}

/// pg_dump of a tenant database, restored into a new database of a cluster that has the roles:
/// every override, base row, setting, customer table and grant survives, the resolved views
/// give the same rows, and the history keeps what it had.
#[test]
fn dump_and_restore_keep_everything() {
    let tc = TenantCluster::start();
    let mut source = tc.create_tenant_db("source");
    source.batch_execute(LOAD_TENANT_DATA).unwrap();
    source
        .batch_execute(
            r#"SELECT dl_apply_person_override('person-7', 'vip', '{"title":"Changed"}', NULL)"#,
        )
        .unwrap();
    let history_before: i64 = source
        .query_one(
            "SELECT count(*) FROM dl_override.person_override_history",
            &[],
        )
        .unwrap()
        .get(0);
    let before = tenant_rows(&mut source);

    // Written by pg_dump, which runs as the server's OS user, into a directory it owns.
    let dump = tc.cluster.socket_dir().join("tenant.dump");
    let dump_path = dump.display().to_string();
    pg_tool(&tc, "pg_dump", &["-Fc", "-f", &dump_path, "source"]);
    tc.admin("postgres")
        .batch_execute("CREATE DATABASE restored")
        .unwrap();
    pg_tool(
        &tc,
        "pg_restore",
        &["--exit-on-error", "-d", "restored", &dump_path],
    );

    let mut restored = tc.admin("restored");
    let after = tenant_rows(&mut restored);
    for ((name, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "{name} differs after restore");
    }
    // The dumped history is back; restoring the overrides recorded them once more, as inserts.
    let history_after: i64 = restored
        .query_one(
            "SELECT count(*) FROM dl_override.person_override_history",
            &[],
        )
        .unwrap()
        .get(0);
    let overrides: i64 = restored
        .query_one("SELECT count(*) FROM dl_override.person_overrides", &[])
        .unwrap()
        .get(0);
    assert_eq!(history_after, history_before + overrides);
    let migrations: i64 = restored
        .query_one("SELECT count(*) FROM dl_meta.schema_migrations", &[])
        .unwrap()
        .get(0);
    assert!(migrations >= 1);
}

/// One object `sql/install/` creates: its kind and its qualified name (for a trigger, the
/// trigger's name and its table).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Created {
    kind: &'static str,
    name: String,
}

/// Every `CREATE SCHEMA | TABLE | VIEW | INDEX | FUNCTION | TRIGGER` statement in
/// `sql/install/*.sql`, read from the files themselves.
fn created_by_install_scripts() -> Vec<Created> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/install");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "sql/install/ has the schema: {files:?}");
    let mut created = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let name = |n: usize| words[n].split('(').next().unwrap().to_string();
            match words.as_slice() {
                ["CREATE", "SCHEMA", ..] => created.push(Created {
                    kind: "schema",
                    name: name(2).trim_end_matches(';').into(),
                }),
                ["CREATE", "TABLE", ..] => created.push(Created {
                    kind: "table",
                    name: name(2),
                }),
                ["CREATE", "VIEW", ..] => created.push(Created {
                    kind: "view",
                    name: name(2),
                }),
                ["CREATE", "FUNCTION", ..] => created.push(Created {
                    kind: "function",
                    name: name(2),
                }),
                // CREATE INDEX name ON schema.table (...): the index lives in the table's schema.
                ["CREATE", "INDEX", index, "ON", table, ..] => {
                    let schema = table.split('.').next().unwrap();
                    created.push(Created {
                        kind: "index",
                        name: format!("{schema}.{index}"),
                    });
                }
                // CREATE TRIGGER name {AFTER|BEFORE} event ON schema.table
                ["CREATE", "TRIGGER", trigger, _, _, "ON", table, ..] => created.push(Created {
                    kind: "trigger",
                    name: format!("{trigger} ON {table}"),
                }),
                ["CREATE", ..] => panic!(
                    "{}: a CREATE this test does not know: {line}",
                    file.display()
                ),
                _ => {}
            }
        }
    }
    created.sort();
    created
}

/// `sql/install/` is the schema: a fresh install has every object it creates, and nothing it
/// does not (no object of the extension comes only from an upgrade script).
#[test]
fn a_fresh_install_is_exactly_what_sql_install_creates() {
    let expected = created_by_install_scripts();
    assert!(
        expected.iter().any(|c| c.kind == "trigger") && expected.iter().any(|c| c.kind == "index")
    );
    let tc = TenantCluster::start();
    let mut db = tc.create_db_with("fresh", "CREATE EXTENSION dl_tenancy");
    // The same kinds and names, read from the catalog: members of the extension, plus the
    // indexes and triggers of its tables (which belong to their table, not the extension).
    let rows = db
        .query(
            "WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'dl_tenancy'),
             members AS (SELECT d.classid, d.objid FROM pg_depend d, ext
                          WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
             rels AS (SELECT c.oid, c.relkind FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid)
             SELECT 'schema', n.nspname::text FROM pg_namespace n JOIN members m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
             UNION ALL
             SELECT CASE r.relkind WHEN 'v' THEN 'view' ELSE 'table' END, r.oid::regclass::text FROM rels r WHERE r.relkind IN ('r', 'v')
             UNION ALL
             SELECT 'function', p.pronamespace::regnamespace || '.' || p.proname
               FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
             UNION ALL
             SELECT 'index', i.indexrelid::regclass::text FROM pg_index i JOIN rels r ON r.oid = i.indrelid
              WHERE NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)
             UNION ALL
             SELECT 'trigger', t.tgname || ' ON ' || t.tgrelid::regclass FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid
              WHERE NOT t.tgisinternal",
            &[],
        )
        .unwrap();
    let mut installed: Vec<Created> = rows
        .iter()
        .map(|r| {
            let kind: String = r.get(0);
            let kind = ["schema", "table", "view", "function", "index", "trigger"]
                .into_iter()
                .find(|k| *k == kind)
                .unwrap();
            Created {
                kind,
                name: r.get(1),
            }
        })
        .collect();
    installed.sort();
    let missing: Vec<_> = expected.iter().filter(|c| !installed.contains(c)).collect();
    let unexplained: Vec<_> = installed.iter().filter(|c| !expected.contains(c)).collect();
    assert!(
        missing.is_empty() && unexplained.is_empty(),
        "created by sql/install/ but not installed: {missing:#?}\ninstalled but not created by sql/install/: {unexplained:#?}"
    );
}
