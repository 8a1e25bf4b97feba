//! The run's database: the extension, the logins, the generated source data and the run's
//! metadata; after the load, the checks of the resolved store and the plain baseline table.

use std::fs;
use std::process::Command;
use std::time::Instant;

use postgres::{Client, NoTls};
use serde_json::{json, Value};

use crate::bench::{fail, log, Bench, R};
use crate::data;
use crate::measure::{one_i64, one_string};

/// The database `bench`, the extension, the logins, the source data; returns the run's metadata.
pub fn setup(b: &Bench) -> R<Value> {
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

/// After the load: vacuum, check the resolved store, build the plain baseline table.
pub fn finish_data(b: &Bench) -> R<Value> {
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
