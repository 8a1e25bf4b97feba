//! dl-bench: the dl_tenancy benchmark suite (issue 5).
//!
//! Starts its own throwaway cluster (pg-harness), installs the extension, generates the data
//! deterministically in SQL, runs the scenarios with warm-up and repetitions, each against a
//! baseline measured in the same run, and writes Markdown and JSON. Normally run through
//! `scripts/bench`, which builds and installs the release extension first.
//!
//! It fails (non-zero exit) only on errors, never on a missed target.
//!
//! Layout: this file (arguments, the order of the scenarios, writing the report), `bench.rs`
//! (the cluster, pgbench), `setup.rs` (database and data set), `measure.rs` (shared measuring
//! helpers), `data.rs` (the data's SQL), `report.rs` (results, Markdown, JSON) and one file
//! per scenario in `scenarios/`.

mod bench;
mod data;
mod measure;
mod report;
mod scenarios;
mod setup;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use pg_harness::PgCluster;
use serde_json::json;

use bench::{describe, log, private_extension_lib, Bench, R};
use data::Sizes;
use scenarios::ScenarioName;

/// Benchmarks of the dl_tenancy extension against plain-PostgreSQL baselines measured in the
/// same run. Normally run through scripts/bench, which installs the extension first.
#[derive(Parser, Debug)]
#[command(name = "dl-bench", args_override_self = true)]
struct Args {
    /// Tiny data, about a second per measurement (CI)
    #[arg(long, overrides_with = "full")]
    quick: bool,
    /// The sizes: 1,000,000 people, 100,000 overrides (default)
    #[arg(long, overrides_with = "quick")]
    full: bool,
    /// Where results go; results.json and BENCHMARKS.md
    #[arg(long, value_name = "DIR", default_value = "bench-out")]
    out: PathBuf,
    /// Also write the Markdown report to FILE
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Also write the JSON results to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Hand-written analysis included in the Markdown report
    #[arg(long, value_name = "FILE")]
    notes: Option<PathBuf>,
    /// Scale the full run down or up (overrides and pairs keep the proportions)
    #[arg(long, value_name = "N")]
    people: Option<u64>,
    /// Repetitions per measurement [default: 2 quick, 3 full]
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Repetitions of the bulk load [default: 2 quick, 3 full]
    #[arg(long, value_name = "N")]
    load_reps: Option<usize>,
    /// Seconds per pgbench run [default: 1 quick, 10 full]
    #[arg(long, value_name = "N")]
    pgbench_secs: Option<u32>,
    /// Executions per latency sample [default: 100 quick, 1000 full]
    #[arg(long = "latency-iters", value_name = "N")]
    latency_iters: Option<usize>,
    /// Skip the diagnostics (size series, auto_explain, trigger-less runs)
    #[arg(long)]
    no_diagnose: bool,
    /// statement_timeout of an extension COPY, in multiples of the plain COPY's time (at least 30 s)
    #[arg(long, value_name = "X", default_value_t = 10.0)]
    load_timeout_factor: f64,
    /// People in scenario 11's workspace [default: the run's people, at most 100,000]
    #[arg(long, value_name = "N")]
    fleet_people: Option<u64>,
    /// The provisioning CLI for scenarios 7, 8, 11, 14 and 16
    #[arg(long, value_name = "PATH")]
    dl_tenancy_bin: Option<PathBuf>,
    /// Run only these scenarios (comma-separated names or numbers; the data set is always built)
    #[arg(long, value_name = "SCENARIO", value_delimiter = ',')]
    only: Vec<ScenarioName>,
    /// Print the data-generation SQL for the chosen sizes and exit (to reproduce a plan by hand)
    #[arg(long)]
    print_data_sql: bool,
}

/// Scenario 11's workspace by default: issue 14 asks for a workspace of 100,000 people.
const FLEET_PEOPLE: u64 = 100_000;

#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    pub sizes: Sizes,
    pub out: PathBuf,
    pub markdown: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub notes: Option<PathBuf>,
    pub reps: usize,
    pub load_reps: usize,
    pub pgbench_secs: u32,
    pub lat_iters: usize,
    pub lat_warmup: usize,
    pub diagnose: bool,
    pub load_timeout_factor: f64,
    pub dl_tenancy_bin: Option<PathBuf>,
    /// People in scenario 11's workspace (at most the run's people).
    pub fleet_people: u64,
    pub shared_buffers: String,
    /// Empty: every scenario.
    pub only: Vec<ScenarioName>,
}

impl Config {
    fn from_args(a: Args) -> Config {
        let quick = a.quick;
        let sizes = match (quick, a.people) {
            (_, Some(n)) => Sizes::for_people(n),
            (true, None) => Sizes::quick(),
            (false, None) => Sizes::full(),
        };
        let people = sizes.people;
        let big = people >= 200_000;
        let by_mode = |q: usize, f: usize| if quick { q } else { f };
        Config {
            quick,
            sizes,
            out: a.out,
            markdown: a.markdown,
            json: a.json,
            notes: a.notes,
            reps: a.reps.unwrap_or(by_mode(2, 3)).max(1),
            load_reps: a.load_reps.unwrap_or(by_mode(2, 3)).max(1),
            pgbench_secs: a.pgbench_secs.unwrap_or(if quick { 1 } else { 10 }).max(1),
            lat_iters: a.latency_iters.unwrap_or(by_mode(100, 1000)).max(1),
            lat_warmup: by_mode(20, 200),
            diagnose: !a.no_diagnose,
            load_timeout_factor: a.load_timeout_factor,
            dl_tenancy_bin: a.dl_tenancy_bin,
            fleet_people: a.fleet_people.unwrap_or(FLEET_PEOPLE).min(people),
            shared_buffers: if big { "4GB".into() } else { "256MB".into() },
            only: a.only,
        }
    }

    fn selected(&self, s: ScenarioName) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

fn main() {
    let started = Instant::now();
    let args = Args::parse();
    let print_data_sql = args.print_data_sql;
    let cfg = Config::from_args(args);
    if print_data_sql {
        println!("{}", data::HELPERS);
        println!("{};", data::people_src_sql(cfg.sizes.people));
        println!("{};", data::overrides_src_sql(&cfg.sizes));
        return;
    }
    match run(&cfg) {
        Ok(()) => eprintln!("dl-bench: done in {:.1} s", started.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("dl-bench: error: {}", describe(e.as_ref()));
            std::process::exit(1);
        }
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

    let mut meta = setup::setup(&bench)?;
    let mut results = Vec::new();
    if cfg.selected(ScenarioName::Load) {
        results.push(scenarios::load::run(&bench)?);
    } else {
        scenarios::load::load_untimed(&bench)?;
    }
    meta["data"] = setup::finish_data(&bench)?;
    if !cfg.only.is_empty() {
        meta["run"]["only"] = json!(cfg.only.iter().map(|s| s.name()).collect::<Vec<_>>());
    }
    type Run = fn(&Bench) -> R<report::Scenario>;
    let in_order: [(ScenarioName, Run); 7] = [
        (ScenarioName::Topn, scenarios::topn::run),
        (ScenarioName::Point, scenarios::point::run),
        (ScenarioName::Filtered, scenarios::filtered::run),
        (ScenarioName::OverrideWrite, scenarios::override_write::run),
        (ScenarioName::MergePatch, scenarios::merge_patch::run),
        (ScenarioName::Memory, scenarios::memory::run),
        (ScenarioName::Pooled, scenarios::pooled::run),
    ];
    for (name, run) in in_order {
        if cfg.selected(name) {
            results.push(run(&bench)?);
        }
    }
    if cfg.selected(ScenarioName::Provisioning) {
        results.extend(scenarios::provisioning::run(&bench)?);
    }
    if cfg.selected(ScenarioName::Fleet) {
        results.push(scenarios::fleet::run(&bench)?);
    }
    if cfg.selected(ScenarioName::Many) {
        results.push(scenarios::many::run(&bench)?);
    }
    if cfg.selected(ScenarioName::Pitr) {
        results.push(scenarios::pitr::run(&bench)?);
    }
    results.sort_by_key(|s| s.id);
    write_report(cfg, &meta, &results)?;
    drop(bench);
    let _ = fs::remove_dir_all(&lib_dir);
    Ok(())
}

/// BENCHMARKS.md and results.json into --out (and --markdown / --json), the summary to stdout.
fn write_report(cfg: &Config, meta: &serde_json::Value, results: &[report::Scenario]) -> R<()> {
    let notes = match &cfg.notes {
        Some(p) => Some(fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let md = report::render_markdown(cfg, meta, results, notes.as_deref());
    let js = json!({
        "meta": meta,
        "scenarios": results.iter().map(report::scenario_json).collect::<Vec<_>>(),
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
    print!("{}", report::summary_table(results));
    log(format!(
        "wrote {} and {}",
        cfg.out.join("BENCHMARKS.md").display(),
        cfg.out.join("results.json").display()
    ));
    Ok(())
}
