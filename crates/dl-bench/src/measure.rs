//! Measuring helpers shared by the scenarios: single values, EXPLAIN, interleaved latency
//! loops and interleaved pgbench runs, deterministic keys.

use std::path::Path;
use std::time::Instant;

use postgres::{Client, Statement};

use crate::bench::{Bench, R};
use crate::data::Sizes;
use crate::report::{median, Scenario, Target};

pub fn one_string(c: &mut Client, sql: &str) -> R<String> {
    Ok(c.query_one(sql, &[])?.get::<_, String>(0))
}

pub fn one_i64(c: &mut Client, sql: &str) -> R<i64> {
    Ok(c.query_one(sql, &[])?.get::<_, i64>(0))
}

pub fn explain(c: &mut Client, sql: &str) -> R<String> {
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

pub fn clip(s: &str, n: usize) -> String {
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
pub fn latency_compare(
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
pub fn sample_keys(s: &Sizes, n: usize) -> Vec<String> {
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
pub fn pgbench_compare(b: &Bench, user: &str, scripts: &[&Path], clients: u32) -> R<Vec<Vec<f64>>> {
    let mut out = vec![Vec::new(); scripts.len()];
    for _ in 0..b.cfg.reps {
        for (i, sc) in scripts.iter().enumerate() {
            out[i].push(b.pgbench(user, sc, clients)?);
        }
    }
    Ok(out)
}

/// A read of `dl_resolved.people` against the same read of a plain table, prepared and
/// interleaved ([`latency_compare`], keys cycled from `keys` when the reads take one): the
/// plain table's latency is the baseline, the view's the compared row (target: at most twice).
pub fn plain_vs_resolved_latency(
    b: &Bench,
    sc: &mut Scenario,
    plain: &str,
    resolved: &str,
    keys: &[String],
) -> R<()> {
    let l = latency_compare(
        b,
        "bench_reader",
        &[plain, resolved],
        keys,
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
    Ok(())
}

/// Reads of `dl_resolved.people` against the same reads of a plain table, interleaved, with
/// pgbench at 1 and 2 clients: the plain table's tps is the baseline, the view's the
/// compared row (target: at least half).
pub fn plain_vs_resolved_throughput(
    b: &Bench,
    sc: &mut Scenario,
    plain: &Path,
    resolved: &Path,
) -> R<()> {
    for clients in [1u32, 2] {
        let t = pgbench_compare(b, "bench_reader", &[plain, resolved], clients)?;
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
    Ok(())
}
