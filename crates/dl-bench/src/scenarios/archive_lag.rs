//! Scenario 16's second half: the archive lag under a write load. Apps write overrides
//! through the workspace's pooled URI while `dl-tenancy archive status` is sampled; the WAL
//! position, noted every [`LSN_EVERY`], gives the age of the oldest WAL not archived yet.

use std::time::{Duration, Instant};

use pg_harness::AppLoop;
use postgres::types::Type;
use postgres::Client;

use crate::bench::{fail, log, R};
use crate::scenarios::fleet::Socket;
use crate::scenarios::tool::Tool;

/// The seed's override upsert, as the apps send it through the pooled URI.
const UPSERT: &str = include_str!("../../../../tests/seed/override_upsert.sql");
/// Apps writing during the measurement (scenario 4's largest client count).
pub(super) const WRITERS: u64 = 2;
/// How often the WAL position is noted during the write load.
pub(super) const LSN_EVERY: Duration = Duration::from_millis(100);

/// The write load and how it is sampled.
pub(super) struct Load {
    /// The override login's pooled URI.
    pub pooled: String,
    /// Keys `person-1` .. `person-<keys>`: existing people, then new overrides.
    pub keys: u64,
    pub duration: Duration,
    pub status_every: Duration,
}

/// What the measurement saw.
pub(super) struct Lag {
    /// Per `archive status` sample.
    pub bytes: Vec<f64>,
    pub since: Vec<f64>,
    pub window: Vec<f64>,
    pub call_s: Vec<f64>,
    pub writes: usize,
    pub errors: usize,
    pub secs: f64,
    pub wal_bytes: u64,
    pub archived: i64,
    pub failures: i64,
}

/// The archiver's counters and the WAL position, on the admin session.
fn archiver(admin: &mut Client) -> R<(i64, i64, u64)> {
    let r = admin.query_one(
        "SELECT archived_count, failed_count,
                pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint
           FROM pg_stat_archiver",
        &[],
    )?;
    Ok((r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
}

/// Apps write while `archive status` is sampled; see the scenario's description.
pub(super) fn measure(load: &Load, tool: &Tool, local: &Socket, admin: &mut Client) -> R<Lag> {
    log(format!(
        "scenario 16: archive lag under {WRITERS} writing apps for {} s",
        load.duration.as_secs_f64()
    ));
    let segment: u64 = admin
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )?
        .get::<_, i64>(0) as u64;
    // The baseline's restores wrote WAL: the archiver catches up before the load starts.
    let wal: String = admin
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])?
        .get(0);
    let started = Instant::now();
    while !admin
        .query_one(
            "SELECT coalesce(last_archived_wal >= $1, false) FROM pg_stat_archiver",
            &[&wal],
        )?
        .get::<_, bool>(0)
    {
        if started.elapsed() > Duration::from_secs(300) {
            return fail(format!("WAL segment {wal} not archived within 300 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut lsn_client = local.connect("postgres")?;
    let positions = AppLoop::start(move |_| {
        std::thread::sleep(LSN_EVERY);
        lsn_client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint",
                &[],
            )
            .map(|r| r.get::<_, i64>(0) as u64)
            .map_err(|_| ())
    });
    let writers: Vec<AppLoop<()>> = (0..WRITERS)
        .map(|w| writer(&load.pooled, w, load.keys))
        .collect();
    for w in &writers {
        w.wait_for_more(5, Duration::from_secs(120))
            .or_else(|e| fail(format!("the writing apps stalled: {e}")))?;
    }
    let (archived0, failed0, lsn0) = archiver(admin)?;
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut next = t0;
    while t0.elapsed() < load.duration {
        let called = Instant::now();
        let (_, st) = tool.run(&["archive", "status"])?;
        let at = Instant::now();
        if let Some(last_at) = st["last_archived_at"].as_str() {
            let since: f64 = admin
                .query_one(
                    "SELECT extract(epoch FROM clock_timestamp() - $1::text::timestamptz)::float8",
                    &[&last_at],
                )?
                .get(0);
            samples.push((called, at, st, since));
        }
        next += load.status_every;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (archived1, failed1, lsn1) = archiver(admin)?;
    let (mut writes, mut errors) = (0, 0);
    for w in writers {
        let (acked, failed) = w.stop()?;
        writes += acked.iter().filter(|(_, at)| *at >= t0).count();
        errors += failed;
    }
    let (history, _) = positions.stop()?;
    let mut lag = Lag {
        bytes: vec![],
        since: vec![],
        window: vec![],
        call_s: vec![],
        writes,
        errors,
        secs,
        wal_bytes: lsn1.saturating_sub(lsn0),
        archived: archived1 - archived0,
        failures: failed1 - failed0,
    };
    for (called, at, st, since) in samples {
        let Some(bytes) = st["archive_lag_bytes"].as_u64() else {
            continue;
        };
        let Some(end) = st["last_archived_wal"]
            .as_str()
            .and_then(|w| segment_end(w, segment))
        else {
            continue;
        };
        lag.bytes.push(bytes as f64);
        lag.since.push(since);
        lag.call_s.push((at - called).as_secs_f64());
        lag.window.push(loss_window(&history, end, at));
    }
    if lag.bytes.is_empty() {
        return fail("archive status reported no archive lag during the write load");
    }
    Ok(lag)
}

/// The age at `at` of the oldest WAL past `end` (the end of the last archived segment): from
/// the last noted position still at or before `end` (an upper bound within one step); 0 when
/// the newest position before `at` is not past `end`.
fn loss_window(history: &[(u64, Instant)], end: u64, at: Instant) -> f64 {
    let seen: Vec<&(u64, Instant)> = history.iter().filter(|(_, t)| *t <= at).collect();
    match seen.last() {
        None => 0.0,
        Some((lsn, _)) if *lsn <= end => 0.0,
        Some(_) => seen
            .iter()
            .rev()
            .find(|(lsn, _)| *lsn <= end)
            .or(seen.first())
            .map(|(_, t)| (at - *t).as_secs_f64())
            .unwrap_or(0.0),
    }
}

/// The WAL position where segment `name` ends (a backup's history file counts as its
/// segment; other names, `None`), as the tool computes its lag.
fn segment_end(name: &str, segment: u64) -> Option<u64> {
    let backup = name.len() > 24 && name.ends_with(".backup");
    if !(name.len() == 24 || backup) || segment == 0 {
        return None;
    }
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    (log * (0x1_0000_0000 / segment) + seg + 1).checked_mul(segment)
}

/// An app writing the seed's override upsert through the pooled URI, keys spread over
/// `keys` (existing people, then new overrides), reconnecting after an error.
fn writer(pooled: &str, w: u64, keys: u64) -> AppLoop<()> {
    let sep = if pooled.contains('?') { '&' } else { '?' };
    let uri = format!("{pooled}{sep}connect_timeout=5");
    let mut client: Option<Client> = None;
    AppLoop::start(move |i| {
        if client.is_none() {
            client = dl_tenancy_ctl::connection::client_config(&uri)
                .ok()
                .and_then(|(cfg, tls)| cfg.connect(tls).ok());
        }
        let c = client.as_mut().ok_or(())?;
        // 7919 is prime: a walk over the keys that differs per app.
        let key = format!("person-{}", (i * WRITERS + w) * 7919 % keys + 1);
        let row: [(&(dyn postgres::types::ToSql + Sync), Type); 4] = [
            (&key, Type::TEXT),
            (&"customer", Type::TEXT),
            (&r#"{"title":"VP Data"}"#, Type::TEXT),
            (&r#"{"crm":{"stage":"won"}}"#, Type::TEXT),
        ];
        c.query_typed(UPSERT, &row).map(|_| ()).map_err(|_| {
            client = None;
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_end_where_the_tool_says() {
        let seg = 16 << 20;
        assert_eq!(segment_end("000000010000000000000003", seg), Some(4 * seg));
        assert_eq!(
            segment_end("000000010000000000000003.00000028.backup", seg),
            Some(4 * seg)
        );
        assert_eq!(
            segment_end("0000000200000001000000FF", seg),
            Some(0x1_0000_0000 + 256 * seg)
        );
        assert_eq!(segment_end("00000002.history", seg), None);
    }

    #[test]
    fn the_window_runs_from_the_last_position_not_past_the_archive() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let h = vec![(10, at(0)), (20, at(100)), (30, at(200)), (40, at(300))];
        assert_eq!(loss_window(&h, 40, at(350)), 0.0);
        assert!((loss_window(&h, 25, at(350)) - 0.25).abs() < 1e-9);
        assert!((loss_window(&h, 5, at(350)) - 0.35).abs() < 1e-9);
        assert_eq!(loss_window(&h, 5, t0 - Duration::from_millis(1)), 0.0);
    }
}
