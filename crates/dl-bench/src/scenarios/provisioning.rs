//! Scenarios 7 and 8: provisioning and connection URI rotation, through the provisioning CLI
//! (crates/dl-tenancy) against its own local cluster and pooler.

use std::fs;
use std::time::Instant;

use postgres::Client;

use crate::bench::{fail, log, Bench, R};
use crate::report::{self, median, Scenario, Target};
use crate::scenarios::tool::Tool;

/// Scenarios 7 and 8 need the provisioning tool (crates/dl-tenancy, binary dl-tenancy).
pub fn run(b: &Bench) -> R<Vec<Scenario>> {
    let mut s7 = Scenario::new(
        7,
        "Provisioning",
        "`dl-tenancy provision --workspace W` (the CLI, one process per call, as an operator or the API would run it) \
         against the tool's own local PostgreSQL 15 + PgBouncer (`dl-tenancy local up`), one new workspace after the \
         other until the largest total. Time to `active` = wall time of the call (it returns once the workspace is \
         active; the status is checked). Per-workspace cost at N = median of the calls for workspaces N-9..N. \
         Target: median < 1 s per workspace, per-workspace cost flat within 1.5x from 10 to the largest total.",
    );
    let mut s8 = Scenario::new(
        8,
        "Connection URI rotation",
        "`dl-tenancy connection-uris rotate --workspace W --kind read` (no grace), then `reveal --pooled` for the new \
         URI, then logins through PgBouncer with it until one succeeds. Delay = from rotate's return to the first \
         successful pooled login (includes the reveal call and the login itself). Target: < 100 ms, i.e. the first \
         attempt works.",
    );
    let bin = match &b.cfg.dl_tenancy_bin {
        Some(p) => p.clone(),
        None => {
            let reason = "pending: no dl-tenancy binary given (scripts/bench passes the release build of crates/dl-tenancy when it builds); no measurement was taken."
                .to_string();
            s7.pending = Some(reason.clone());
            s8.pending = Some(reason);
            return Ok(vec![s7, s8]);
        }
    };
    log("scenario 7: provisioning (dl-tenancy local up)");
    let dir = pg_harness::temp_dir("dl-bench-tenancy")?;
    let data = dir.join("dt");
    let tool = Tool {
        bin,
        data: data.clone(),
    };
    let run = |args: &[&str]| tool.run(args);
    let result = (|| -> R<()> {
        run(&["local", "up"])?;
        let (single, totals, window): (usize, Vec<usize>, usize) = if b.cfg.quick {
            (3, vec![5, 10], 2)
        } else {
            (20, vec![100, 500], 10)
        };
        let last = *totals.last().unwrap_or(&single);
        let mut times = Vec::with_capacity(last);
        let started = Instant::now();
        let mut at_total = Vec::new();
        for i in 1..=last {
            let ws = format!("bench-{i:04}");
            let (secs, v) = run(&["provision", "--workspace", &ws])?;
            if v["status"] != "active" {
                return fail(format!("provision {ws}: status {}", v["status"]));
            }
            times.push(secs);
            if totals.contains(&i) {
                at_total.push((i, started.elapsed().as_secs_f64()));
                log(format!("scenario 7: {i} workspaces active"));
            }
        }
        s7.absolute(
            &format!("time to active, one new workspace (first {single})"),
            "s",
            times[..single].to_vec(),
            Some(Target::median_below(1.0)),
        );
        let first = s7.baseline(
            &format!("per workspace at {window} (workspaces 1-{window})"),
            "s",
            times[..window].to_vec(),
        );
        for &(n, _) in &at_total {
            s7.compared(
                &format!("per workspace at {n} (workspaces {}-{n})", n - window + 1),
                "s",
                times[n - window..n].to_vec(),
                first,
                Some(Target::at_most(1.5)),
            );
        }
        for &(n, total) in &at_total {
            s7.absolute(
                &format!("total for {n} workspaces, one after the other"),
                "s",
                vec![total],
                None,
            );
        }
        s7.notes.push(format!(
            "All {last} calls: median {:.3} s, min {:.3} s, max {:.3} s.",
            median(&times),
            report::min(&times),
            report::max(&times)
        ));

        log("scenario 8: rotation");
        let ws = "bench-0001";
        let reps = if b.cfg.quick { 3 } else { 20 };
        let mut delay = Vec::new();
        let mut rotate_t = Vec::new();
        let mut attempts_failed = 0usize;
        let mut old_rejected = 0usize;
        let reveal_pooled_read = || -> R<String> {
            let (_, v) = run(&[
                "connection-uris",
                "reveal",
                "--workspace",
                ws,
                "--kind",
                "read",
                "--pooled",
            ])?;
            Ok(v["uri"].as_str().unwrap_or("").to_string())
        };
        let mut old_uri = reveal_pooled_read()?;
        for _ in 0..reps {
            let (rt, _) = run(&[
                "connection-uris",
                "rotate",
                "--workspace",
                ws,
                "--kind",
                "read",
            ])?;
            let returned = Instant::now();
            let uri = reveal_pooled_read()?;
            let mut ok = false;
            for _ in 0..1000 {
                match connect_revealed(&uri) {
                    Ok(mut c) => {
                        c.simple_query("SELECT 1")?;
                        ok = true;
                        break;
                    }
                    Err(_) => {
                        attempts_failed += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }
            if !ok {
                return fail("the rotated password never worked through the pooler");
            }
            delay.push(returned.elapsed().as_secs_f64() * 1000.0);
            rotate_t.push(rt * 1000.0);
            if connect_revealed(&old_uri).is_err() {
                old_rejected += 1;
            }
            old_uri = uri;
        }
        s8.absolute(
            "rotate returned -> new password works through PgBouncer",
            "ms",
            delay,
            Some(Target::median_below(100.0)),
        );
        s8.absolute("`connection-uris rotate` call itself", "ms", rotate_t, None);
        s8.notes.push(format!(
            "{reps} rotations; failed login attempts before the new password worked: {attempts_failed}; \
             the previous password was refused afterwards in {old_rejected} of {reps} (no grace)."
        ));
        Ok(())
    })();
    let _ = run(&["local", "down"]);
    let _ = fs::remove_dir_all(&dir);
    result?;
    Ok(vec![s7, s8])
}

/// Connect with a revealed URI (TLS, `sslmode=verify-full` with its `sslrootcert`), through the
/// tool's connector: the `postgres` crate alone reads neither.
fn connect_revealed(uri: &str) -> R<Client> {
    let (cfg, tls) = dl_tenancy_ctl::connection::client_config(uri).map_err(|e| e.to_string())?;
    Ok(cfg.connect(tls)?)
}
