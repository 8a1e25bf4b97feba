//! Decisions of a point-in-time restore, from what the repository holds (its backup sets, as
//! pgBackRest's `info` lists them) and what the server says (its clock, its archiver): which
//! backup to start from, which databases to copy, whether the disk suffices, and the window a
//! target time must fall in. Pure: times are microseconds since the Unix epoch (UTC).

use crate::domain::error::{Error, ErrorCode, Result};

const MICROS: i64 = 1_000_000;

/// Databases every restore copies whole (pgBackRest always restores them).
pub const SYSTEM_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// One backup of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    /// pgBackRest's label (`20260101-120000F`, `..._20260101-130000I`).
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// Start and stop, in whole seconds since the epoch (pgBackRest keeps no fraction).
    pub started: i64,
    pub stopped: i64,
    /// The cluster's size when it was taken, and what the backup takes in the repository.
    pub size: u64,
    pub repo_size: u64,
}

impl BackupSet {
    /// The first instant a restore from this set can stop at: its stop time rounded up to the
    /// next whole second (the backup's real end lies in the second pgBackRest records).
    fn recoverable_from(&self) -> i64 {
        (self.stopped + 1) * MICROS
    }
}

/// What the repository can recover: from the end of its oldest backup to the last WAL it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

impl Window {
    pub fn describe(&self) -> String {
        format!("{} to {}", format_utc(self.from), format_utc(self.to))
    }
}

/// The window of a repository whose WAL is archived up to `archived_to`; `None` without a
/// backup.
pub fn window(sets: &[BackupSet], archived_to: i64) -> Option<Window> {
    let from = sets.iter().map(BackupSet::recoverable_from).min()?;
    Some(Window {
        from,
        to: archived_to,
    })
}

/// The backup a restore to `target` starts from: the newest that ended before it, so the
/// least WAL is replayed. Refused when `target` is outside the window.
pub fn choose_set(sets: &[BackupSet], target: i64, archived_to: i64) -> Result<&BackupSet> {
    let Some(w) = window(sets, archived_to) else {
        return Err(Error::new(
            ErrorCode::OutsideRecoveryWindow,
            "the repository holds no backup yet, so no time can be recovered: take one with `dl-tenancy archive backup`",
        ));
    };
    if target > w.to {
        return Err(Error::new(
            ErrorCode::OutsideRecoveryWindow,
            format!(
                "{} is after the last archived WAL: the recoverable window is {}",
                format_utc(target),
                w.describe()
            ),
        ));
    }
    sets.iter()
        .filter(|s| s.recoverable_from() <= target)
        .max_by_key(|s| s.stopped)
        .ok_or_else(|| {
            Error::new(
                ErrorCode::OutsideRecoveryWindow,
                format!(
                    "{} is before the first backup ended: the recoverable window is {}",
                    format_utc(target),
                    w.describe()
                ),
            )
        })
}

/// Which databases a restore copies: the workspace's only; the others come back as sparse,
/// zeroed files (pgBackRest's selective restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbSelection {
    /// The database is in the backup: `--db-include` it.
    Include(String),
    /// It was created after the backup, so replaying WAL makes it: `--db-exclude` every
    /// other database the backup has (the system ones are always copied).
    ExcludeOthers(Vec<String>),
}

/// The selection for `database`, given the databases of the chosen backup.
pub fn select_databases(database: &str, in_backup: &[String]) -> DbSelection {
    if in_backup.iter().any(|d| d == database) {
        return DbSelection::Include(database.to_string());
    }
    DbSelection::ExcludeOthers(
        in_backup
            .iter()
            .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
            .cloned()
            .collect(),
    )
}

/// Disk a restore of one database needs: the copy of the system databases and the
/// workspace's, its dump beside it (at most as large), and the margin.
pub fn disk_needed(database_bytes: u64, system_bytes: u64, margin_bytes: u64) -> u64 {
    system_bytes
        .saturating_add(database_bytes.saturating_mul(2))
        .saturating_add(margin_bytes)
}

/// Refused when `free` is below `needed`.
pub fn check_disk(needed: u64, free: u64, where_: &str) -> Result<()> {
    if free < needed {
        return Err(Error::new(
            ErrorCode::InsufficientDisk,
            format!(
                "the restore needs about {} MB free in {where_}, which has {} MB",
                needed.div_ceil(1 << 20),
                free / (1 << 20)
            ),
        ));
    }
    Ok(())
}

/// WAL written but not archived yet, in bytes: from the end of the last archived segment
/// (`last_archived`, a WAL file name) to `current_lsn`. A backup's history file
/// (`<segment>.<offset>.backup`) counts as its segment, archived before it; `None` for other
/// names (a timeline's history) or when nothing was archived.
pub fn archive_lag_bytes(current_lsn: u64, last_archived: &str, segment_size: u64) -> Option<u64> {
    let backup_file = last_archived.len() > 24
        && last_archived.as_bytes()[24] == b'.'
        && last_archived.ends_with(".backup");
    if !(last_archived.len() == 24 || backup_file) || segment_size == 0 {
        return None;
    }
    let log = u64::from_str_radix(&last_archived[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&last_archived[16..24], 16).ok()?;
    let per_log = 0x1_0000_0000 / segment_size;
    let end = (log * per_log + seg + 1).checked_mul(segment_size)?;
    Some(current_lsn.saturating_sub(end))
}

/// `2026-01-31 12:00:00.123456+00`: a time PostgreSQL, pgBackRest and people read alike.
pub fn format_utc(micros: i64) -> String {
    let secs = micros.div_euclid(MICROS);
    let frac = micros.rem_euclid(MICROS);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{frac:06}+00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Days since 0000-03-01, in eras of 400 years (146,097 days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(label: &str, stopped: i64) -> BackupSet {
        BackupSet {
            label: label.into(),
            kind: "full".into(),
            started: stopped - 5,
            stopped,
            size: 0,
            repo_size: 0,
        }
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00.000000+00");
        assert_eq!(
            format_utc(1_796_675_497_879_485),
            "2026-12-07 20:31:37.879485+00"
        );
        assert_eq!(
            format_utc(951_782_400 * MICROS),
            "2000-02-29 00:00:00.000000+00"
        );
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59.999999+00");
    }

    /// The newest backup that ended before the target; its stop second itself is not enough.
    #[test]
    fn the_newest_backup_before_the_target_is_chosen() {
        let sets = [set("a", 100), set("b", 200), set("c", 300)];
        let to = 1_000 * MICROS;
        assert_eq!(choose_set(&sets, 250 * MICROS, to).unwrap().label, "b");
        assert_eq!(choose_set(&sets, 201 * MICROS, to).unwrap().label, "b");
        assert_eq!(
            choose_set(&sets, 200 * MICROS + 999_999, to).unwrap().label,
            "a"
        );
        assert_eq!(choose_set(&sets, 999 * MICROS, to).unwrap().label, "c");
    }

    /// Before the first backup, after the archive, or with no backup: refused, naming the
    /// window.
    #[test]
    fn targets_outside_the_window_are_refused_with_it() {
        let sets = [set("a", 100), set("b", 200)];
        let to = 500 * MICROS;
        for target in [100 * MICROS, 0, 501 * MICROS] {
            let e = choose_set(&sets, target, to).unwrap_err();
            assert_eq!(e.code, ErrorCode::OutsideRecoveryWindow);
            assert!(
                e.message
                    .contains("1970-01-01 00:01:41.000000+00 to 1970-01-01 00:08:20.000000+00"),
                "{}",
                e.message
            );
        }
        let e = choose_set(&[], 0, to).unwrap_err();
        assert_eq!(e.code, ErrorCode::OutsideRecoveryWindow);
        assert!(e.message.contains("no backup"), "{}", e.message);
    }

    #[test]
    fn a_database_in_the_backup_is_included_alone_else_the_others_are_excluded() {
        let dbs: Vec<String> = ["postgres", "dl_control", "dlw_a", "dlw_b"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            select_databases("dlw_a", &dbs),
            DbSelection::Include("dlw_a".into())
        );
        assert_eq!(
            select_databases("dlw_new", &dbs),
            DbSelection::ExcludeOthers(["dl_control", "dlw_a", "dlw_b"].map(String::from).to_vec())
        );
    }

    #[test]
    fn disk_is_checked_against_the_estimate() {
        assert_eq!(disk_needed(10, 5, 1), 26);
        assert!(check_disk(26, 26, "/x").is_ok());
        let e = check_disk(300 << 20, 100 << 20, "/x").unwrap_err();
        assert_eq!(e.code, ErrorCode::InsufficientDisk);
        assert!(
            e.message.contains("300 MB") && e.message.contains("100 MB"),
            "{}",
            e.message
        );
    }

    /// 16 MB segments: segment 0/3 ends at 0/4000000.
    #[test]
    fn archive_lag_counts_from_the_end_of_the_last_archived_segment() {
        let seg = 16 << 20;
        assert_eq!(
            archive_lag_bytes(0x0400_0100, "000000010000000000000003", seg),
            Some(0x100)
        );
        assert_eq!(
            archive_lag_bytes(0x1_0000_0000 + 5, "0000000200000000000000FF", seg),
            Some(5)
        );
        assert_eq!(archive_lag_bytes(1, "00000002.history", seg), None);
        assert_eq!(
            archive_lag_bytes(0x0400_0100, "000000010000000000000003.00000028.backup", seg),
            Some(0x100)
        );
        assert_eq!(
            archive_lag_bytes(1, "000000010000000000000003.partial", seg),
            None
        );
        assert_eq!(
            archive_lag_bytes(0, "000000010000000000000003", seg),
            Some(0)
        );
    }
}
