//! dl-bench: the dl_tenancy benchmark suite (issue 5).
//!
//! Starts its own throwaway cluster (pg-harness), installs the extension, generates the data
//! deterministically in SQL, runs the scenarios with warm-up and repetitions, each against a
//! baseline measured in the same run, and writes Markdown and JSON. Normally run through
//! `scripts/bench`, which builds and installs the release extension first.
//!
//! It fails (non-zero exit) only on errors, never on a missed target.

mod data;
mod report;

use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pg_harness::{pg_bin_dir, PgCluster};
use postgres::{Client, NoTls, Statement};
use serde_json::{json, Value};

use data::Sizes;
use report::{fmt_num, markdown_table, median, Scenario, Target};

type R<T> = Result<T, Box<dyn Error>>;

fn fail<T>(msg: impl Into<String>) -> R<T> {
    Err(msg.into().into())
}

#[derive(Clone, Debug)]
struct Config {
    quick: bool,
    sizes: Sizes,
    out: PathBuf,
    markdown: Option<PathBuf>,
    json: Option<PathBuf>,
    notes: Option<PathBuf>,
    reps: usize,
    load_reps: usize,
    pgbench_secs: u32,
    lat_iters: usize,
    lat_warmup: usize,
    diagnose: bool,
    load_timeout_factor: f64,
    dl_tenancy_bin: Option<PathBuf>,
    shared_buffers: String,
}

const USAGE: &str = "usage: dl-bench [--quick | --full] [--out DIR] [--markdown FILE] [--json FILE]
                [--notes FILE] [--people N] [--reps N] [--load-reps N] [--pgbench-secs N]
                [--latency-iters N] [--no-diagnose] [--load-timeout-factor X]
                [--dl-tenancy-bin PATH]
  --quick        tiny data, about a second per measurement (CI)
  --full         the issue's sizes: 1,000,000 people, 100,000 overrides (default)
  --people N     scale the full run down or up (overrides and pairs keep the issue's proportions)
  --out DIR      where results go (default bench-out); results.json and BENCHMARKS.md
  --markdown F   also write the Markdown report to F
  --json F       also write the JSON results to F
  --notes F      hand-written analysis included in the Markdown report
  --load-timeout-factor X  statement_timeout of an extension COPY, in multiples of the
                 plain COPY's time (default 10, at least 30 s)
  --dl-tenancy-bin PATH  the provisioning CLI for scenarios 7 and 8";

fn parse_args() -> R<Config> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut people: Option<u64> = None;
    let mut out = PathBuf::from("bench-out");
    let mut markdown = None;
    let mut json_path = None;
    let mut notes = None;
    let mut reps = None;
    let mut load_reps = None;
    let mut secs = None;
    let mut lat_iters = None;
    let mut diagnose = true;
    let mut load_timeout: Option<f64> = None;
    let mut dl_tenancy_bin = None;
    let mut i = 0;
    let value = |i: &mut usize| -> R<String> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("{} needs a value\n{USAGE}", args[*i - 1]).into())
    };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => quick = true,
            "--full" => quick = false,
            "--out" => out = PathBuf::from(value(&mut i)?),
            "--markdown" => markdown = Some(PathBuf::from(value(&mut i)?)),
            "--json" => json_path = Some(PathBuf::from(value(&mut i)?)),
            "--notes" => notes = Some(PathBuf::from(value(&mut i)?)),
            "--people" => people = Some(value(&mut i)?.parse()?),
            "--reps" => reps = Some(value(&mut i)?.parse()?),
            "--load-reps" => load_reps = Some(value(&mut i)?.parse()?),
            "--pgbench-secs" => secs = Some(value(&mut i)?.parse()?),
            "--latency-iters" => lat_iters = Some(value(&mut i)?.parse()?),
            "--no-diagnose" => diagnose = false,
            "--print-data-sql" => {
                // The data-generation SQL for the chosen sizes (for reproducing a plan by hand).
                let s = match people {
                    Some(n) => Sizes::for_people(n),
                    None if quick => Sizes::quick(),
                    None => Sizes::full(),
                };
                println!("{}", data::HELPERS);
                println!("{};", data::people_src_sql(s.people));
                println!("{};", data::overrides_src_sql(&s));
                std::process::exit(0);
            }
            "--load-timeout-factor" => load_timeout = Some(value(&mut i)?.parse()?),
            "--dl-tenancy-bin" => dl_tenancy_bin = Some(PathBuf::from(value(&mut i)?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return fail(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    let sizes = match (quick, people) {
        (_, Some(n)) => Sizes::for_people(n),
        (true, None) => Sizes::quick(),
        (false, None) => Sizes::full(),
    };
    let big = sizes.people >= 200_000;
    Ok(Config {
        quick,
        sizes,
        out,
        markdown,
        json: json_path,
        notes,
        reps: reps.unwrap_or(if quick { 2 } else { 3 }).max(1),
        load_reps: load_reps.unwrap_or(if quick { 2 } else { 3 }).max(1),
        pgbench_secs: secs.unwrap_or(if quick { 1 } else { 10 }).max(1),
        lat_iters: lat_iters.unwrap_or(if quick { 100 } else { 1000 }).max(1),
        lat_warmup: if quick { 20 } else { 200 },
        diagnose,
        load_timeout_factor: load_timeout.unwrap_or(10.0),
        dl_tenancy_bin,
        shared_buffers: if big { "4GB".into() } else { "256MB".into() },
    })
}

fn main() {
    let started = Instant::now();
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dl-bench: {e}");
            std::process::exit(2);
        }
    };
    match run(&cfg) {
        Ok(()) => eprintln!("dl-bench: done in {:.1} s", started.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("dl-bench: error: {}", describe(e.as_ref()));
            std::process::exit(1);
        }
    }
}

/// An error with the server's message, detail, hint and context when it is a database error.
fn describe(e: &(dyn Error + 'static)) -> String {
    if let Some(pe) = e.downcast_ref::<postgres::Error>() {
        if let Some(db) = pe.as_db_error() {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            for (k, v) in [
                ("detail", db.detail()),
                ("hint", db.hint()),
                ("where", db.where_()),
            ] {
                if let Some(v) = v {
                    s.push_str(&format!("\n  {k}: {v}"));
                }
            }
            return s;
        }
    }
    e.to_string()
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[dl-bench {}] {}", clock(), msg.as_ref());
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The throwaway cluster and the connections of the run.
struct Bench {
    cfg: Config,
    cluster: PgCluster,
    work: PathBuf,
    lib_dir: PathBuf,
    settings: Vec<(&'static str, String)>,
}

impl Bench {
    fn connect(&self, user: &str) -> R<Client> {
        Client::connect(&self.cluster.conn_string(user, "bench"), NoTls)
            .map_err(|e| format!("connect as {user}: {e}").into())
    }

    fn admin(&self) -> R<Client> {
        self.connect("postgres")
    }

    /// The server log from byte `from` on (for auto_explain output).
    fn log_since(&self, from: usize) -> String {
        let l = self.cluster.log();
        l.get(from..).unwrap_or("").to_string()
    }

    fn log_len(&self) -> usize {
        self.cluster.log().len()
    }

    fn write_script(&self, name: &str, body: &str) -> R<PathBuf> {
        let p = self.work.join(name);
        fs::write(&p, body)?;
        Ok(p)
    }

    /// pgbench -M prepared -c N -j N -T secs -f script; returns tps.
    fn pgbench(&self, user: &str, script: &Path, clients: u32) -> R<f64> {
        let out = Command::new(pg_bin_dir().join("pgbench"))
            .args(["-n", "-M", "prepared"])
            .arg("-c")
            .arg(clients.to_string())
            .arg("-j")
            .arg(clients.to_string())
            .arg("-T")
            .arg(self.cfg.pgbench_secs.to_string())
            .arg("-f")
            .arg(script)
            .arg("-h")
            .arg(self.cluster.socket_dir())
            .arg("-p")
            .arg(self.cluster.port().to_string())
            .arg("-U")
            .arg(user)
            .arg("bench")
            .output()
            .map_err(|e| format!("cannot run pgbench: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return fail(format!(
                "pgbench {} failed ({}):\n{stdout}\n{stderr}",
                script.display(),
                out.status
            ));
        }
        for line in stdout.lines() {
            if let Some(rest) = line.trim().strip_prefix("tps = ") {
                let v: f64 = rest.split_whitespace().next().unwrap_or("").parse()?;
                return Ok(v);
            }
        }
        fail(format!("no tps in pgbench output:\n{stdout}\n{stderr}"))
    }
}

fn run(cfg: &Config) -> R<()> {
    fs::create_dir_all(&cfg.out)?;
    let s = &cfg.sizes;
    log(format!(
        "mode {}, {} people, {} overrides ({} tombstoned, {} override-only), {} merge pairs",
        if cfg.quick { "quick" } else { "full" },
        s.people,
        s.overrides,
        s.tombstoned,
        s.override_only,
        s.merge_pairs
    ));
    let settings: Vec<(&'static str, String)> = vec![
        ("shared_buffers", cfg.shared_buffers.clone()),
        ("work_mem", "64MB".into()),
        ("maintenance_work_mem", "1GB".into()),
        ("max_wal_size", "16GB".into()),
        ("checkpoint_timeout", "30min".into()),
        ("synchronous_commit", "off".into()),
        ("jit", "off".into()),
        ("max_connections", "30".into()),
        ("log_min_messages", "warning".into()),
    ];
    // Others reinstall the extension on this machine while we run; `cargo pgrx install`
    // rewrites dl_tenancy.so in place, which crashes every backend that has it mapped. The
    // cluster loads a private copy instead (module_pathname has no directory, so
    // dynamic_library_path decides).
    let lib_dir = private_extension_lib()?;
    let mut builder = PgCluster::builder();
    for (k, v) in &settings {
        builder = builder.conf(k, v);
    }
    builder = builder.conf(
        "dynamic_library_path",
        &format!("{}:$libdir", lib_dir.display()),
    );
    let cluster = builder.start()?;
    let work = cluster.root().join("bench-work");
    fs::create_dir_all(&work)?;
    let bench = Bench {
        cfg: cfg.clone(),
        cluster,
        work,
        lib_dir: lib_dir.clone(),
        settings,
    };
    log(format!(
        "cluster on port {}, socket {}",
        bench.cluster.port(),
        bench.cluster.socket_dir().display()
    ));

    let mut meta = setup(&bench)?;
    let mut scenarios = Vec::new();
    scenarios.push(scenario_load(&bench)?);
    meta["data"] = finish_data(&bench)?;
    scenarios.push(scenario_topn(&bench)?);
    scenarios.push(scenario_point(&bench)?);
    scenarios.push(scenario_filtered(&bench)?);
    scenarios.push(scenario_override_write(&bench)?);
    scenarios.push(scenario_merge_patch(&bench)?);
    scenarios.push(scenario_memory(&bench)?);
    scenarios.extend(scenario_provisioning(&bench)?);
    scenarios.sort_by_key(|s| s.id);

    let notes = match &cfg.notes {
        Some(p) => Some(fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let md = render_markdown(cfg, &meta, &scenarios, notes.as_deref());
    let js = json!({
        "meta": meta,
        "scenarios": scenarios.iter().map(report::scenario_json).collect::<Vec<_>>(),
    });
    let js_text = serde_json::to_string_pretty(&js)?;
    fs::write(cfg.out.join("BENCHMARKS.md"), &md)?;
    fs::write(cfg.out.join("results.json"), &js_text)?;
    if let Some(p) = &cfg.markdown {
        fs::write(p, &md)?;
    }
    if let Some(p) = &cfg.json {
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        fs::write(p, &js_text)?;
    }
    print!("{}", summary_table(&scenarios));
    log(format!(
        "wrote {} and {}",
        cfg.out.join("BENCHMARKS.md").display(),
        cfg.out.join("results.json").display()
    ));
    drop(bench);
    let _ = fs::remove_dir_all(&lib_dir);
    Ok(())
}

/// A private copy of the installed dl_tenancy.so (taken when the source is not being written).
fn private_extension_lib() -> R<PathBuf> {
    let out = Command::new(pg_bin_dir().join("pg_config"))
        .arg("--pkglibdir")
        .output()?;
    if !out.status.success() {
        return fail("pg_config --pkglibdir failed");
    }
    let src = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("dl_tenancy.so");
    let dir = pg_harness::temp_dir("dl-bench-lib")?;
    let dst = dir.join("dl_tenancy.so");
    for _ in 0..20 {
        let before = fs::metadata(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        fs::copy(&src, &dst)?;
        let after = fs::metadata(&src)?;
        if before.len() == after.len()
            && before.modified()? == after.modified()?
            && fs::metadata(&dst)?.len() == after.len()
            && after
                .modified()?
                .elapsed()
                .map(|d| d.as_secs() >= 2)
                .unwrap_or(true)
        {
            log(format!(
                "using a private copy of {} ({} bytes)",
                src.display(),
                after.len()
            ));
            return Ok(dir);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    fail(format!(
        "{} kept changing; cannot take a stable copy",
        src.display()
    ))
}

fn one_string(c: &mut Client, sql: &str) -> R<String> {
    Ok(c.query_one(sql, &[])?.get::<_, String>(0))
}

fn one_i64(c: &mut Client, sql: &str) -> R<i64> {
    Ok(c.query_one(sql, &[])?.get::<_, i64>(0))
}

fn setup(b: &Bench) -> R<Value> {
    let cfg = &b.cfg;
    let s = &cfg.sizes;
    let mut pg = Client::connect(&b.cluster.conn_string("postgres", "postgres"), NoTls)?;
    pg.batch_execute("CREATE DATABASE bench")?;
    let mut a = b.admin()?;
    a.batch_execute("CREATE EXTENSION dl_tenancy")?;
    // Logins made the way the provisioning tool makes them: a member of the group role that
    // acts as it.
    for (login, group) in [
        ("bench_reader", "dl_tenant_read"),
        ("bench_override", "dl_tenant_override"),
        ("bench_runtime", "dl_platform_runtime"),
    ] {
        a.batch_execute(&format!(
            "CREATE ROLE {login} LOGIN IN ROLE {group}; ALTER ROLE {login} SET role = '{group}';"
        ))?;
    }
    // Which dl_tenancy.so a backend really maps (must be the private copy).
    let loaded = {
        let mut c = b.admin()?;
        let pid: i32 = c
            .query_one(
                "SELECT pg_backend_pid(), public.dl_jsonb_merge_patch('{}', '{}')::text",
                &[],
            )?
            .get(0);
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        maps.lines()
            .find(|l| l.contains("dl_tenancy"))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("")
            .to_string()
    };
    if !loaded.starts_with(&*b.lib_dir.to_string_lossy()) {
        return fail(format!(
            "backends load {loaded:?}, not the private copy in {}",
            b.lib_dir.display()
        ));
    }
    let t = Instant::now();
    a.batch_execute(data::HELPERS)?;
    a.batch_execute(
        "GRANT USAGE ON SCHEMA bench TO dl_tenant_read, dl_tenant_override, dl_platform_runtime",
    )?;
    log("generating people");
    a.batch_execute(&data::people_src_sql(s.people))?;
    a.batch_execute(&data::overrides_src_sql(s))?;
    a.batch_execute(&data::merge_pairs_sql(s.merge_pairs))?;
    a.batch_execute("VACUUM ANALYZE bench.people_src, bench.overrides_src, bench.merge_pairs")?;
    log(format!(
        "data generated in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    let version = one_string(&mut a, "SELECT version()")?;
    let date = one_string(
        &mut a,
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"')",
    )?;
    let ext_version = one_string(
        &mut a,
        "SELECT extversion FROM pg_extension WHERE extname = 'dl_tenancy'",
    )?;
    let mem_kb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|x| x.to_string()))
        })
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(0);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1).map(|x| x.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let git = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Ok(json!({
        "date": date,
        "mode": if cfg.quick { "quick" } else { "full" },
        "git": git,
        "postgres": version,
        "extension_version": ext_version,
        "extension_library": loaded,
        "machine": {
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "mem_total_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            "cpu": cpu,
            "kernel": kernel,
        },
        "sizes": {
            "people": s.people,
            "overrides": s.overrides,
            "tombstoned": s.tombstoned,
            "override_only": s.override_only,
            "merge_pairs": s.merge_pairs,
        },
        "run": {
            "reps": cfg.reps,
            "load_reps": cfg.load_reps,
            "pgbench_secs": cfg.pgbench_secs,
            "latency_iters": cfg.lat_iters,
            "latency_warmup": cfg.lat_warmup,
        },
        "settings": b.settings.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
    }))
}

/// COPY the first `limit` lines of `path` (all when None) with `sql`; returns seconds
/// (including the statement-level triggers, which run before COPY returns) and rows.
fn copy_in_file(c: &mut Client, sql: &str, path: &Path, limit: Option<u64>) -> R<(f64, u64)> {
    use std::io::BufRead;
    let f = fs::File::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let t = Instant::now();
    let mut w = c.copy_in(sql)?;
    match limit {
        None => {
            std::io::copy(&mut r, &mut w)?;
        }
        Some(n) => {
            let mut line = Vec::with_capacity(4096);
            for _ in 0..n {
                line.clear();
                if r.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                w.write_all(&line)?;
            }
        }
    }
    let n = w.finish()?;
    Ok((t.elapsed().as_secs_f64(), n))
}

/// Outcome of a COPY run under a statement_timeout.
enum Timed {
    Done(f64),
    TimedOut,
}

fn is_timeout(e: &(dyn Error + 'static)) -> bool {
    if let Some(pe) = e.downcast_ref::<postgres::Error>() {
        if let Some(db) = pe.as_db_error() {
            return db.code().code() == "57014";
        }
    }
    e.to_string().contains("statement timeout")
}

/// COPY under `SET statement_timeout`; a timeout is an outcome, anything else an error.
fn copy_with_timeout(
    b: &Bench,
    user: &str,
    sql: &str,
    path: &Path,
    limit: Option<u64>,
    timeout_s: f64,
    expect: u64,
) -> R<Timed> {
    let mut c = b.connect(user)?;
    c.batch_execute(&format!(
        "SET statement_timeout = '{}ms'",
        (timeout_s * 1000.0) as u64
    ))?;
    match copy_in_file(&mut c, sql, path, limit) {
        Ok((secs, n)) => {
            if n != expect {
                return fail(format!("COPY loaded {n} rows, expected {expect}"));
            }
            Ok(Timed::Done(secs))
        }
        Err(e) if is_timeout(e.as_ref()) => Ok(Timed::TimedOut),
        Err(e) => Err(e),
    }
}

const RESET_EXT: &str = "TRUNCATE dl_cache.person_enrichments, dl_override.person_overrides, dl_internal.resolved_people";

fn load_overrides_sql() -> String {
    "INSERT INTO dl_override.person_overrides
            (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
     SELECT identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at
       FROM bench.overrides_src"
        .to_string()
}

/// Empty tables, then the overrides (through their triggers), then a checkpoint.
fn reset_ext(a: &mut Client) -> R<()> {
    a.batch_execute(RESET_EXT)?;
    a.batch_execute(&load_overrides_sql())?;
    a.batch_execute("CHECKPOINT")?;
    Ok(())
}

/// Scenario 5 (run first: it leaves the data set the other scenarios read).
fn scenario_load(b: &Bench) -> R<Scenario> {
    let s = &b.cfg.sizes;
    let mut sc = Scenario::new(
        5,
        "Enrichment load (bulk path)",
        "COPY FROM STDIN of the base people into an empty dl_cache.person_enrichments as dl_platform_runtime \
         (a new workspace's first load; the runtime's bulk path; the statement-level trigger refreshes the resolved \
         store before COPY returns), with the overrides already present, vs COPY of the same file into a plain table \
         with a primary key. Each COPY runs in a fresh session, as the runtime would.",
    );
    let mut a = b.admin()?;
    let file = b.work.join("people.copy");
    {
        let f = fs::File::create(&file)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut r = a.copy_out(&format!(
            "COPY (SELECT {} FROM bench.people_src ORDER BY i) TO STDOUT",
            data::BASE_COLUMNS
        ))?;
        std::io::copy(&mut r, &mut w)?;
        w.flush()?;
    }
    let bytes = fs::metadata(&file)?.len();
    a.batch_execute(
        "CREATE TABLE bench.plain_load (
             identity_key text PRIMARY KEY, identity_payload jsonb NOT NULL, raw_payload jsonb NOT NULL,
             status text, source text, fetched_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
         GRANT INSERT, SELECT ON bench.plain_load TO dl_platform_runtime;",
    )?;
    let copy_ext = format!(
        "COPY dl_cache.person_enrichments ({}) FROM STDIN",
        data::BASE_COLUMNS
    );
    let copy_plain = format!("COPY bench.plain_load ({}) FROM STDIN", data::BASE_COLUMNS);
    let people = s.people;

    // The plain COPY first: its time bounds the extension's (statement_timeout).
    let plain_once = |a: &mut Client, limit: Option<u64>| -> R<f64> {
        a.batch_execute("TRUNCATE bench.plain_load; CHECKPOINT")?;
        match copy_with_timeout(
            b,
            "bench_runtime",
            &copy_plain,
            &file,
            limit,
            3600.0,
            limit.unwrap_or(people),
        )? {
            Timed::Done(secs) => Ok(secs),
            Timed::TimedOut => fail("plain COPY timed out"),
        }
    };
    let first_plain = plain_once(&mut a, None)?;
    let timeout_s = (first_plain * b.cfg.load_timeout_factor).max(30.0);
    sc.notes.push(format!(
        "Input: {} rows, {:.1} MB of COPY text. Each repetition starts from empty tables and a CHECKPOINT; the extension's \
         repetitions first insert the {} overrides (untimed). Each extension COPY runs under statement_timeout = {:.0} s \
         ({}x the first plain COPY, at least 30 s); a COPY that hits it counts as a miss with throughput below rows / timeout, \
         and is not repeated.",
        people,
        bytes as f64 / 1e6,
        s.overrides,
        timeout_s,
        b.cfg.load_timeout_factor
    ));

    // Diagnostic: how the cost grows with the batch size (first rows of the same file, into
    // empty tables), with auto_explain (analyze, timing off) on the refresh statements.
    let mut series: Vec<(u64, f64, Option<f64>)> = Vec::new();
    if b.cfg.diagnose {
        let steps: Vec<u64> = [40u64, 20, 10, 5]
            .iter()
            .map(|d| (people / d).max(100))
            .collect();
        for &n in &steps {
            log(format!("scenario 5: size series, {n} rows"));
            let p = plain_once(&mut a, Some(n))?;
            reset_ext(&mut a)?;
            let e = match copy_with_timeout(
                b,
                "bench_runtime",
                &copy_ext,
                &file,
                Some(n),
                timeout_s,
                n,
            )? {
                Timed::Done(secs) => Some(secs),
                Timed::TimedOut => None,
            };
            series.push((n, p, e));
        }
        // The plan of the refresh for the largest size, with actual row counts and loops.
        let n = *steps.last().unwrap_or(&people);
        log(format!("scenario 5: auto_explain of a {n}-row load"));
        reset_ext(&mut a)?;
        let from = b.log_len();
        let mut x = b.admin()?;
        x.batch_execute(&format!(
            "LOAD 'auto_explain';
             SET auto_explain.log_min_duration = '200ms';
             SET auto_explain.log_analyze = on;
             SET auto_explain.log_timing = off;
             SET auto_explain.log_buffers = on;
             SET auto_explain.log_nested_statements = on;
             SET auto_explain.log_level = 'warning';
             SET statement_timeout = '{}ms';
             SET ROLE dl_platform_runtime;",
            (timeout_s * 1000.0) as u64
        ))?;
        let r = copy_in_file(&mut x, &copy_ext, &file, Some(n));
        drop(x);
        let outcome = match r {
            Ok((secs, _)) => format!("completed in {secs:.1} s"),
            Err(e) if is_timeout(e.as_ref()) => format!("timed out after {timeout_s:.0} s"),
            Err(e) => return Err(e),
        };
        sc.evidence(
            &format!(
                "auto_explain (ANALYZE, timing off) of the statements over 200 ms run by a {n}-row COPY's trigger ({outcome})"
            ),
            clip(&b.log_since(from), 40000),
        );
    }

    let mut plain = vec![people as f64 / first_plain];
    let mut ext = Vec::new();
    let mut ext_timed_out = false;
    for rep in 0..b.cfg.load_reps {
        log(format!(
            "scenario 5: repetition {}/{}",
            rep + 1,
            b.cfg.load_reps
        ));
        if rep > 0 {
            plain.push(people as f64 / plain_once(&mut a, None)?);
        }
        reset_ext(&mut a)?;
        match copy_with_timeout(
            b,
            "bench_runtime",
            &copy_ext,
            &file,
            None,
            timeout_s,
            people,
        )? {
            Timed::Done(secs) => {
                ext.push(people as f64 / secs);
                log(format!(
                    "scenario 5: plain {:.0} rows/s, extension {:.0} rows/s",
                    plain[plain.len() - 1],
                    ext[ext.len() - 1]
                ));
            }
            Timed::TimedOut => {
                ext.push(people as f64 / timeout_s);
                ext_timed_out = true;
                log(format!(
                    "scenario 5: plain {:.0} rows/s, extension timed out after {timeout_s:.0} s",
                    plain[plain.len() - 1]
                ));
                break;
            }
        }
    }
    let base = sc.baseline("COPY into a plain table (PK only)", "rows/s", plain);
    sc.compared(
        &if ext_timed_out {
            format!("COPY into dl_cache.person_enrichments: TIMED OUT after {timeout_s:.0} s (value = upper bound)")
        } else {
            "COPY into dl_cache.person_enrichments (resolved store refreshed)".to_string()
        },
        "rows/s",
        ext,
        base,
        Some(Target::at_least(0.33)),
    );
    for (n, p, e) in &series {
        let pr = *n as f64 / p;
        let (er, label) = match e {
            Some(secs) => (*n as f64 / secs, format!("{n} rows")),
            None => (
                *n as f64 / timeout_s,
                format!("{n} rows, TIMED OUT (upper bound)"),
            ),
        };
        let bi = sc.baseline(
            &format!("size series: plain COPY, {n} rows"),
            "rows/s",
            vec![pr],
        );
        sc.compared(
            &format!("size series: dl_cache COPY, {label}"),
            "rows/s",
            vec![er],
            bi,
            None,
        );
    }

    // The data set for the other scenarios: when the last extension COPY did not finish, load
    // the base rows with the sync trigger off and build the resolved store with the
    // extension's own refresh function, in batches (timed, as a diagnostic).
    if ext_timed_out || b.cfg.diagnose {
        log("scenario 5: load without the sync trigger, then refresh_people in batches");
        reset_ext(&mut a)?;
        a.batch_execute("ALTER TABLE dl_cache.person_enrichments DISABLE TRIGGER after_insert")?;
        let r = copy_with_timeout(b, "bench_runtime", &copy_ext, &file, None, 3600.0, people);
        a.batch_execute("ALTER TABLE dl_cache.person_enrichments ENABLE TRIGGER after_insert")?;
        let no_trigger = match r? {
            Timed::Done(secs) => secs,
            Timed::TimedOut => return fail("COPY without trigger timed out"),
        };
        a.batch_execute("ANALYZE dl_cache.person_enrichments")?;
        a.batch_execute("ANALYZE dl_override.person_overrides")?;
        let keys: Vec<String> = a
            .query(
                "SELECT identity_key FROM dl_cache.person_enrichments ORDER BY identity_key",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let t = Instant::now();
        let batch = 20_000usize;
        let mut c = b.admin()?;
        c.batch_execute("SET statement_timeout = '600s'")?;
        for chunk in keys.chunks(batch) {
            let v: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
            c.execute("SELECT dl_internal.refresh_people($1::text[])", &[&v])?;
        }
        let refresh = t.elapsed().as_secs_f64();
        sc.compared(
            "diagnostic: same COPY with the sync trigger disabled (check constraints only)",
            "rows/s",
            vec![people as f64 / no_trigger],
            base,
            None,
        );
        sc.compared(
            &format!(
                "diagnostic: trigger-less COPY + dl_internal.refresh_people in batches of {batch} keys (total)"
            ),
            "rows/s",
            vec![people as f64 / (no_trigger + refresh)],
            base,
            None,
        );
    }
    a.batch_execute("DROP TABLE bench.plain_load")?;
    let _ = fs::remove_file(&file);
    Ok(sc)
}

/// After the load: vacuum, check the resolved store, build the plain baseline table.
fn finish_data(b: &Bench) -> R<Value> {
    let s = &b.cfg.sizes;
    let mut a = b.admin()?;
    a.batch_execute(
        "VACUUM ANALYZE dl_cache.person_enrichments, dl_override.person_overrides, dl_internal.resolved_people",
    )?;
    let resolved = one_i64(&mut a, "SELECT count(*) FROM dl_resolved.people")?;
    let expected = (s.people + s.override_only - s.tombstoned) as i64;
    if resolved != expected {
        return fail(format!(
            "dl_resolved.people has {resolved} rows, expected {expected} (people + override-only - tombstoned)"
        ));
    }
    let overridden = one_i64(
        &mut a,
        "SELECT count(*) FROM dl_resolved.people WHERE is_overridden",
    )?;
    // Spot check: the resolved rows equal a merge computed here from both layers.
    let wrong = one_i64(
        &mut a,
        "SELECT count(*) FROM (SELECT * FROM dl_override.person_overrides WHERE NOT tombstoned ORDER BY identity_key LIMIT 500) o
           LEFT JOIN dl_cache.person_enrichments b USING (identity_key)
           JOIN dl_resolved.people r USING (identity_key)
          WHERE r.identity_payload IS DISTINCT FROM bench.plpgsql_merge_patch(COALESCE(b.identity_payload, '{}'), o.identity_payload_patch)
             OR r.raw_payload IS DISTINCT FROM bench.plpgsql_merge_patch(COALESCE(b.raw_payload, '{}'), o.raw_payload_patch)",
    )?;
    if wrong != 0 {
        return fail(format!(
            "{wrong} of 500 overridden resolved rows differ from the PL/pgSQL merge"
        ));
    }
    log("building the plain baseline table");
    a.batch_execute(
        "CREATE TABLE bench.plain_people AS SELECT * FROM dl_resolved.people;
         ALTER TABLE bench.plain_people ADD PRIMARY KEY (identity_key);
         CREATE INDEX plain_people_updated_at_idx ON bench.plain_people (updated_at);
         GRANT SELECT ON bench.plain_people TO dl_tenant_read, dl_tenant_override;",
    )?;
    a.batch_execute("VACUUM ANALYZE bench.plain_people")?;
    let row = a.query_one(
        "SELECT (SELECT round(avg(pg_column_size(raw_payload))) FROM dl_cache.person_enrichments)::bigint,
                (SELECT round(avg(pg_column_size(identity_payload))) FROM dl_cache.person_enrichments)::bigint,
                (SELECT round(avg((SELECT count(*) FROM jsonb_object_keys(identity_payload)))) FROM dl_cache.person_enrichments)::bigint,
                pg_total_relation_size('dl_cache.person_enrichments'),
                pg_total_relation_size('dl_override.person_overrides'),
                pg_total_relation_size('dl_internal.resolved_people'),
                pg_total_relation_size('bench.plain_people'),
                (SELECT round(avg(length(raw_payload::text))) FROM dl_cache.person_enrichments)::bigint",
        &[],
    )?;
    let mb = |v: i64| (v as f64 / 1e6 * 10.0).round() / 10.0;
    Ok(json!({
        "resolved_rows": resolved,
        "overridden_rows": overridden,
        "avg_raw_payload_bytes_jsonb": row.get::<_, i64>(0),
        "avg_raw_payload_bytes_text": row.get::<_, i64>(7),
        "avg_identity_payload_bytes_jsonb": row.get::<_, i64>(1),
        "avg_identity_top_level_fields": row.get::<_, i64>(2),
        "size_mb": {
            "dl_cache.person_enrichments": mb(row.get(3)),
            "dl_override.person_overrides": mb(row.get(4)),
            "dl_internal.resolved_people": mb(row.get(5)),
            "bench.plain_people": mb(row.get(6)),
        }
    }))
}

fn explain(c: &mut Client, sql: &str) -> R<String> {
    let rows = c.query(
        &format!("EXPLAIN (ANALYZE, BUFFERS, VERBOSE OFF) {sql}"),
        &[],
    )?;
    let mut out = format!("{sql}\n\n");
    for r in rows {
        out.push_str(&r.get::<_, String>(0));
        out.push('\n');
    }
    Ok(out)
}

fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n... ({} more bytes clipped)", &s[..end], s.len() - end)
}

/// Median latency in ms of `iters` executions (keys cycled from `offset`).
fn latency_ms(
    c: &mut Client,
    stmt: &Statement,
    keys: &[String],
    iters: usize,
    offset: usize,
) -> R<f64> {
    let mut v = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        if keys.is_empty() {
            c.query(stmt, &[])?;
        } else {
            let k = &keys[(offset + i) % keys.len()];
            c.query(stmt, &[k])?;
        }
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&v))
}

/// Interleaved latency measurement of several statements: warm-up, then `reps` rounds, each
/// yielding one median per statement. Returns samples per statement.
fn latency_compare(
    b: &Bench,
    user: &str,
    sqls: &[&str],
    keys: &[String],
    iters: usize,
    warmup: usize,
) -> R<Vec<Vec<f64>>> {
    let mut c = b.connect(user)?;
    let stmts: Vec<Statement> = sqls
        .iter()
        .map(|q| c.prepare(q))
        .collect::<Result<_, _>>()?;
    for st in &stmts {
        latency_ms(&mut c, st, keys, warmup, 0)?;
    }
    let mut out = vec![Vec::new(); sqls.len()];
    for rep in 0..b.cfg.reps {
        for (i, st) in stmts.iter().enumerate() {
            out[i].push(latency_ms(&mut c, st, keys, iters, rep * iters)?);
        }
    }
    Ok(out)
}

/// Deterministic keys (fixed-seed LCG) over the whole key space, including tombstoned keys.
fn sample_keys(s: &Sizes, n: usize) -> Vec<String> {
    let mut x: u64 = 0x5eed_d17e_0a1c_u64;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            format!("person-{}", (x >> 33) % s.key_space() + 1)
        })
        .collect()
}

/// Interleaved pgbench runs: per repetition, each script once. Returns tps samples per script.
fn pgbench_compare(b: &Bench, user: &str, scripts: &[&Path], clients: u32) -> R<Vec<Vec<f64>>> {
    let mut out = vec![Vec::new(); scripts.len()];
    for _ in 0..b.cfg.reps {
        for (i, sc) in scripts.iter().enumerate() {
            out[i].push(b.pgbench(user, sc, clients)?);
        }
    }
    Ok(out)
}

const TOPN_EXT: &str =
    "SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20";
const TOPN_PLAIN: &str =
    "SELECT identity_key, display_name FROM bench.plain_people ORDER BY updated_at DESC LIMIT 20";

fn scenario_topn(b: &Bench) -> R<Scenario> {
    log("scenario 1: top-N read");
    let mut sc = Scenario::new(
        1,
        "Top-N read",
        "`SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20` \
         vs the same on a plain table holding the identical resolved rows (PK on identity_key, index on updated_at). \
         As the tenant read role. Latency: median of each repetition's executions (prepared); throughput: pgbench -M prepared. \
         Throughput ratio = view tps / plain tps, so the issue's \"ratio <= 2.0\" reads \">= 0.5\" there.",
    );
    let l = latency_compare(
        b,
        "bench_reader",
        &[TOPN_PLAIN, TOPN_EXT],
        &[],
        b.cfg.lat_iters,
        b.cfg.lat_warmup,
    )?;
    let base = sc.baseline("plain table: latency", "ms", l[0].clone());
    sc.compared(
        "dl_resolved.people: latency",
        "ms",
        l[1].clone(),
        base,
        Some(Target::at_most(2.0)),
    );
    let p_plain = b.write_script("topn_plain.sql", &format!("{TOPN_PLAIN};\n"))?;
    let p_ext = b.write_script("topn_ext.sql", &format!("{TOPN_EXT};\n"))?;
    for clients in [1u32, 2] {
        let t = pgbench_compare(b, "bench_reader", &[&p_plain, &p_ext], clients)?;
        let base = sc.baseline(
            &format!("plain table: pgbench, {clients} client(s)"),
            "tps",
            t[0].clone(),
        );
        sc.compared(
            &format!("dl_resolved.people: pgbench, {clients} client(s)"),
            "tps",
            t[1].clone(),
            base,
            Some(Target::at_least(0.5)),
        );
    }
    let mut a = b.admin()?;
    sc.evidence("EXPLAIN plain table", explain(&mut a, TOPN_PLAIN)?);
    sc.evidence("EXPLAIN dl_resolved.people", explain(&mut a, TOPN_EXT)?);
    Ok(sc)
}

const POINT_EXT: &str = "SELECT * FROM dl_resolved.people WHERE identity_key = $1";
const POINT_PLAIN: &str = "SELECT * FROM bench.plain_people WHERE identity_key = $1";

fn scenario_point(b: &Bench) -> R<Scenario> {
    log("scenario 2: point read");
    let s = &b.cfg.sizes;
    let mut sc = Scenario::new(
        2,
        "Point read by identity_key",
        "`SELECT * FROM dl_resolved.people WHERE identity_key = $1` vs the same on the plain table; keys drawn \
         uniformly (fixed seed) from the whole key space (base, override-only and tombstoned keys). \
         Throughput ratio = view tps / plain tps (target >= 0.5 is the issue's ratio <= 2.0).",
    );
    let keys = sample_keys(s, 4096);
    let l = latency_compare(
        b,
        "bench_reader",
        &[POINT_PLAIN, POINT_EXT],
        &keys,
        b.cfg.lat_iters,
        b.cfg.lat_warmup,
    )?;
    let base = sc.baseline("plain table: latency", "ms", l[0].clone());
    sc.compared(
        "dl_resolved.people: latency",
        "ms",
        l[1].clone(),
        base,
        Some(Target::at_most(2.0)),
    );
    let ks = s.key_space();
    let script = |table: &str| {
        format!(
            "\\set id random(1, {ks})\nSELECT * FROM {table} WHERE identity_key = 'person-' || :id;\n"
        )
    };
    let p_plain = b.write_script("point_plain.sql", &script("bench.plain_people"))?;
    let p_ext = b.write_script("point_ext.sql", &script("dl_resolved.people"))?;
    for clients in [1u32, 2] {
        let t = pgbench_compare(b, "bench_reader", &[&p_plain, &p_ext], clients)?;
        let base = sc.baseline(
            &format!("plain table: pgbench, {clients} client(s)"),
            "tps",
            t[0].clone(),
        );
        sc.compared(
            &format!("dl_resolved.people: pgbench, {clients} client(s)"),
            "tps",
            t[1].clone(),
            base,
            Some(Target::at_least(0.5)),
        );
    }
    let mut a = b.admin()?;
    let k = &keys[0];
    sc.evidence(
        "EXPLAIN plain table",
        explain(&mut a, &POINT_PLAIN.replace("$1", &format!("'{k}'")))?,
    );
    sc.evidence(
        "EXPLAIN dl_resolved.people",
        explain(&mut a, &POINT_EXT.replace("$1", &format!("'{k}'")))?,
    );
    Ok(sc)
}

fn scenario_filtered(b: &Bench) -> R<Scenario> {
    log("scenario 3: filtered reads");
    let mut sc = Scenario::new(
        3,
        "Filtered reads the apps do",
        "Report only. Neither side has an index for these filters (the plain table has the same two indexes as the store).",
    );
    let queries: [(&str, &str, usize); 3] = [
        (
            "status = 'churned', newest 20",
            "SELECT identity_key, display_name FROM {T} WHERE status = 'churned' ORDER BY updated_at DESC LIMIT 20",
            b.cfg.lat_iters / 10,
        ),
        (
            "display_name LIKE 'Mar%', newest 20",
            "SELECT identity_key, display_name FROM {T} WHERE display_name LIKE 'Mar%' ORDER BY updated_at DESC LIMIT 20",
            b.cfg.lat_iters / 10,
        ),
        (
            "count by status (full scan)",
            "SELECT status, count(*) FROM {T} GROUP BY status ORDER BY status",
            1,
        ),
    ];
    let mut a = b.admin()?;
    for (label, q, iters) in queries {
        let qp = q.replace("{T}", "bench.plain_people");
        let qe = q.replace("{T}", "dl_resolved.people");
        let l = latency_compare(
            b,
            "bench_reader",
            &[&qp, &qe],
            &[],
            iters.max(1),
            if iters > 1 { 5 } else { 1 },
        )?;
        let base = sc.baseline(&format!("plain table: {label}"), "ms", l[0].clone());
        sc.compared(
            &format!("dl_resolved.people: {label}"),
            "ms",
            l[1].clone(),
            base,
            None,
        );
        sc.evidence(
            &format!("EXPLAIN plain table: {label}"),
            explain(&mut a, &qp)?,
        );
        sc.evidence(
            &format!("EXPLAIN dl_resolved.people: {label}"),
            explain(&mut a, &qe)?,
        );
    }
    Ok(sc)
}

const ID_PATCH: &str = r#"{"title": "VP Data", "location": {"city": "Berlin", "timezone": null}}"#;
const RAW_PATCH: &str =
    r#"{"crm": {"stage": "won", "owner": "bench@customer.example"}, "tags": ["customer-edited"]}"#;

fn seed_upsert(table: &str, key_expr: &str) -> String {
    format!(
        "INSERT INTO {table} (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
VALUES ({key_expr}, 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb, false, now())
ON CONFLICT (identity_key) DO UPDATE
SET status = EXCLUDED.status, identity_payload_patch = EXCLUDED.identity_payload_patch, raw_payload_patch = EXCLUDED.raw_payload_patch, tombstoned = false, updated_at = now();"
    )
}

fn scenario_override_write(b: &Bench) -> R<Scenario> {
    log("scenario 4: override writes");
    let s = &b.cfg.sizes;
    let mut sc = Scenario::new(
        4,
        "Override write",
        "pgbench -M prepared as the tenant override role, keys uniform over the whole key space (so both new \
         overrides and updates of existing ones): `SELECT dl_apply_person_override(...)`, and the seed's raw \
         `INSERT ... ON CONFLICT` into dl_override.person_overrides, vs the same upsert into a plain table with one \
         index (its PK), prefilled with the same overrides.",
    );
    let mut a = b.admin()?;
    a.batch_execute(
        "CREATE TABLE bench.plain_overrides (
             identity_key text PRIMARY KEY, status text, identity_payload_patch jsonb, raw_payload_patch jsonb,
             tombstoned boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO bench.plain_overrides SELECT identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at
           FROM bench.overrides_src;
         GRANT SELECT, INSERT, UPDATE ON bench.plain_overrides TO dl_tenant_override;
         CREATE TABLE bench.plain_history
             (LIKE dl_override.person_override_history INCLUDING DEFAULTS INCLUDING INDEXES);
         GRANT INSERT ON bench.plain_history TO dl_tenant_override;
         GRANT SELECT, INSERT, UPDATE ON bench.plain_people TO dl_tenant_override;",
    )?;
    a.batch_execute("VACUUM ANALYZE bench.plain_overrides")?;
    let ks = s.key_space();
    let head = format!("\\set id random(1, {ks})\n");
    let p_plain = b.write_script(
        "upsert_plain.sql",
        &format!(
            "{head}{}\n",
            seed_upsert("bench.plain_overrides", "'person-' || :id")
        ),
    )?;
    let p_raw = b.write_script(
        "upsert_raw.sql",
        &format!(
            "{head}{}\n",
            seed_upsert("dl_override.person_overrides", "'person-' || :id")
        ),
    )?;
    let p_fn = b.write_script(
        "upsert_fn.sql",
        &format!(
            "{head}SELECT dl_apply_person_override('person-' || :id, 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb);\n"
        ),
    )?;
    // The floor of this design: the three rows every correction writes (the override, its
    // history row, the resolved row), as one plain statement into plain tables with the same
    // indexes, without triggers, CHECK constraints or merge patch.
    let p_floor = b.write_script(
        "upsert_floor.sql",
        &format!(
            "{head}WITH o AS (
    INSERT INTO bench.plain_overrides AS t (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
    VALUES ('person-' || :id, 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb, false, now())
    ON CONFLICT (identity_key) DO UPDATE
    SET status = EXCLUDED.status, identity_payload_patch = EXCLUDED.identity_payload_patch, raw_payload_patch = EXCLUDED.raw_payload_patch, tombstoned = false, updated_at = now()
    RETURNING *
), h AS (
    INSERT INTO bench.plain_history (identity_key, operation, new_status, new_identity_payload_patch, new_raw_payload_patch, new_tombstoned)
    SELECT identity_key, 'update', status, identity_payload_patch, raw_payload_patch, tombstoned FROM o
)
INSERT INTO bench.plain_people AS r (identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at, overridden_fields)
SELECT o.identity_key, p.display_name, o.status, COALESCE(p.identity_payload, '{{}}') || o.identity_payload_patch,
       COALESCE(p.raw_payload, '{{}}') || o.raw_payload_patch, true, now(), '{{location,status,title}}'
  FROM o LEFT JOIN bench.plain_people AS p ON p.identity_key = o.identity_key
ON CONFLICT (identity_key) DO UPDATE
SET display_name = EXCLUDED.display_name, status = EXCLUDED.status, identity_payload = EXCLUDED.identity_payload,
    raw_payload = EXCLUDED.raw_payload, is_overridden = true, updated_at = EXCLUDED.updated_at, overridden_fields = EXCLUDED.overridden_fields;
"
        ),
    )?;
    for clients in [1u32, 2] {
        let t = pgbench_compare(
            b,
            "bench_override",
            &[&p_plain, &p_fn, &p_raw, &p_floor],
            clients,
        )?;
        let base = sc.baseline(
            &format!("plain upsert, one index: {clients} client(s)"),
            "tps",
            t[0].clone(),
        );
        sc.compared(
            &format!("dl_apply_person_override: {clients} client(s)"),
            "tps",
            t[1].clone(),
            base,
            Some(Target::at_least(0.5)),
        );
        sc.compared(
            &format!("seed's INSERT ... ON CONFLICT into dl_override: {clients} client(s)"),
            "tps",
            t[2].clone(),
            base,
            Some(Target::at_least(0.5)),
        );
        sc.compared(
            &format!(
                "floor: the same three row writes as one plain statement, no triggers/checks/merge: {clients} client(s)"
            ),
            "tps",
            t[3].clone(),
            base,
            None,
        );
    }
    if b.cfg.diagnose {
        // Where the time goes: the same raw upsert, 1 client, with every user trigger disabled
        // (CHECK constraints only). On keys of their own ('diag-...', deleted afterwards with
        // the triggers still off) so the resolved store stays exact.
        let p_diag = b.write_script(
            "upsert_raw_diag.sql",
            &format!(
                "{head}{}\n",
                seed_upsert("dl_override.person_overrides", "'diag-' || :id")
            ),
        )?;
        let mut no_trig = Vec::new();
        let r: R<()> = (|| {
            a.batch_execute("ALTER TABLE dl_override.person_overrides DISABLE TRIGGER USER")?;
            for _ in 0..b.cfg.reps {
                no_trig.push(b.pgbench("bench_override", &p_diag, 1)?);
            }
            Ok(())
        })();
        a.batch_execute(
            "DELETE FROM dl_override.person_overrides WHERE identity_key LIKE 'diag-%'",
        )?;
        a.batch_execute("ALTER TABLE dl_override.person_overrides ENABLE TRIGGER USER")?;
        r?;
        sc.compared(
            "diagnostic: seed's upsert, 1 client, all user triggers disabled (constraints only)",
            "tps",
            no_trig,
            0, // the 1-client plain upsert row
            None,
        );
        let trig: Vec<String> = a
            .query(
                "SELECT tgname || ': ' || pg_get_triggerdef(oid) FROM pg_trigger
                  WHERE tgrelid = 'dl_override.person_overrides'::regclass AND NOT tgisinternal ORDER BY tgname",
                &[],
            )?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        sc.evidence("Triggers on dl_override.person_overrides", trig.join("\n"));
    }
    // Evidence: the statement-level trigger's share of one upsert (update path and insert path).
    let existing = one_string(
        &mut a,
        "SELECT identity_key FROM dl_override.person_overrides WHERE NOT tombstoned ORDER BY identity_key LIMIT 1",
    )?;
    let fresh = format!("person-{}", s.key_space() + 12345);
    for (label, key) in [("existing override", &existing), ("new override", &fresh)] {
        for table in ["bench.plain_overrides", "dl_override.person_overrides"] {
            // Warm the session's plan caches first (pgbench sessions run with warm caches).
            a.batch_execute("BEGIN")?;
            a.batch_execute(&seed_upsert(table, "'person-warmup-1'"))?;
            a.batch_execute(&seed_upsert(table, "'person-warmup-1'"))?;
            let e = explain(&mut a, &seed_upsert(table, &format!("'{key}'")));
            a.batch_execute("ROLLBACK")?;
            sc.evidence(&format!("EXPLAIN upsert into {table}, {label}"), e?);
        }
    }
    if b.cfg.diagnose {
        let from = b.log_len();
        a.batch_execute(&format!(
            "LOAD 'auto_explain';
             SET auto_explain.log_min_duration = 0;
             SET auto_explain.log_analyze = on;
             SET auto_explain.log_buffers = on;
             SET auto_explain.log_nested_statements = on;
             SET auto_explain.log_level = 'warning';
             BEGIN;
             SELECT dl_apply_person_override('{existing}', 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb);
             ROLLBACK;
             SET auto_explain.log_min_duration = -1;"
        ))?;
        sc.evidence(
            "auto_explain of one dl_apply_person_override call (every nested statement)",
            clip(&b.log_since(from), 30000),
        );
    }
    Ok(sc)
}

fn scenario_merge_patch(b: &Bench) -> R<Scenario> {
    log("scenario 6: merge patch");
    let s = &b.cfg.sizes;
    let mut sc = Scenario::new(
        6,
        "dl_jsonb_merge_patch",
        "One query over all row pairs of bench.merge_pairs (target: a base raw_payload; patch: nested members set, \
         arrays replaced, members removed at two depths): `SELECT sum(pg_column_size(f(target, patch)))`, one \
         backend (max_parallel_workers_per_gather = 0). Baseline: `target || patch` on the same rows. Also the naive \
         PL/pgSQL RFC 7396 implementation kept in the benchmark, and the bare scan for reference.",
    );
    let mut a = b.admin()?;
    a.batch_execute("SET max_parallel_workers_per_gather = 0")?;
    let q = |expr: &str| format!("SELECT sum(pg_column_size({expr})) FROM bench.merge_pairs");
    let queries = [
        q("target || patch"),
        q("public.dl_jsonb_merge_patch(target, patch)"),
        q("bench.plpgsql_merge_patch(target, patch)"),
        "SELECT sum(pg_column_size(target) + pg_column_size(patch)) FROM bench.merge_pairs"
            .to_string(),
    ];
    let mut samples = vec![Vec::new(); queries.len()];
    for qq in &queries {
        a.query(qq.as_str(), &[])?; // warm-up
    }
    for _ in 0..b.cfg.reps {
        for (i, qq) in queries.iter().enumerate() {
            let t = Instant::now();
            a.query(qq.as_str(), &[])?;
            samples[i].push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let base = sc.baseline("jsonb || jsonb", "ms", samples[0].clone());
    let rust = sc.compared(
        "dl_jsonb_merge_patch (Rust)",
        "ms",
        samples[1].clone(),
        base,
        Some(Target::at_most(1.5)),
    );
    sc.compared(
        "PL/pgSQL RFC 7396 (naive)",
        "ms",
        samples[2].clone(),
        base,
        None,
    );
    sc.compared(
        "scan only (no function)",
        "ms",
        samples[3].clone(),
        base,
        None,
    );
    let scan = median(&samples[3]);
    let net = (sc.rows[rust].median() - scan) / (median(&samples[0]) - scan);
    let per_pair_us = |m: f64| (m - scan) * 1000.0 / s.merge_pairs as f64;
    sc.notes.push(format!(
        "{} pairs. Net of the bare scan: dl_jsonb_merge_patch {:.2} µs/pair, `||` {:.2} µs/pair, PL/pgSQL {:.2} µs/pair; net ratio dl_jsonb_merge_patch / `||` = {:.2}.",
        s.merge_pairs,
        per_pair_us(sc.rows[rust].median()),
        per_pair_us(median(&samples[0])),
        per_pair_us(median(&samples[2])),
        net
    ));
    let mismatches = one_i64(
        &mut a,
        "SELECT count(*) FROM bench.merge_pairs
          WHERE public.dl_jsonb_merge_patch(target, patch) IS DISTINCT FROM bench.plpgsql_merge_patch(target, patch)",
    )?;
    sc.notes.push(format!(
        "Cross-check: dl_jsonb_merge_patch and the PL/pgSQL implementation differ on {mismatches} of {} pairs.",
        s.merge_pairs
    ));
    if mismatches != 0 {
        return fail(format!(
            "dl_jsonb_merge_patch differs from the PL/pgSQL RFC 7396 reference on {mismatches} pairs"
        ));
    }
    sc.evidence(
        "EXPLAIN dl_jsonb_merge_patch",
        explain(&mut a, &queries[1])?,
    );
    sc.evidence("EXPLAIN jsonb || jsonb", explain(&mut a, &queries[0])?);
    Ok(sc)
}

/// VmHWM / VmRSS / RssAnon / RssShmem of a backend, in kB.
fn backend_mem(pid: i32) -> R<(f64, f64, f64, f64)> {
    let st = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let get = |k: &str| -> f64 {
        st.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Ok((
        get("VmHWM:"),
        get("VmRSS:"),
        get("RssAnon:"),
        get("RssShmem:"),
    ))
}

fn scenario_memory(b: &Bench) -> R<Scenario> {
    log("scenario 9: memory");
    let mut sc = Scenario::new(
        9,
        "Memory: peak RSS of a backend",
        "A fresh backend per repetition runs the workload, then its /proc/<pid>/status is read. VmHWM is the peak \
         resident set and counts the shared buffers the backend touched; RssAnon (at the end) is its private memory. \
         Scenario 1: the top-N query, latency-loop count of executions, as the read role. Scenario 6: the full merge query once.",
    );
    let iters = b.cfg.lat_iters;
    type Work<'a> = (&'a str, &'a str, String, usize);
    let work: Vec<Work> = vec![
        ("s1 plain table", "bench_reader", TOPN_PLAIN.to_string(), iters),
        ("s1 dl_resolved.people", "bench_reader", TOPN_EXT.to_string(), iters),
        (
            "s6 jsonb || jsonb",
            "postgres",
            "SELECT sum(pg_column_size(target || patch)) FROM bench.merge_pairs".into(),
            1,
        ),
        (
            "s6 dl_jsonb_merge_patch",
            "postgres",
            "SELECT sum(pg_column_size(public.dl_jsonb_merge_patch(target, patch))) FROM bench.merge_pairs".into(),
            1,
        ),
        (
            "s6 PL/pgSQL merge patch",
            "postgres",
            "SELECT sum(pg_column_size(bench.plpgsql_merge_patch(target, patch))) FROM bench.merge_pairs".into(),
            1,
        ),
    ];
    let mut hwm = vec![Vec::new(); work.len()];
    let mut anon = vec![Vec::new(); work.len()];
    for _ in 0..b.cfg.reps {
        for (i, (_, user, sql, n)) in work.iter().enumerate() {
            let mut c = b.connect(user)?;
            c.batch_execute("SET max_parallel_workers_per_gather = 0")?;
            let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[])?.get(0);
            let st = c.prepare(sql)?;
            for _ in 0..*n {
                c.query(&st, &[])?;
            }
            let (h, _rss, an, _sh) = backend_mem(pid)?;
            hwm[i].push(h);
            anon[i].push(an);
        }
    }
    let b1 = sc.baseline(&format!("{}: VmHWM", work[0].0), "kB", hwm[0].clone());
    sc.compared(
        &format!("{}: VmHWM", work[1].0),
        "kB",
        hwm[1].clone(),
        b1,
        None,
    );
    let b1a = sc.baseline(&format!("{}: RssAnon", work[0].0), "kB", anon[0].clone());
    sc.compared(
        &format!("{}: RssAnon", work[1].0),
        "kB",
        anon[1].clone(),
        b1a,
        None,
    );
    let b6 = sc.baseline(&format!("{}: VmHWM", work[2].0), "kB", hwm[2].clone());
    sc.compared(
        &format!("{}: VmHWM", work[3].0),
        "kB",
        hwm[3].clone(),
        b6,
        None,
    );
    sc.compared(
        &format!("{}: VmHWM", work[4].0),
        "kB",
        hwm[4].clone(),
        b6,
        None,
    );
    let b6a = sc.baseline(&format!("{}: RssAnon", work[2].0), "kB", anon[2].clone());
    sc.compared(
        &format!("{}: RssAnon", work[3].0),
        "kB",
        anon[3].clone(),
        b6a,
        None,
    );
    sc.compared(
        &format!("{}: RssAnon", work[4].0),
        "kB",
        anon[4].clone(),
        b6a,
        None,
    );
    Ok(sc)
}

/// Scenarios 7 and 8 need the provisioning tool (crates/dl-tenancy, binary dl-tenancy).
fn scenario_provisioning(b: &Bench) -> R<Vec<Scenario>> {
    let mut s7 = Scenario::new(
        7,
        "Provisioning",
        "`dl-tenancy provision --workspace W` (the CLI, one process per call, as an operator or the API would run it) \
         against the tool's own local PostgreSQL 15 + PgBouncer (`dl-tenancy local up`), one new workspace after the \
         other until the largest total. Time to `active` = wall time of the call (it returns once the workspace is \
         active; the status is checked). Per-workspace cost at N = median of the calls for workspaces N-9..N. \
         Target: median < 1 s per workspace, per-workspace cost flat within 1.5x from 10 to the largest total.",
    );
    let mut s8 = Scenario::new(
        8,
        "Connection URI rotation",
        "`dl-tenancy connection-uris rotate --workspace W --kind read` (no grace), then `reveal --pooled` for the new \
         URI, then logins through PgBouncer with it until one succeeds. Delay = from rotate's return to the first \
         successful pooled login (includes the reveal call and the login itself). Target: < 100 ms, i.e. the first \
         attempt works.",
    );
    let bin = match &b.cfg.dl_tenancy_bin {
        Some(p) => p.clone(),
        None => {
            let reason = "pending: no dl-tenancy binary given (scripts/bench passes the release build of crates/dl-tenancy when it builds); no measurement was taken."
                .to_string();
            s7.pending = Some(reason.clone());
            s8.pending = Some(reason);
            return Ok(vec![s7, s8]);
        }
    };
    log("scenario 7: provisioning (dl-tenancy local up)");
    let dir = pg_harness::temp_dir("dl-bench-tenancy")?;
    let data = dir.join("dt");
    let run = |args: &[&str]| -> R<(f64, Value)> {
        let t = Instant::now();
        let out = Command::new(&bin)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            return fail(format!(
                "dl-tenancy {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("dl-tenancy {}: output is not JSON: {e}", args.join(" ")))?;
        Ok((secs, v))
    };
    let result = (|| -> R<()> {
        run(&["local", "up"])?;
        let (single, totals, window): (usize, Vec<usize>, usize) = if b.cfg.quick {
            (3, vec![5, 10], 2)
        } else {
            (20, vec![100, 500], 10)
        };
        let last = *totals.last().unwrap_or(&single);
        let mut times = Vec::with_capacity(last);
        let started = Instant::now();
        let mut at_total = Vec::new();
        for i in 1..=last {
            let ws = format!("bench-{i:04}");
            let (secs, v) = run(&["provision", "--workspace", &ws])?;
            if v["status"] != "active" {
                return fail(format!("provision {ws}: status {}", v["status"]));
            }
            times.push(secs);
            if totals.contains(&i) {
                at_total.push((i, started.elapsed().as_secs_f64()));
                log(format!("scenario 7: {i} workspaces active"));
            }
        }
        s7.absolute(
            &format!("time to active, one new workspace (first {single})"),
            "s",
            times[..single].to_vec(),
            Some(Target::median_below(1.0)),
        );
        let first = s7.baseline(
            &format!("per workspace at {window} (workspaces 1-{window})"),
            "s",
            times[..window].to_vec(),
        );
        for &(n, _) in &at_total {
            s7.compared(
                &format!("per workspace at {n} (workspaces {}-{n})", n - window + 1),
                "s",
                times[n - window..n].to_vec(),
                first,
                Some(Target::at_most(1.5)),
            );
        }
        for &(n, total) in &at_total {
            s7.absolute(
                &format!("total for {n} workspaces, one after the other"),
                "s",
                vec![total],
                None,
            );
        }
        s7.notes.push(format!(
            "All {last} calls: median {:.3} s, min {:.3} s, max {:.3} s.",
            median(&times),
            report::min(&times),
            report::max(&times)
        ));

        log("scenario 8: rotation");
        let ws = "bench-0001";
        let reps = if b.cfg.quick { 3 } else { 20 };
        let mut delay = Vec::new();
        let mut rotate_t = Vec::new();
        let mut attempts_failed = 0usize;
        let mut old_rejected = 0usize;
        let reveal_pooled_read = || -> R<String> {
            let (_, v) = run(&[
                "connection-uris",
                "reveal",
                "--workspace",
                ws,
                "--kind",
                "read",
                "--pooled",
            ])?;
            Ok(v["uri"].as_str().unwrap_or("").to_string())
        };
        let mut old_uri = reveal_pooled_read()?;
        for _ in 0..reps {
            let (rt, _) = run(&[
                "connection-uris",
                "rotate",
                "--workspace",
                ws,
                "--kind",
                "read",
            ])?;
            let returned = Instant::now();
            let uri = reveal_pooled_read()?;
            let mut ok = false;
            for _ in 0..1000 {
                match Client::connect(&uri, NoTls) {
                    Ok(mut c) => {
                        c.simple_query("SELECT 1")?;
                        ok = true;
                        break;
                    }
                    Err(_) => {
                        attempts_failed += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }
            if !ok {
                return fail("the rotated password never worked through the pooler");
            }
            delay.push(returned.elapsed().as_secs_f64() * 1000.0);
            rotate_t.push(rt * 1000.0);
            if Client::connect(&old_uri, NoTls).is_err() {
                old_rejected += 1;
            }
            old_uri = uri;
        }
        s8.absolute(
            "rotate returned -> new password works through PgBouncer",
            "ms",
            delay,
            Some(Target::median_below(100.0)),
        );
        s8.absolute("`connection-uris rotate` call itself", "ms", rotate_t, None);
        s8.notes.push(format!(
            "{reps} rotations; failed login attempts before the new password worked: {attempts_failed}; \
             the previous password was refused afterwards in {old_rejected} of {reps} (no grace)."
        ));
        Ok(())
    })();
    let _ = run(&["local", "down"]);
    let _ = fs::remove_dir_all(&dir);
    result?;
    Ok(vec![s7, s8])
}

fn summary_table(scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    out.push_str("| # | Scenario | Measurement | Median | Ratio | Target | Result |\n");
    out.push_str("|---|---|---|---:|---:|---|---|\n");
    for s in scenarios {
        if let Some(p) = &s.pending {
            let short = p.split(':').next().unwrap_or("pending");
            let _ = writeln!(out, "| {} | {} | | | | | {} |", s.id, s.title, short);
            continue;
        }
        for (i, r) in s.rows.iter().enumerate() {
            if r.target.is_none() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} | {} | {} |",
                s.id,
                s.title,
                r.name,
                fmt_num(r.median()),
                r.unit,
                s.ratio(i).map(|x| format!("{x:.3}")).unwrap_or_default(),
                r.target.map(|t| t.text()).unwrap_or_default(),
                match s.met(i) {
                    Some(true) => "met",
                    Some(false) => "**MISSED**",
                    None => "",
                }
            );
        }
        if s.rows.iter().all(|r| r.target.is_none()) {
            let _ = writeln!(out, "| {} | {} | (report only) | | | | |", s.id, s.title);
        }
    }
    out
}

fn render_markdown(
    cfg: &Config,
    meta: &Value,
    scenarios: &[Scenario],
    notes: Option<&str>,
) -> String {
    let mut o = String::new();
    let m = &meta["machine"];
    let d = &meta["data"];
    let sz = &meta["sizes"];
    let _ = writeln!(o, "# dl_tenancy benchmarks\n");
    let _ = writeln!(
        o,
        "Generated by `scripts/bench{}` (crate `crates/dl-bench`). Every figure is a ratio to a baseline measured in \
         the same run on the same throwaway cluster; absolute numbers drift on shared machines, ratios much less.\n",
        if cfg.quick { " --quick" } else { "" }
    );
    let _ = writeln!(o, "## Run\n");
    let _ = writeln!(o, "- Date: {}", meta["date"].as_str().unwrap_or(""));
    let _ = writeln!(
        o,
        "- Machine: {} CPUs ({}), {} GiB RAM, Linux {}",
        m["nproc"],
        m["cpu"].as_str().unwrap_or(""),
        m["mem_total_gib"],
        m["kernel"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        o,
        "- PostgreSQL: {}",
        meta["postgres"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        o,
        "- Extension: dl_tenancy {} (release build), source `{}`",
        meta["extension_version"].as_str().unwrap_or(""),
        meta["git"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        o,
        "- Mode: {}; {} repetitions per measurement ({} for the bulk load), pgbench -T {} s, {} executions per latency sample after {} warm-up",
        meta["mode"].as_str().unwrap_or(""),
        cfg.reps,
        cfg.load_reps,
        cfg.pgbench_secs,
        cfg.lat_iters,
        cfg.lat_warmup
    );
    let _ = writeln!(
        o,
        "- Data (fixed seed, derived from md5 of the row number): {} base people, {} overrides ({} tombstoned, {} override-only), {} merge-patch pairs",
        sz["people"], sz["overrides"], sz["tombstoned"], sz["override_only"], sz["merge_pairs"]
    );
    let _ = writeln!(
        o,
        "- Resolved rows: {} ({} overridden). Average payloads: identity {} B jsonb with {} top-level fields (nested company/location objects, skills/languages arrays); raw {} B jsonb ({} B as text)",
        d["resolved_rows"],
        d["overridden_rows"],
        d["avg_identity_payload_bytes_jsonb"],
        d["avg_identity_top_level_fields"],
        d["avg_raw_payload_bytes_jsonb"],
        d["avg_raw_payload_bytes_text"]
    );
    if let Some(sizes) = d["size_mb"].as_object() {
        let parts: Vec<String> = sizes.iter().map(|(k, v)| format!("{k} {v} MB")).collect();
        let _ = writeln!(
            o,
            "- Relation sizes (with indexes and TOAST): {}",
            parts.join(", ")
        );
    }
    let settings: Vec<String> = meta["settings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}={}",
                        s["name"].as_str().unwrap_or(""),
                        s["value"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "- Cluster settings (throwaway cluster, loopback only): {}. synchronous_commit=off so that write ratios compare database work rather than the disk's fsync latency; jit=off so that one-off JIT compilation does not blur the comparisons.",
        settings.join(", ")
    );
    let _ = writeln!(o, "- Raw numbers: the JSON file written next to this report (`bench-results/*.json` for the committed run).\n");

    let _ = writeln!(o, "## Summary\n");
    o.push_str(&summary_table(scenarios));
    o.push('\n');
    if let Some(n) = notes {
        let _ = writeln!(o, "## Findings\n");
        o.push_str(n.trim());
        o.push_str("\n\n");
    }
    for s in scenarios {
        let _ = writeln!(o, "## {}. {}\n", s.id, s.title);
        let _ = writeln!(o, "{}\n", s.what);
        if let Some(p) = &s.pending {
            let _ = writeln!(o, "**{}**\n", p);
            continue;
        }
        o.push_str(&markdown_table(s));
        o.push('\n');
        for n in &s.notes {
            let _ = writeln!(o, "- {n}");
        }
        if !s.notes.is_empty() {
            o.push('\n');
        }
        for (t, x) in &s.evidence {
            let _ = writeln!(
                o,
                "<details><summary>{}</summary>\n\n```\n{}\n```\n</details>\n",
                t,
                x.trim_end()
            );
        }
    }
    let _ = writeln!(o, "## Re-running\n");
    let _ = writeln!(
        o,
        "`scripts/bench` (full size, writes this file and `bench-results/`), `scripts/bench --quick` (tiny data, into `bench-out/`, what CI runs), `scripts/bench --people N` for a scaled run. See `scripts/bench --help`."
    );
    o
}
