//! Results: samples, ratios to baselines, targets; rendered as Markdown and JSON.

use serde_json::{json, Value};

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

    pub fn baseline(&mut self, name: &str, unit: &str, samples: Vec<f64>) -> usize {
        self.rows.push(Row {
            name: name.into(),
            unit: unit.into(),
            samples,
            baseline: None,
            is_baseline: true,
            target: None,
        });
        self.rows.len() - 1
    }

    pub fn compared(
        &mut self,
        name: &str,
        unit: &str,
        samples: Vec<f64>,
        baseline: usize,
        target: Option<Target>,
    ) -> usize {
        self.rows.push(Row {
            name: name.into(),
            unit: unit.into(),
            samples,
            baseline: Some(baseline),
            is_baseline: false,
            target,
        });
        self.rows.len() - 1
    }

    /// A row with an absolute target and no baseline.
    pub fn absolute(
        &mut self,
        name: &str,
        unit: &str,
        samples: Vec<f64>,
        target: Option<Target>,
    ) -> usize {
        self.rows.push(Row {
            name: name.into(),
            unit: unit.into(),
            samples,
            baseline: None,
            is_baseline: false,
            target,
        });
        self.rows.len() - 1
    }

    pub fn ratio(&self, row: usize) -> Option<f64> {
        let r = &self.rows[row];
        r.baseline.map(|b| r.median() / self.rows[b].median())
    }

    pub fn met(&self, row: usize) -> Option<bool> {
        let t = self.rows[row].target?;
        if t.op == Op::MedianBelow {
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
