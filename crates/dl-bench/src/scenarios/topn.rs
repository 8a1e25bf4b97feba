//! Scenario 1: the seed's quick-start read, the newest 20 people, view vs plain table.

use crate::bench::{log, Bench, R};
use crate::measure::{explain, plain_vs_resolved_latency, plain_vs_resolved_throughput};
use crate::report::Scenario;

/// The read of the seed's quick start ("Connect from your app").
pub const TOPN_EXT: &str =
    "SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20";
pub const TOPN_PLAIN: &str =
    "SELECT identity_key, display_name FROM bench.plain_people ORDER BY updated_at DESC LIMIT 20";

pub fn run(b: &Bench) -> R<Scenario> {
    log("scenario 1: top-N read");
    let mut sc = Scenario::new(
        1,
        "Top-N read",
        "`SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20` \
         vs the same on a plain table holding the identical resolved rows (PK on identity_key, index on updated_at). \
         As the tenant read role. Latency: median of each repetition's executions (prepared); throughput: pgbench -M prepared. \
         Throughput ratio = view tps / plain tps, so the issue's \"ratio <= 2.0\" reads \">= 0.5\" there.",
    );
    plain_vs_resolved_latency(b, &mut sc, TOPN_PLAIN, TOPN_EXT, &[])?;
    let p_plain = b.write_script("topn_plain.sql", &format!("{TOPN_PLAIN};\n"))?;
    let p_ext = b.write_script("topn_ext.sql", &format!("{TOPN_EXT};\n"))?;
    plain_vs_resolved_throughput(b, &mut sc, &p_plain, &p_ext)?;
    let mut a = b.admin()?;
    sc.evidence("EXPLAIN plain table", explain(&mut a, TOPN_PLAIN)?);
    sc.evidence("EXPLAIN dl_resolved.people", explain(&mut a, TOPN_EXT)?);
    Ok(sc)
}
