//! Scenario 2: point read by identity_key, view vs plain table.

use crate::bench::{log, Bench, R};
use crate::measure::{
    explain, plain_vs_resolved_latency, plain_vs_resolved_throughput, sample_keys,
};
use crate::report::Scenario;

pub const POINT_EXT: &str = "SELECT * FROM dl_resolved.people WHERE identity_key = $1";
pub const POINT_PLAIN: &str = "SELECT * FROM bench.plain_people WHERE identity_key = $1";

pub fn run(b: &Bench) -> R<Scenario> {
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
    plain_vs_resolved_latency(b, &mut sc, POINT_PLAIN, POINT_EXT, &keys)?;
    let ks = s.key_space();
    let p_plain = b.write_script("point_plain.sql", &pgbench_script("bench.plain_people", ks))?;
    let p_ext = b.write_script("point_ext.sql", &pgbench_script("dl_resolved.people", ks))?;
    plain_vs_resolved_throughput(b, &mut sc, &p_plain, &p_ext)?;
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

/// A pgbench script reading one row of `table` by a key drawn uniformly from `key_space`.
pub fn pgbench_script(table: &str, key_space: u64) -> String {
    format!(
        "\\set id random(1, {key_space})\nSELECT * FROM {table} WHERE identity_key = 'person-' || :id;\n"
    )
}
