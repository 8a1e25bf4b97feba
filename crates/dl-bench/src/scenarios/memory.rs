//! Scenario 9: peak and private memory of a backend running scenario 1's and 6's workloads.

use std::fs;

use crate::bench::{log, Bench, R};
use crate::report::Scenario;
use crate::scenarios::topn::{TOPN_EXT, TOPN_PLAIN};

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

pub fn run(b: &Bench) -> R<Scenario> {
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
    // Scenario 1's view against its plain table; scenario 6's two merge patches against `||`.
    for (base, compared) in [(0, &[1][..]), (2, &[3, 4][..])] {
        for (measure, samples) in [("VmHWM", &hwm), ("RssAnon", &anon)] {
            let row = sc.baseline(
                &format!("{}: {measure}", work[base].0),
                "kB",
                samples[base].clone(),
            );
            for &i in compared {
                sc.compared(
                    &format!("{}: {measure}", work[i].0),
                    "kB",
                    samples[i].clone(),
                    row,
                    None,
                );
            }
        }
    }
    Ok(sc)
}
