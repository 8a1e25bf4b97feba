//! Scenario 16: point-in-time recovery (issue 24). On the tool's own local server (`local up`:
//! pgBackRest archiving, `archive_timeout` 60 s), holding other workspaces, a workspace of the
//! run's people is restored as it was at a noted time into a new workspace, against a plain
//! `pg_dump -Fc | pg_restore` of the same database in the same run, interleaved; then, while
//! apps write overrides, the archive lag `archive status` reports is sampled.
//!
//! Quick mode (CI) uses a small workspace and checks only that things worked: the restored
//! workspace has exactly the source's row counts at the noted time.

use std::time::{Duration, Instant};

use postgres::Client;
use serde_json::Value;

use crate::bench::{fail, log, Bench, R};
use crate::report::{median, Scenario};
use crate::scenarios::archive_lag::{self, Load, LSN_EVERY, WRITERS};
use crate::scenarios::fleet::{dump_restore, load_average, load_people, Socket};
use crate::scenarios::tool::Tool;

/// The workspace restored; its neighbours are `bench-pitr-other-N`.
const WORKSPACE: &str = "bench-pitr";
/// The tables whose row counts a restore must bring back as they were at the noted time.
const COUNTED: [&str; 5] = [
    "dl_cache.person_enrichments",
    "dl_override.person_overrides",
    "dl_override.person_override_history",
    "dl_internal.resolved_people",
    "tenant_custom.account_notes",
];

/// The sizes of one run of the scenario.
struct Plan {
    people: u64,
    others: usize,
    other_people: u64,
    reps: usize,
    load: Duration,
    status_every: Duration,
}

fn plan(b: &Bench) -> Plan {
    let people = b.cfg.sizes.people;
    if b.cfg.quick {
        Plan {
            people: people.min(2_000),
            others: 2,
            other_people: people.min(200),
            reps: 1,
            load: Duration::from_secs(4),
            status_every: Duration::from_millis(250),
        }
    } else {
        Plan {
            people: people.min(100_000),
            others: 4,
            other_people: people.min(10_000),
            reps: b.cfg.reps,
            load: Duration::from_secs(120),
            status_every: Duration::from_secs(1),
        }
    }
}

pub fn run(b: &Bench) -> R<Scenario> {
    let p = plan(b);
    let mut sc = Scenario::new(
        16,
        "Point-in-time restore of a workspace, and the archive lag",
        &format!(
            "The tool's own local server (`dl-tenancy local up`: PostgreSQL 15 + PgBouncer, WAL archived by \
             pgBackRest, `archive_timeout` 60 s) holding {others} other workspaces of {op} people each and the one \
             measured: {people} base people (COPY as dl_platform_runtime), {ov} overrides and {ov} rows of a \
             tenant_custom table (written by the tenant's override login). Then `dl-tenancy archive backup --type \
             incr`, more tenant writes (replayed by the restore), a noted time T (the server's clock, at least a \
             second after the backup ended, so the restore starts from it), and deletes and changes by the tenant \
             after T. Per repetition, interleaved: (a) `dl-tenancy restore --workspace W --at T --into W2` (wall time \
             of the CLI call: archiving the WAL up to now, pgBackRest's copy of the database, the scratch server's \
             recovery to T, its dump, a new workspace loaded from it); W2's row counts must equal W's at T ({tables}); \
             W2 is then deprovisioned and purged, untimed; (b) the baseline, `pg_dump -Fc` of W's database piped into \
             `pg_restore --single-transaction` into a fresh database on the same server (wall time; unix socket, as \
             postgres). Then the archive lag: {WRITERS} apps write the seed's override upsert through W's pooled URI \
             (keys uniform over the people and a fiftieth more, so updates and new overrides) for {load} s while \
             `dl-tenancy archive status` is called every {every} s: its `archive_lag_bytes` (WAL written past the \
             last archived segment), the time since its `last_archived_at`, and the data-loss window: the age of the \
             oldest WAL not yet archived, from the WAL position noted every {lsn} s (an upper bound within that \
             step).",
            others = p.others,
            op = p.other_people,
            people = p.people,
            ov = p.people / 10,
            tables = COUNTED.join(", "),
            load = p.load.as_secs_f64(),
            every = p.status_every.as_secs_f64(),
            lsn = LSN_EVERY.as_secs_f64(),
        ),
    );
    sc.in_summary = true;
    let Some(bin) = b.cfg.dl_tenancy_bin.clone() else {
        sc.pending = Some(
            "pending: no dl-tenancy binary given (scripts/bench passes crates/dl-tenancy's build); no measurement was taken."
                .into(),
        );
        return Ok(sc);
    };
    log("scenario 16: point-in-time recovery (dl-tenancy local up, pgBackRest)");
    let dir = pg_harness::temp_dir("dl-bench-pitr")?;
    let tool = Tool {
        bin,
        data: dir.join("dt"),
    };
    let result = measure(b, &p, &tool, &mut sc);
    let _ = tool.run(&["local", "down"]);
    if std::env::var_os("PG_HARNESS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result?;
    Ok(sc)
}

fn measure(b: &Bench, p: &Plan, tool: &Tool, sc: &mut Scenario) -> R<()> {
    let (_, up) = tool.run(&["local", "up"])?;
    let local = Socket {
        dir: tool.data.join("run"),
        port: up["postgres"]["port"]
            .as_u64()
            .ok_or("local up: no postgres.port")? as u16,
    };
    for i in 1..=p.others {
        let ws = format!("{WORKSPACE}-other-{i}");
        let db = provision(tool, &ws)?;
        load_people(b, &local, &db, p.other_people, "scenario 16")?;
    }
    let db = provision(tool, WORKSPACE)?;
    let (people, db_bytes) = load_people(b, &local, &db, p.people, "scenario 16")?;
    let direct = reveal(tool, false)?;
    let mut tenant = tenant_client(&direct)?;
    let notes = p.people / 10;
    tenant.batch_execute(&format!(
        "CREATE TABLE tenant_custom.account_notes (
             id bigint PRIMARY KEY, identity_key text NOT NULL, note text NOT NULL, score int,
             updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO tenant_custom.account_notes (id, identity_key, note, score)
         SELECT i, 'person-' || i, md5(i::text) || ' ' || md5('n' || i), (i % 100)::int
           FROM generate_series(1, {notes}) AS i"
    ))?;

    log("scenario 16: archive backup --type incr");
    let (backup_s, backup) = tool.run(&["archive", "backup", "--type", "incr"])?;
    let label = backup["last_backup"]["label"]
        .as_str()
        .ok_or("archive backup: no last_backup.label")?
        .to_string();
    let stopped = backup["last_backup"]["stopped_at"]
        .as_str()
        .ok_or("archive backup: no last_backup.stopped_at")?
        .to_string();
    // Writes after the backup: the restore replays them from the archived WAL.
    let k = (p.people / 1000).max(5);
    tenant.batch_execute(&format!(
        "UPDATE dl_override.person_overrides SET status = 'reviewed'
          WHERE identity_key IN (SELECT identity_key FROM dl_override.person_overrides
                                  ORDER BY identity_key DESC LIMIT {k});
         INSERT INTO tenant_custom.account_notes (id, identity_key, note)
         SELECT i, 'person-' || i, 'after the backup' FROM generate_series({notes} + 1, {notes} + {k}) AS i"
    ))?;
    let mut admin = local.connect("postgres")?;
    wait_for_clock(&mut admin, &stopped)?;
    let then = counts(&local, &db)?;
    let at: String = admin
        .query_one("SELECT clock_timestamp()::text", &[])?
        .get(0);
    // After T the tenant deletes and changes rows: none of it may come back.
    tenant.batch_execute(&format!(
        "DELETE FROM dl_override.person_overrides WHERE identity_key IN
             (SELECT identity_key FROM dl_override.person_overrides ORDER BY identity_key LIMIT {k});
         UPDATE dl_override.person_overrides SET status = 'churned' WHERE identity_key IN
             (SELECT identity_key FROM dl_override.person_overrides ORDER BY identity_key OFFSET {k} LIMIT {k});
         DELETE FROM tenant_custom.account_notes WHERE id % 10 = 0;
         INSERT INTO tenant_custom.account_notes (id, identity_key, note)
         SELECT i, 'person-' || i, 'after T' FROM generate_series({notes} + {k} + 1, {notes} + 2 * {k}) AS i"
    ))?;
    drop(tenant);
    if counts(&local, &db)? == then {
        return fail("the tenant's changes after T left every count as it was");
    }

    let (mut restore_s, mut dump_s) = (vec![], vec![]);
    let (mut dump_bytes, mut restored) = (0u64, Value::Null);
    let load_before = load_average();
    for rep in 0..p.reps {
        log(format!(
            "scenario 16: repetition {}/{}: restore --at and pg_dump | pg_restore",
            rep + 1,
            p.reps
        ));
        for first in [rep % 2 == 0, rep % 2 == 1] {
            if first {
                let (secs, bytes) = dump_restore(&local, &local, &db)?;
                dump_s.push(secs);
                dump_bytes = bytes;
                continue;
            }
            let into = format!("{WORKSPACE}-at-{}", rep + 1);
            let (secs, r) = tool.run(&[
                "restore",
                "--workspace",
                WORKSPACE,
                "--at",
                &at,
                "--into",
                &into,
            ])?;
            restore_s.push(secs);
            if r["backup"]["label"] != label.as_str() {
                return fail(format!(
                    "restore --at started from backup {} instead of {label}: {r}",
                    r["backup"]["label"]
                ));
            }
            let into_db = r["restored"]["database"]
                .as_str()
                .ok_or("restore: no restored.database")?;
            let got = counts(&local, into_db)?;
            if got != then {
                return fail(format!(
                    "{into} restored at {at} has row counts {got:?}, {WORKSPACE} had {then:?}"
                ));
            }
            restored = r;
            tool.run(&[
                "deprovision",
                "--workspace",
                &into,
                "--confirm",
                &into,
                "--retention",
                "0",
            ])?;
            tool.run(&["purge", "--workspace", &into, "--confirm", &into])?;
        }
    }
    let load_after = load_average();
    let base = sc.baseline(
        "`pg_dump -Fc` piped into `pg_restore --single-transaction`, a fresh database on the same server",
        "s",
        dump_s,
    );
    let pitr = sc.compared(
        "`dl-tenancy restore --workspace W --at T --into W2` (wall time of the call)",
        "s",
        restore_s,
        base,
        None,
    );
    sc.absolute(
        "`dl-tenancy archive backup --type incr` after the load (once)",
        "s",
        vec![backup_s],
        None,
    );

    let load = Load {
        pooled: reveal(tool, true)?,
        keys: p.people + p.people / 50,
        duration: p.load,
        status_every: p.status_every,
    };
    let lag = archive_lag::measure(&load, tool, &local, &mut admin)?;
    sc.absolute(
        "archive lag under the write load: `archive_lag_bytes`",
        "MB",
        lag.bytes.iter().map(|b| b / 1e6).collect(),
        None,
    );
    sc.absolute(
        "archive lag under the write load: time since `last_archived_at`",
        "s",
        lag.since.clone(),
        None,
    );
    sc.absolute(
        "data-loss window under the write load: age of the oldest WAL not archived",
        "s",
        lag.window.clone(),
        None,
    );
    sc.absolute(
        "the write load: acknowledged override writes per second",
        "writes/s",
        vec![lag.writes as f64 / lag.secs],
        None,
    );
    sc.absolute(
        "the write load: WAL written per second",
        "MB/s",
        vec![lag.wal_bytes as f64 / 1e6 / lag.secs],
        None,
    );

    let server_mb: i64 = admin
        .query_one(
            "SELECT (sum(pg_database_size(oid)) / 1000000)::bigint FROM pg_database",
            &[],
        )?
        .get(0);
    sc.notes.push(format!(
        "Workspace: {people} people, {} overrides at T; its database {:.1} MB after VACUUM ANALYZE (before the \
         tenant_custom rows); the baseline's pg_dump archive {:.1} MB; the server held {server_mb} MB in all \
         after the run. Row counts at T, equal in every restored workspace: {then:?} ({}). The last restore \
         started from backup {} and reported the window {}.",
        then[1],
        db_bytes as f64 / 1e6,
        dump_bytes as f64 / 1e6,
        COUNTED.join(", "),
        restored["backup"]["label"],
        restored["window"]
    ));
    sc.notes.push(format!(
        "{} repetition(s), interleaved (the baseline first in the 1st, 3rd, ...); the machine's load average (1 min) \
         before and after: {load_before} / {load_after}. Median ratio of the point-in-time restore to the \
         baseline: {:.2}.",
        p.reps,
        sc.ratio(pitr).unwrap_or(f64::NAN)
    ));
    sc.notes.push(format!(
        "The write load: {} writes acknowledged in {:.1} s, {} failed; {:.1} MB of WAL; {} segments archived, {} \
         archive failures meanwhile; {} `archive status` samples (median {:.3} s a call). Data-loss window: \
         median {:.2} s, max {:.2} s; time since `last_archived_at`: median {:.2} s, max {:.2} s; lag: \
         median {:.1} MB, max {:.1} MB.",
        lag.writes,
        lag.secs,
        lag.errors,
        lag.wal_bytes as f64 / 1e6,
        lag.archived,
        lag.failures,
        lag.bytes.len(),
        median(&lag.call_s),
        median(&lag.window),
        crate::report::max(&lag.window),
        median(&lag.since),
        crate::report::max(&lag.since),
        median(&lag.bytes) / 1e6,
        crate::report::max(&lag.bytes) / 1e6,
    ));
    Ok(())
}

/// Provisions `ws` (checked active); returns its database.
fn provision(tool: &Tool, ws: &str) -> R<String> {
    let (_, v) = tool.run(&["provision", "--workspace", ws])?;
    if v["status"] != "active" {
        return fail(format!("provision {ws}: status {}", v["status"]));
    }
    let (_, st) = tool.run(&["status", "--workspace", ws])?;
    Ok(st["database"]
        .as_str()
        .ok_or("status: no database")?
        .to_string())
}

/// The override login's URI of the measured workspace, direct or through the pooler.
fn reveal(tool: &Tool, pooled: bool) -> R<String> {
    let mut args = vec![
        "connection-uris",
        "reveal",
        "--workspace",
        WORKSPACE,
        "--kind",
        "override",
    ];
    if pooled {
        args.push("--pooled");
    }
    let (_, v) = tool.run(&args)?;
    Ok(v["uri"].as_str().ok_or("reveal: no uri")?.to_string())
}

/// A session as the tenant (TLS, verified, as the tool's own connector does it).
fn tenant_client(uri: &str) -> R<Client> {
    let (cfg, tls) = dl_tenancy_ctl::connection::client_config(uri).map_err(|e| e.to_string())?;
    Ok(cfg.connect(tls)?)
}

/// Row counts of [`COUNTED`] in `db`, in that order.
fn counts(local: &Socket, db: &str) -> R<Vec<i64>> {
    let mut c = local.connect(db)?;
    let mut out = Vec::new();
    for t in COUNTED {
        out.push(
            c.query_one(&format!("SELECT count(*) FROM {t}"), &[])?
                .get(0),
        );
    }
    Ok(out)
}

/// Waits until the server's clock is a second past `stopped` (a backup's stop time, kept to
/// the second): from then on a restore to now starts from that backup.
fn wait_for_clock(admin: &mut Client, stopped: &str) -> R<()> {
    let started = Instant::now();
    loop {
        let past: bool = admin
            .query_one(
                "SELECT clock_timestamp() >= $1::text::timestamptz + interval '1 second'",
                &[&stopped],
            )?
            .get(0);
        if past {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return fail(format!("the server's clock did not pass {stopped} + 1 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
