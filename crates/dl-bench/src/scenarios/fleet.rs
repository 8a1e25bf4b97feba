//! Scenario 11: a workspace of the run's people backed up and moved to another server with
//! the provisioning CLI, against a plain `pg_dump -Fc | pg_restore` of the same database to
//! the same other server, in the same run, interleaved.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use pg_harness::{pg_bin_dir, AppLoop, PgCluster};
use postgres::types::Type;
use postgres::{Client, NoTls};
use serde_json::Value;

use crate::bench::{fail, log, Bench, R};
use crate::data;
use crate::report::Scenario;
use crate::scenarios::tool::Tool;

/// The workspace the scenario provisions.
const WORKSPACE: &str = "bench-fleet";
/// The second server's name in the tool.
const SECOND: &str = "second";
/// The tool's name of the server `local up` starts.
const LOCAL: &str = "local";
/// The seed's override upsert, as the writer sends it through the pooled URI.
const UPSERT: &str = include_str!("../../../../tests/seed/override_upsert.sql");
/// pg_hba.conf of the second server: trust on the socket (the run's admin sessions), TCP only
/// with TLS (the tool's tenants and the pooler).
const TLS_ONLY_HBA: &str = "local all all trust\n\
    hostnossl all all all reject\n\
    hostssl all all 127.0.0.1/32 scram-sha-256\n";

/// Where a server's admin sessions connect: its unix socket, as `postgres` (trust; no
/// password anywhere).
#[derive(Clone)]
pub(crate) struct Socket {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
}

impl Socket {
    pub(crate) fn connect(&self, db: &str) -> R<Client> {
        Ok(postgres::Config::new()
            .host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect(NoTls)?)
    }

    /// A client program (pg_dump, pg_restore) on this socket, with no PG* settings of ours.
    fn program(&self, name: &str, db: &str) -> Command {
        let mut cmd = Command::new(pg_bin_dir().join(name));
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--no-password")
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db]);
        cmd
    }
}

pub fn run(b: &Bench) -> R<Scenario> {
    let mut sc = Scenario::new(
        11,
        "Fleet: backup and move of a workspace",
        "One workspace provisioned with `dl-tenancy provision` on the tool's own local server (`local up`), loaded \
         with the first N of the run's base people (COPY as dl_platform_runtime; N = the run's people, at most \
         100,000 unless --fleet-people says otherwise) and N/10 of its overrides; a second PostgreSQL 15 server \
         (TLS, registered with `server add`) on the same machine. Per repetition, interleaved: (a) `dl-tenancy \
         backup --workspace W --to FILE` (wall time of the CLI call); (b) the baseline, `pg_dump -Fc` of the \
         workspace's database piped into `pg_restore --single-transaction` into a fresh empty database on the server \
         the move goes to (wall time; both over the unix sockets as postgres); (c) `dl-tenancy move --workspace W \
         --to second --method logical` (wall time of the CLI call, and its `paused_ms`, the write-unavailable \
         window from PAUSE to RESUME); (d) `dl-tenancy move --workspace W --to local --method copy` back (the same \
         two figures). An app writes overrides one after another through the workspace's pooled URI during each \
         move.",
    );
    let bin = match &b.cfg.dl_tenancy_bin {
        Some(p) => p.clone(),
        None => {
            sc.pending = Some(
                "pending: no dl-tenancy binary given (scripts/bench passes crates/dl-tenancy's build); no measurement was taken."
                    .into(),
            );
            return Ok(sc);
        }
    };
    log("scenario 11: fleet (dl-tenancy local up, a second server)");
    let dir = pg_harness::temp_dir("dl-bench-fleet")?;
    let tool = Tool {
        bin,
        data: dir.join("dt"),
    };
    let result = measure(b, &tool, &dir, &mut sc);
    let _ = tool.run(&["local", "down"]);
    if std::env::var_os("PG_HARNESS_KEEP").is_none() {
        let _ = fs::remove_dir_all(&dir);
    }
    result?;
    Ok(sc)
}

fn measure(b: &Bench, tool: &Tool, dir: &Path, sc: &mut Scenario) -> R<()> {
    let (_, up) = tool.run(&["local", "up"])?;
    let local = Socket {
        dir: tool.data.join("run"),
        port: up["postgres"]["port"]
            .as_u64()
            .ok_or("local up: no postgres.port")? as u16,
    };
    // Provisioned before the second server exists: placement picks the emptiest server.
    let (_, p) = tool.run(&["provision", "--workspace", WORKSPACE])?;
    if p["status"] != "active" {
        return fail(format!("provision: status {}", p["status"]));
    }
    let (_, st) = tool.run(&["status", "--workspace", WORKSPACE])?;
    let db = st["database"]
        .as_str()
        .ok_or("status: no database")?
        .to_string();
    let (rows, db_bytes) = load_people(b, &local, &db, b.cfg.fleet_people, "scenario 11")?;

    let (second, second_socket) = start_second(b, dir)?;
    let url_file = dir.join("second.url");
    fs::write(
        &url_file,
        second.conn_string("postgres", "postgres").as_bytes(),
    )?;
    tool.run(&[
        "server",
        "add",
        "--name",
        SECOND,
        "--admin-url-file",
        path_str(&url_file)?,
        "--host",
        "127.0.0.1",
        "--port",
        &second.port().to_string(),
        "--ca-file",
        path_str(&dir.join("tls2").join("ca.crt"))?,
    ])?;
    let (_, uri) = tool.run(&[
        "connection-uris",
        "reveal",
        "--workspace",
        WORKSPACE,
        "--kind",
        "override",
        "--pooled",
    ])?;
    let pooled = uri["uri"].as_str().ok_or("reveal: no uri")?.to_string();

    let reps = if b.cfg.quick { 1 } else { b.cfg.reps };
    let load_before = load_average();
    let (mut backup_s, mut dump_s) = (vec![], vec![]);
    // Per method: wall times and windows.
    let (mut move_s, mut paused_s) = ([vec![], vec![]], [vec![], vec![]]);
    let (mut backup_bytes, mut dump_bytes) = (0u64, 0u64);
    let mut writes = Vec::new();
    let mut moved_rows = Value::Null;
    for rep in 0..reps {
        log(format!(
            "scenario 11: repetition {}/{reps}: backup, pg_dump | pg_restore, move there (logical) and back (copy)",
            rep + 1
        ));
        let file = dir.join("ws.backup");
        let (secs, v) =
            tool.run(&["backup", "--workspace", WORKSPACE, "--to", path_str(&file)?])?;
        backup_s.push(secs);
        backup_bytes = v["bytes"].as_u64().unwrap_or(0);
        fs::remove_file(&file)?;

        let (secs, bytes) = dump_restore(&local, &second_socket, &db)?;
        dump_s.push(secs);
        dump_bytes = bytes;

        let legs = [(&second_socket, SECOND, "logical"), (&local, LOCAL, "copy")];
        for (i, (to, to_name, method)) in legs.into_iter().enumerate() {
            let writer = Writer::start(pooled.clone());
            writer.wait_for_acks(5)?;
            let (secs, m) = tool.run(&[
                "move",
                "--workspace",
                WORKSPACE,
                "--to",
                to_name,
                "--method",
                method,
            ])?;
            let moved_at = Instant::now();
            if m["status"] != "moved" || m["method"] != method {
                return fail(format!("move: {m}"));
            }
            writer.wait_for_acks(5)?;
            let w = writer.stop(moved_at, secs)?;
            check_acked(to, &db, &w.acked)?;
            move_s[i].push(secs);
            paused_s[i].push(m["paused_ms"].as_f64().ok_or("move: no paused_ms")? / 1000.0);
            moved_rows = m["rows"].clone();
            writes.push((method, w));
        }
    }
    let [logical_s, copy_s] = move_s;
    let [logical_paused, copy_paused] = paused_s;
    let load_after = load_average();

    let base = sc.baseline(
        "`pg_dump -Fc` piped into `pg_restore --single-transaction`, an empty database on the other server",
        "s",
        dump_s,
    );
    sc.compared(
        "`dl-tenancy backup` (one file, no restore)",
        "s",
        backup_s,
        base,
        None,
    );
    for (label, secs) in [
        (
            "`dl-tenancy move --method logical` (wall time of the call)",
            logical_s,
        ),
        (
            "write-unavailable window of the logical move (`paused_ms`, PAUSE to RESUME)",
            logical_paused,
        ),
        (
            "`dl-tenancy move --method copy` (wall time of the call)",
            copy_s,
        ),
        (
            "write-unavailable window of the copy move (`paused_ms`, PAUSE to RESUME)",
            copy_paused,
        ),
    ] {
        sc.compared(label, "s", secs, base, None);
    }
    for method in ["logical", "copy"] {
        let gaps: Vec<f64> = writes
            .iter()
            .filter(|(m, _)| *m == method)
            .map(|(_, w)| w.longest_gap_s)
            .collect();
        sc.absolute(
            &format!(
                "longest gap between two acknowledged writes of the app during the {method} move"
            ),
            "s",
            gaps,
            None,
        );
    }
    let mb = |v: u64| v as f64 / 1e6;
    sc.notes.push(format!(
        "Workspace: {rows} rows in dl_cache.person_enrichments and the run's overrides; database size {:.1} MB \
         after VACUUM ANALYZE; the backup file {:.1} MB, the baseline's pg_dump archive {:.1} MB. Rows the last \
         move verified: {moved_rows}.",
        mb(db_bytes),
        mb(backup_bytes),
        mb(dump_bytes)
    ));
    sc.notes.push(format!(
        "The app during each move (one connection through the pooled URI, the seed's override upsert, one key \
         after another, reconnecting after an error): {}. Every acknowledged write was found on the target \
         server after the move.",
        writes
            .iter()
            .map(|(method, w)| format!(
                "{method}: {} acknowledged, {} failed",
                w.acked.len(),
                w.errors
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    sc.notes.push(format!(
        "{reps} repetition(s); the machine's load average (1 min) before and after: {load_before} / {load_after}. \
         The logical move streams while the workspace stays live and pauses only to drain the last changes; the \
         copy move dumps and restores inside its pause, so its window grows with the database. Median ratios to \
         the baseline: backup {:.2}; logical move {:.2}, window {:.3}; copy move {:.2}, window {:.2}.",
        sc.ratio(base + 1).unwrap_or(f64::NAN),
        sc.ratio(base + 2).unwrap_or(f64::NAN),
        sc.ratio(base + 3).unwrap_or(f64::NAN),
        sc.ratio(base + 4).unwrap_or(f64::NAN),
        sc.ratio(base + 5).unwrap_or(f64::NAN),
    ));
    drop(second);
    Ok(())
}

pub(crate) fn path_str(p: &Path) -> R<&str> {
    p.to_str()
        .ok_or_else(|| format!("{}: not UTF-8", p.display()).into())
}

/// The first `people` of the run's base people and a tenth as many of its overrides, COPied
/// from the run's database into the workspace's (the people as dl_platform_runtime, the
/// runtime's bulk path). Returns the people's row count and the database's size. `who`
/// names the scenario in the log.
pub(crate) fn load_people(
    b: &Bench,
    local: &Socket,
    db: &str,
    people: u64,
    who: &str,
) -> R<(i64, u64)> {
    log(format!("{who}: loading the workspace"));
    let t = Instant::now();
    let mut src = b.admin()?;
    let mut ws = local.connect(db)?;
    const OVERRIDE_COLUMNS: &str =
        "identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at";
    for (from, into, role) in [
        (
            format!(
                "COPY (SELECT {OVERRIDE_COLUMNS} FROM bench.overrides_src ORDER BY identity_key LIMIT {}) TO STDOUT",
                people / 10
            ),
            format!("COPY dl_override.person_overrides ({OVERRIDE_COLUMNS}) FROM STDIN"),
            "dl_tenant_override",
        ),
        (
            format!(
                "COPY (SELECT {} FROM bench.people_src WHERE i <= {people} ORDER BY i) TO STDOUT",
                data::BASE_COLUMNS
            ),
            format!(
                "COPY dl_cache.person_enrichments ({}) FROM STDIN",
                data::BASE_COLUMNS
            ),
            "dl_platform_runtime",
        ),
    ] {
        ws.batch_execute(&format!("SET ROLE {role}"))?;
        let mut r = src.copy_out(&from)?;
        let mut w = ws.copy_in(&into)?;
        std::io::copy(&mut r, &mut w)?;
        w.finish()?;
        drop(r);
        ws.batch_execute("RESET ROLE")?;
    }
    ws.batch_execute(
        "VACUUM ANALYZE dl_cache.person_enrichments, dl_override.person_overrides, dl_internal.resolved_people",
    )?;
    let rows: i64 = ws
        .query_one("SELECT count(*) FROM dl_cache.person_enrichments", &[])?
        .get(0);
    let bytes: i64 = ws
        .query_one("SELECT pg_database_size(current_database())", &[])?
        .get(0);
    log(format!(
        "{who}: {rows} people loaded in {:.1} s ({:.1} MB)",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    ));
    Ok((rows, bytes as u64))
}

/// The second server: TLS with its own CA (tests/fleet.rs does the same), the run's private
/// copy of the extension's library, the run's memory settings.
fn start_second(b: &Bench, dir: &Path) -> R<(PgCluster, Socket)> {
    let (certs, _) = dl_tenancy_ctl::certs::ensure(&dir.join("tls2"), &["localhost", "127.0.0.1"])
        .map_err(|e| e.to_string())?;
    let pg = PgCluster::builder()
        .conf("ssl", "on")
        .conf("ssl_cert_file", path_str(&certs.server_cert)?)
        .conf("ssl_key_file", path_str(&certs.server_key)?)
        .conf(
            "dynamic_library_path",
            &format!("{}:$libdir", b.lib_dir.display()),
        )
        .conf("max_wal_size", "4GB")
        .conf("wal_level", "logical")
        .hba(TLS_ONLY_HBA)
        .start()?;
    let socket = Socket {
        dir: pg.socket_dir().to_path_buf(),
        port: pg.port(),
    };
    Ok((pg, socket))
}

/// The baseline: `pg_dump -Fc` of `db` on `from` piped into `pg_restore` into a fresh empty
/// database on `to` (created before and dropped after, untimed). Returns the seconds of the
/// pipe and the archive's size.
pub(crate) fn dump_restore(from: &Socket, to: &Socket, db: &str) -> R<(f64, u64)> {
    const FRESH: &str = "bench_plain_copy";
    let mut admin = to.connect("postgres")?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {FRESH}"))?;
    admin.batch_execute(&format!("CREATE DATABASE {FRESH} TEMPLATE template0"))?;
    let t = Instant::now();
    let mut dump = from
        .program("pg_dump", db)
        .arg("--format=custom")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut archive = dump.stdout.take().ok_or("pg_dump: no stdout")?;
    let mut restore = to
        .program("pg_restore", FRESH)
        .args(["--single-transaction", "--exit-on-error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = restore.stdin.take().ok_or("pg_restore: no stdin")?;
    // Counted on the way through: the archive's size.
    let bytes = std::io::copy(&mut archive, &mut input)?;
    drop(input);
    let dump_status = dump.wait()?;
    let restore_out = restore.wait_with_output()?;
    let secs = t.elapsed().as_secs_f64();
    let mut dump_err = String::new();
    if let Some(mut e) = dump.stderr.take() {
        e.read_to_string(&mut dump_err)?;
    }
    if !dump_status.success() || !restore_out.status.success() {
        return fail(format!(
            "pg_dump ({dump_status}) | pg_restore ({}) failed: {dump_err} {}",
            restore_out.status,
            String::from_utf8_lossy(&restore_out.stderr)
        ));
    }
    let copied: i64 = to
        .connect(FRESH)?
        .query_one("SELECT count(*) FROM dl_cache.person_enrichments", &[])?
        .get(0);
    let source: i64 = from
        .connect(db)?
        .query_one("SELECT count(*) FROM dl_cache.person_enrichments", &[])?
        .get(0);
    if copied != source {
        return fail(format!(
            "pg_dump | pg_restore copied {copied} people of {source}"
        ));
    }
    admin.batch_execute(&format!("DROP DATABASE {FRESH}"))?;
    Ok((secs, bytes))
}

/// Every write the app saw acknowledged is in the moved database.
fn check_acked(to: &Socket, db: &str, acked: &[String]) -> R<()> {
    let mut c = to.connect(db)?;
    let found: i64 = c
        .query_one(
            "SELECT count(*) FROM dl_override.person_overrides WHERE identity_key = ANY($1)",
            &[&acked],
        )?
        .get(0);
    if found != acked.len() as i64 {
        return fail(format!(
            "{} of {} acknowledged writes are missing after the move",
            acked.len() as i64 - found,
            acked.len()
        ));
    }
    Ok(())
}

/// What the app saw during one move.
struct Writes {
    acked: Vec<String>,
    errors: usize,
    longest_gap_s: f64,
}

/// An app writing overrides through the pooled URI, one key after another, reconnecting
/// after an error; keeps the time of each acknowledgement.
struct Writer(AppLoop<String>);

impl Writer {
    fn start(uri: String) -> Writer {
        // A fresh prefix per move: keys of earlier moves are already on the server.
        let prefix = format!("bench-move-{}", dl_tenancy_ctl::secret::new_handle());
        let sep = if uri.contains('?') { '&' } else { '?' };
        let uri = format!("{uri}{sep}connect_timeout=5");
        let mut client: Option<Client> = None;
        Writer(AppLoop::start(move |i| {
            if client.is_none() {
                client = dl_tenancy_ctl::connection::client_config(&uri)
                    .ok()
                    .and_then(|(cfg, tls)| cfg.connect(tls).ok());
            }
            let key = format!("{prefix}:{i}");
            let c = client.as_mut().ok_or(())?;
            let row: [(&(dyn postgres::types::ToSql + Sync), Type); 4] = [
                (&key, Type::TEXT),
                (&"customer", Type::TEXT),
                (&r#"{"title":"moved"}"#, Type::TEXT),
                (&r#"{"source":"bench"}"#, Type::TEXT),
            ];
            match c.query_typed(UPSERT, &row) {
                Ok(_) => Ok(key),
                Err(_) => {
                    client = None;
                    Err(())
                }
            }
        }))
    }

    /// Waits (by observed state) until `n` more writes are acknowledged.
    fn wait_for_acks(&self, n: usize) -> R<()> {
        let stalled = "the app's writes through the pooled URI stalled for 2 minutes";
        self.0
            .wait_for_more(n, std::time::Duration::from_secs(120))
            .or_else(|_| fail(stalled))
    }

    /// Stops the app; the longest gap between acknowledgements within the move, which
    /// returned at `moved_at` after `move_secs`.
    fn stop(self, moved_at: Instant, move_secs: f64) -> R<Writes> {
        let (acked, errors) = self.0.stop()?;
        let started = moved_at - std::time::Duration::from_secs_f64(move_secs);
        // From the last ack before the move to the first after its end, every gap that
        // overlaps the move.
        let mut longest = 0.0f64;
        for pair in acked.windows(2) {
            let (a, b) = (pair[0].1, pair[1].1);
            if b >= started && a <= moved_at {
                longest = longest.max((b - a).as_secs_f64());
            }
        }
        Ok(Writes {
            acked: acked.into_iter().map(|(k, _)| k).collect(),
            errors,
            longest_gap_s: longest,
        })
    }
}

/// The 1-minute load average.
pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
