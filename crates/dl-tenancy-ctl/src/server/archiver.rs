//! The server's archiver, seen from SQL: what `pg_stat_archiver` says it has archived (for
//! `archive status`, the metrics and the recoverable window), and archiving everything
//! committed until now before a point-in-time restore.

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::limits::ARCHIVE_WAIT;
use postgres::Client;

/// The state of the server's archiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The last segment archived (`None`: none yet).
    pub last_wal: Option<String>,
    /// When, in microseconds since the epoch.
    pub last_at: Option<i64>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    /// The current WAL position, as a byte offset, and the segment size.
    pub current_lsn: u64,
    pub segment_size: u64,
    /// The server's clock.
    pub now: i64,
}

const ARCHIVER: &str = "SELECT a.last_archived_wal,
        (EXTRACT(epoch FROM a.last_archived_time) * 1000000)::bigint,
        a.failed_count, a.last_failed_wal,
        pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint,
        pg_catalog.current_setting('wal_segment_size', false),
        (EXTRACT(epoch FROM pg_catalog.clock_timestamp()) * 1000000)::bigint
   FROM pg_catalog.pg_stat_archiver AS a";

/// What the archiver has done.
pub fn archived(admin: &mut Client) -> Result<Archived> {
    let r = admin.query_one(ARCHIVER, &[])?;
    let seg: String = r.get(5);
    Ok(Archived {
        last_wal: r.get(0),
        last_at: r.get(1),
        failed_count: r.get(2),
        last_failed_wal: r.get(3),
        current_lsn: r.get::<_, i64>(4).max(0) as u64,
        segment_size: parse_size(&seg),
        now: r.get(6),
    })
}

/// `16MB` and the like (how `current_setting('wal_segment_size')` shows it).
fn parse_size(s: &str) -> u64 {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap_or(0);
    match &s[digits.len()..] {
        "kB" => n << 10,
        "MB" => n << 20,
        "GB" => n << 30,
        _ => n,
    }
}

/// Everything committed on the server until now archived: a commit (so that a recovery to a
/// time before now finds a transaction after it, which is where it stops), a switch to a new
/// WAL segment, and the wait for the archiver to have that segment in the repository, at
/// most [`ARCHIVE_WAIT`]. Returns the server's time of the commit: the archive reaches it.
pub fn archive_now(admin_conn: &str) -> Result<i64> {
    let mut admin = connect(admin_conn, None)?;
    // A transaction with an id commits with a record of its own.
    let sealed: i64 = admin
        .query_one(
            "SELECT (EXTRACT(epoch FROM pg_catalog.clock_timestamp()) * 1000000)::bigint,
                    pg_catalog.txid_current()",
            &[],
        )?
        .get(0);
    let wal: String = admin
        .query_one(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())",
            &[],
        )?
        .get(0);
    let started = std::time::Instant::now();
    loop {
        let a = archived(&mut admin)?;
        // Names of one timeline order like their positions; a later timeline sorts after.
        if a.last_wal.as_deref().is_some_and(|w| w >= wal.as_str()) {
            return Ok(sealed);
        }
        if started.elapsed() > ARCHIVE_WAIT {
            return Err(Error::new(
                ErrorCode::LocalServer,
                format!(
                    "the server did not archive WAL segment {wal} within {:?} (archived so far: {}; failures: {}, last failed: {}); see pgBackRest's log",
                    ARCHIVE_WAIT,
                    a.last_wal.as_deref().unwrap_or("none"),
                    a.failed_count,
                    a.last_failed_wal.as_deref().unwrap_or("none")
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_the_server_shows_them() {
        assert_eq!(parse_size("16MB"), 16 << 20);
        assert_eq!(parse_size("1GB"), 1 << 30);
        assert_eq!(parse_size("8192kB"), 8192 << 10);
    }
}
