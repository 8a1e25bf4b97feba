//! Scenario 3: filtered reads the apps do (report only).

use crate::bench::{log, Bench, R};
use crate::measure::{explain, latency_compare};
use crate::report::Scenario;

pub fn run(b: &Bench) -> R<Scenario> {
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
