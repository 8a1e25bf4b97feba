//! Scenario 6: dl_jsonb_merge_patch over many row pairs vs `jsonb || jsonb`.

use std::time::Instant;

use crate::bench::{fail, log, Bench, R};
use crate::measure::{explain, one_i64};
use crate::report::{median, Scenario, Target};

pub fn run(b: &Bench) -> R<Scenario> {
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
