//! Results: samples, ratios to baselines, targets; rendered as Markdown and JSON.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::Config;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// ratio <= value (times, latencies, costs)
    AtMost,
    /// ratio >= value (throughputs)
    AtLeast,
    /// the median itself < value (absolute targets, e.g. seconds)
    MedianBelow,
}

#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub op: Op,
    pub value: f64,
}

impl Target {
    pub fn at_most(value: f64) -> Target {
        Target {
            op: Op::AtMost,
            value,
        }
    }
    pub fn at_least(value: f64) -> Target {
        Target {
            op: Op::AtLeast,
            value,
        }
    }
    pub fn median_below(value: f64) -> Target {
        Target {
            op: Op::MedianBelow,
            value,
        }
    }
    /// `x` is the ratio, or the median for absolute targets.
    pub fn met(&self, x: f64) -> bool {
        match self.op {
            Op::AtMost => x <= self.value,
            Op::AtLeast => x >= self.value,
            Op::MedianBelow => x < self.value,
        }
    }
    pub fn text(&self) -> String {
        match self.op {
            Op::AtMost => format!("<= {}", self.value),
            Op::AtLeast => format!(">= {}", self.value),
            Op::MedianBelow => format!("median < {}", self.value),
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub samples: Vec<f64>,
    /// Index of the baseline row in the same scenario (None: this is a baseline or a report-only row).
    pub baseline: Option<usize>,
    pub is_baseline: bool,
    pub target: Option<Target>,
}

impl Row {
    /// A row that is neither a baseline nor compared to one.
    fn new(name: &str, unit: &str, samples: Vec<f64>, target: Option<Target>) -> Row {
        Row {
            name: name.into(),
            unit: unit.into(),
            samples,
            baseline: None,
            is_baseline: false,
            target,
        }
    }

    pub fn median(&self) -> f64 {
        median(&self.samples)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub id: u32,
    pub title: String,
    pub what: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    /// (title, preformatted text): EXPLAIN output and other measurements behind the numbers.
    pub evidence: Vec<(String, String)>,
    pub pending: Option<String>,
    /// Show its compared rows in the summary even without a target (a ratio reported as
    /// information).
    pub in_summary: bool,
}

impl Scenario {
    pub fn new(id: u32, title: &str, what: &str) -> Scenario {
        Scenario {
            id,
            title: title.into(),
            what: what.into(),
            ..Default::default()
        }
    }

    /// Adds `row`; returns its index (what a compared row names as its baseline).
    fn push(&mut self, row: Row) -> usize {
        self.rows.push(row);
        self.rows.len() - 1
    }

    pub fn baseline(&mut self, name: &str, unit: &str, samples: Vec<f64>) -> usize {
        self.push(Row {
            is_baseline: true,
            ..Row::new(name, unit, samples, None)
        })
    }

    pub fn compared(
        &mut self,
        name: &str,
        unit: &str,
        samples: Vec<f64>,
        baseline: usize,
        target: Option<Target>,
    ) -> usize {
        self.push(Row {
            baseline: Some(baseline),
            ..Row::new(name, unit, samples, target)
        })
    }

    /// A row with an absolute target and no baseline.
    pub fn absolute(
        &mut self,
        name: &str,
        unit: &str,
        samples: Vec<f64>,
        target: Option<Target>,
    ) -> usize {
        self.push(Row::new(name, unit, samples, target))
    }

    pub fn ratio(&self, row: usize) -> Option<f64> {
        let r = &self.rows[row];
        r.baseline.map(|b| r.median() / self.rows[b].median())
    }

    pub fn met(&self, row: usize) -> Option<bool> {
        let t = self.rows[row].target?;
        // Without a baseline, a target is on the median itself.
        if t.op == Op::MedianBelow || self.rows[row].baseline.is_none() {
            return Some(t.met(self.rows[row].median()));
        }
        Some(t.met(self.ratio(row)?))
    }

    pub fn evidence(&mut self, title: &str, text: impl Into<String>) {
        self.evidence.push((title.into(), text.into()));
    }
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{:.0}", v)
    } else if a >= 100.0 {
        format!("{:.1}", v)
    } else if a >= 1.0 {
        format!("{:.2}", v)
    } else {
        format!("{:.3}", v)
    }
}

pub fn markdown_table(s: &Scenario) -> String {
    let mut out = String::new();
    out.push_str(
        "| Measurement | Unit | n | Median | Min | Max | Ratio to baseline | Target | Result |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---|---|\n");
    for (i, r) in s.rows.iter().enumerate() {
        let ratio = match s.ratio(i) {
            Some(x) => format!("{:.3}", x),
            None if r.is_baseline => "1 (baseline)".into(),
            None => "".into(),
        };
        let target = r.target.map(|t| t.text()).unwrap_or_else(|| {
            if r.baseline.is_some() {
                "report".into()
            } else {
                String::new()
            }
        });
        let result = match s.met(i) {
            Some(true) => "met".to_string(),
            Some(false) => "**MISSED**".to_string(),
            None => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.unit,
            r.samples.len(),
            fmt_num(r.median()),
            fmt_num(min(&r.samples)),
            fmt_num(max(&r.samples)),
            ratio,
            target,
            result
        ));
    }
    out
}

pub fn scenario_json(s: &Scenario) -> Value {
    let rows: Vec<Value> = s
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "name": r.name,
                "unit": r.unit,
                "samples": r.samples,
                "median": finite(r.median()),
                "min": finite(min(&r.samples)),
                "max": finite(max(&r.samples)),
                "is_baseline": r.is_baseline,
                "baseline": r.baseline.map(|b| s.rows[b].name.clone()),
                "ratio": s.ratio(i).and_then(finite),
                "target": r.target.map(|t| t.text()),
                "met": s.met(i),
            })
        })
        .collect();
    json!({
        "id": s.id,
        "title": s.title,
        "what": s.what,
        "pending": s.pending,
        "rows": rows,
        "notes": s.notes,
        "evidence": s.evidence.iter().map(|(t, x)| json!({"title": t, "text": x})).collect::<Vec<_>>(),
    })
}

fn finite(v: f64) -> Option<f64> {
    if v.is_finite() {
        Some(v)
    } else {
        None
    }
}

pub fn summary_table(scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    out.push_str("| # | Scenario | Measurement | Median | Ratio | Target | Result |\n");
    out.push_str("|---|---|---|---:|---:|---|---|\n");
    for s in scenarios {
        if let Some(p) = &s.pending {
            let short = p.split(':').next().unwrap_or("pending");
            let _ = writeln!(out, "| {} | {} | | | | | {} |", s.id, s.title, short);
            continue;
        }
        let mut shown = 0;
        for (i, r) in s.rows.iter().enumerate() {
            if r.target.is_none() && !(s.in_summary && r.baseline.is_some()) {
                continue;
            }
            shown += 1;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} | {} | {} |",
                s.id,
                s.title,
                r.name,
                fmt_num(r.median()),
                r.unit,
                s.ratio(i).map(|x| format!("{x:.3}")).unwrap_or_default(),
                r.target
                    .map(|t| t.text())
                    .unwrap_or_else(|| "report".into()),
                match s.met(i) {
                    Some(true) => "met",
                    Some(false) => "**MISSED**",
                    None => "",
                }
            );
        }
        if shown == 0 {
            let _ = writeln!(out, "| {} | {} | (report only) | | | | |", s.id, s.title);
        }
    }
    out
}

pub fn render_markdown(
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
    if !cfg.only.is_empty() {
        let names: Vec<String> = cfg.only.iter().map(|s| s.name()).collect();
        let _ = writeln!(
            o,
            "- Scenarios: only {} (`--only`); the data set was loaded untimed when scenario 5 was not among them",
            names.join(", ")
        );
    }
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
        "`scripts/bench` (full size, writes this file and `bench-results/`), `scripts/bench --quick` (tiny data, into `bench-out/`, what CI runs), `scripts/bench --people N` for a scaled run, `scripts/bench --only pooled` (scenario names or numbers, comma-separated) for a partial run that stays in `bench-out/`. See `scripts/bench --help`."
    );
    o
}
