//! Scenario 5, the bulk load: COPY of the base people into dl_cache.person_enrichments vs
//! into a plain table. Run first: it leaves the data set the other scenarios read (and when
//! it is not selected, [`load_untimed`] leaves the same data without measuring).

use std::error::Error;
use std::fs;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use postgres::Client;

use crate::bench::{fail, log, Bench, R};
use crate::data;
use crate::measure::clip;
use crate::report::{Scenario, Target};

/// COPY the first `limit` lines of `path` (all when None) with `sql`; returns seconds
/// (including the statement-level triggers, which run before COPY returns) and rows.
fn copy_in_file(c: &mut Client, sql: &str, path: &Path, limit: Option<u64>) -> R<(f64, u64)> {
    use std::io::BufRead;
    let f = fs::File::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let t = Instant::now();
    let mut w = c.copy_in(sql)?;
    match limit {
        None => {
            std::io::copy(&mut r, &mut w)?;
        }
        Some(n) => {
            let mut line = Vec::with_capacity(4096);
            for _ in 0..n {
                line.clear();
                if r.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                w.write_all(&line)?;
            }
        }
    }
    let n = w.finish()?;
    Ok((t.elapsed().as_secs_f64(), n))
}

/// Outcome of a COPY run under a statement_timeout.
enum Timed {
    Done(f64),
    TimedOut,
}

fn is_timeout(e: &(dyn Error + 'static)) -> bool {
    if let Some(pe) = e.downcast_ref::<postgres::Error>() {
        if let Some(db) = pe.as_db_error() {
            return db.code().code() == "57014";
        }
    }
    e.to_string().contains("statement timeout")
}

/// COPY under `SET statement_timeout`; a timeout is an outcome, anything else an error.
fn copy_with_timeout(
    b: &Bench,
    user: &str,
    sql: &str,
    path: &Path,
    limit: Option<u64>,
    timeout_s: f64,
    expect: u64,
) -> R<Timed> {
    let mut c = b.connect(user)?;
    c.batch_execute(&format!(
        "SET statement_timeout = '{}ms'",
        (timeout_s * 1000.0) as u64
    ))?;
    match copy_in_file(&mut c, sql, path, limit) {
        Ok((secs, n)) => {
            if n != expect {
                return fail(format!("COPY loaded {n} rows, expected {expect}"));
            }
            Ok(Timed::Done(secs))
        }
        Err(e) if is_timeout(e.as_ref()) => Ok(Timed::TimedOut),
        Err(e) => Err(e),
    }
}

const RESET_EXT: &str = "TRUNCATE dl_cache.person_enrichments, dl_override.person_overrides, dl_internal.resolved_people";

fn load_overrides_sql() -> String {
    "INSERT INTO dl_override.person_overrides
            (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
     SELECT identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at
       FROM bench.overrides_src"
        .to_string()
}

/// Empty tables, then the overrides (through their triggers), then a checkpoint.
fn reset_ext(a: &mut Client) -> R<()> {
    a.batch_execute(RESET_EXT)?;
    a.batch_execute(&load_overrides_sql())?;
    a.batch_execute("CHECKPOINT")?;
    Ok(())
}

/// The data set of the other scenarios without measuring: the overrides, then the base
/// people in one INSERT ... SELECT (the statement-level trigger refreshes the resolved store).
pub fn load_untimed(b: &Bench) -> R<()> {
    log("loading the data set (scenario 5 not selected: untimed)");
    let mut a = b.admin()?;
    reset_ext(&mut a)?;
    a.batch_execute(&format!(
        "INSERT INTO dl_cache.person_enrichments ({cols}) SELECT {cols} FROM bench.people_src ORDER BY i",
        cols = data::BASE_COLUMNS
    ))?;
    Ok(())
}

/// Scenario 5 (run first: it leaves the data set the other scenarios read).
pub fn run(b: &Bench) -> R<Scenario> {
    let s = &b.cfg.sizes;
    let mut sc = Scenario::new(
        5,
        "Enrichment load (bulk path)",
        "COPY FROM STDIN of the base people into an empty dl_cache.person_enrichments as dl_platform_runtime \
         (a new workspace's first load; the runtime's bulk path; the statement-level trigger refreshes the resolved \
         store before COPY returns), with the overrides already present, vs COPY of the same file into a plain table \
         with a primary key. Each COPY runs in a fresh session, as the runtime would.",
    );
    let mut a = b.admin()?;
    let file = b.work.join("people.copy");
    {
        let f = fs::File::create(&file)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut r = a.copy_out(&format!(
            "COPY (SELECT {} FROM bench.people_src ORDER BY i) TO STDOUT",
            data::BASE_COLUMNS
        ))?;
        std::io::copy(&mut r, &mut w)?;
        w.flush()?;
    }
    let bytes = fs::metadata(&file)?.len();
    a.batch_execute(
        "CREATE TABLE bench.plain_load (
             identity_key text PRIMARY KEY, identity_payload jsonb NOT NULL, raw_payload jsonb NOT NULL,
             status text, source text, fetched_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
         GRANT INSERT, SELECT ON bench.plain_load TO dl_platform_runtime;",
    )?;
    let copy_ext = format!(
        "COPY dl_cache.person_enrichments ({}) FROM STDIN",
        data::BASE_COLUMNS
    );
    let copy_plain = format!("COPY bench.plain_load ({}) FROM STDIN", data::BASE_COLUMNS);
    let people = s.people;

    // The plain COPY first: its time bounds the extension's (statement_timeout).
    let plain_once = |a: &mut Client, limit: Option<u64>| -> R<f64> {
        a.batch_execute("TRUNCATE bench.plain_load; CHECKPOINT")?;
        match copy_with_timeout(
            b,
            "bench_runtime",
            &copy_plain,
            &file,
            limit,
            3600.0,
            limit.unwrap_or(people),
        )? {
            Timed::Done(secs) => Ok(secs),
            Timed::TimedOut => fail("plain COPY timed out"),
        }
    };
    let first_plain = plain_once(&mut a, None)?;
    let timeout_s = (first_plain * b.cfg.load_timeout_factor).max(30.0);
    sc.notes.push(format!(
        "Input: {} rows, {:.1} MB of COPY text. Each repetition starts from empty tables and a CHECKPOINT; the extension's \
         repetitions first insert the {} overrides (untimed). Each extension COPY runs under statement_timeout = {:.0} s \
         ({}x the first plain COPY, at least 30 s); a COPY that hits it counts as a miss with throughput below rows / timeout, \
         and is not repeated.",
        people,
        bytes as f64 / 1e6,
        s.overrides,
        timeout_s,
        b.cfg.load_timeout_factor
    ));

    // Diagnostic: how the cost grows with the batch size (first rows of the same file, into
    // empty tables), with auto_explain (analyze, timing off) on the refresh statements.
    let mut series: Vec<(u64, f64, Option<f64>)> = Vec::new();
    if b.cfg.diagnose {
        let steps: Vec<u64> = [40u64, 20, 10, 5]
            .iter()
            .map(|d| (people / d).max(100))
            .collect();
        for &n in &steps {
            log(format!("scenario 5: size series, {n} rows"));
            let p = plain_once(&mut a, Some(n))?;
            reset_ext(&mut a)?;
            let e = match copy_with_timeout(
                b,
                "bench_runtime",
                &copy_ext,
                &file,
                Some(n),
                timeout_s,
                n,
            )? {
                Timed::Done(secs) => Some(secs),
                Timed::TimedOut => None,
            };
            series.push((n, p, e));
        }
        // The plan of the refresh for the largest size, with actual row counts and loops.
        let n = *steps.last().unwrap_or(&people);
        log(format!("scenario 5: auto_explain of a {n}-row load"));
        reset_ext(&mut a)?;
        let from = b.log_len();
        let mut x = b.admin()?;
        x.batch_execute(&format!(
            "LOAD 'auto_explain';
             SET auto_explain.log_min_duration = '200ms';
             SET auto_explain.log_analyze = on;
             SET auto_explain.log_timing = off;
             SET auto_explain.log_buffers = on;
             SET auto_explain.log_nested_statements = on;
             SET auto_explain.log_level = 'warning';
             SET statement_timeout = '{}ms';
             SET ROLE dl_platform_runtime;",
            (timeout_s * 1000.0) as u64
        ))?;
        let r = copy_in_file(&mut x, &copy_ext, &file, Some(n));
        drop(x);
        let outcome = match r {
            Ok((secs, _)) => format!("completed in {secs:.1} s"),
            Err(e) if is_timeout(e.as_ref()) => format!("timed out after {timeout_s:.0} s"),
            Err(e) => return Err(e),
        };
        sc.evidence(
            &format!(
                "auto_explain (ANALYZE, timing off) of the statements over 200 ms run by a {n}-row COPY's trigger ({outcome})"
            ),
            clip(&b.log_since(from), 40000),
        );
    }

    let mut plain = vec![people as f64 / first_plain];
    let mut ext = Vec::new();
    let mut ext_timed_out = false;
    for rep in 0..b.cfg.load_reps {
        log(format!(
            "scenario 5: repetition {}/{}",
            rep + 1,
            b.cfg.load_reps
        ));
        if rep > 0 {
            plain.push(people as f64 / plain_once(&mut a, None)?);
        }
        reset_ext(&mut a)?;
        match copy_with_timeout(
            b,
            "bench_runtime",
            &copy_ext,
            &file,
            None,
            timeout_s,
            people,
        )? {
            Timed::Done(secs) => {
                ext.push(people as f64 / secs);
                log(format!(
                    "scenario 5: plain {:.0} rows/s, extension {:.0} rows/s",
                    plain[plain.len() - 1],
                    ext[ext.len() - 1]
                ));
            }
            Timed::TimedOut => {
                ext.push(people as f64 / timeout_s);
                ext_timed_out = true;
                log(format!(
                    "scenario 5: plain {:.0} rows/s, extension timed out after {timeout_s:.0} s",
                    plain[plain.len() - 1]
                ));
                break;
            }
        }
    }
    let base = sc.baseline("COPY into a plain table (PK only)", "rows/s", plain);
    sc.compared(
        &if ext_timed_out {
            format!("COPY into dl_cache.person_enrichments: TIMED OUT after {timeout_s:.0} s (value = upper bound)")
        } else {
            "COPY into dl_cache.person_enrichments (resolved store refreshed)".to_string()
        },
        "rows/s",
        ext,
        base,
        Some(Target::at_least(0.33)),
    );
    for (n, p, e) in &series {
        let pr = *n as f64 / p;
        let (er, label) = match e {
            Some(secs) => (*n as f64 / secs, format!("{n} rows")),
            None => (
                *n as f64 / timeout_s,
                format!("{n} rows, TIMED OUT (upper bound)"),
            ),
        };
        let bi = sc.baseline(
            &format!("size series: plain COPY, {n} rows"),
            "rows/s",
            vec![pr],
        );
        sc.compared(
            &format!("size series: dl_cache COPY, {label}"),
            "rows/s",
            vec![er],
            bi,
            None,
        );
    }

    // The data set for the other scenarios: when the last extension COPY did not finish, load
    // the base rows with the sync trigger off and build the resolved store with the
    // extension's own refresh function, in batches (timed, as a diagnostic).
    if ext_timed_out || b.cfg.diagnose {
        log("scenario 5: load without the sync trigger, then refresh_people in batches");
        reset_ext(&mut a)?;
        a.batch_execute("ALTER TABLE dl_cache.person_enrichments DISABLE TRIGGER after_insert")?;
        let r = copy_with_timeout(b, "bench_runtime", &copy_ext, &file, None, 3600.0, people);
        a.batch_execute("ALTER TABLE dl_cache.person_enrichments ENABLE TRIGGER after_insert")?;
        let no_trigger = match r? {
            Timed::Done(secs) => secs,
            Timed::TimedOut => return fail("COPY without trigger timed out"),
        };
        a.batch_execute("ANALYZE dl_cache.person_enrichments")?;
        a.batch_execute("ANALYZE dl_override.person_overrides")?;
        let keys: Vec<String> = a
            .query(
                "SELECT identity_key FROM dl_cache.person_enrichments ORDER BY identity_key",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let t = Instant::now();
        let batch = 20_000usize;
        let mut c = b.admin()?;
        c.batch_execute("SET statement_timeout = '600s'")?;
        for chunk in keys.chunks(batch) {
            let v: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
            c.execute("SELECT dl_internal.refresh_people($1::text[])", &[&v])?;
        }
        let refresh = t.elapsed().as_secs_f64();
        sc.compared(
            "diagnostic: same COPY with the sync trigger disabled (check constraints only)",
            "rows/s",
            vec![people as f64 / no_trigger],
            base,
            None,
        );
        sc.compared(
            &format!(
                "diagnostic: trigger-less COPY + dl_internal.refresh_people in batches of {batch} keys (total)"
            ),
            "rows/s",
            vec![people as f64 / (no_trigger + refresh)],
            base,
            None,
        );
    }
    a.batch_execute("DROP TABLE bench.plain_load")?;
    let _ = fs::remove_file(&file);
    Ok(sc)
}
