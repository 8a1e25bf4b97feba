//! pgBackRest for one server, in one place: its configuration file, the PostgreSQL settings
//! that archive WAL through it, and its commands (`stanza-create`, `backup`, `info`,
//! `restore`), built as data ([`Backrest::restore_args`] and the rest are tested without a
//! server) and run as the server OS user.
//!
//! Everything lives in one directory, `<data dir>/pgbackrest/` (0700, the server OS user's):
//! `pgbackrest.conf` (0600), `conf.d/` for an operator's own settings (an object store:
//! `repo1-type=s3` and its `repo1-s3-*` keys, secrets included, stay in a file there, never
//! on a command line), `repo/` (the repository, unless `conf.d` names another `repo1-path`),
//! `log/` and `lock/`. Commands name it with `--config-path`, the one option they all take.

use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::limits::{ARCHIVE_TIMEOUT_SECONDS, ARCHIVE_WAIT, BACKREST_LIMIT};
use crate::plan::pitr::{BackupSet, DbSelection};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The directory under the tool's data directory.
pub const BACKREST_DIR: &str = "pgbackrest";

/// The pgBackRest program: `$PGBACKREST`, else Debian's.
pub fn backrest_bin() -> PathBuf {
    std::env::var_os("PGBACKREST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/pgbackrest"))
}

/// pgBackRest is installed (`scripts/setup` installs Debian's package).
pub fn check_backrest() -> Result<()> {
    let bin = backrest_bin();
    let works = std::process::Command::new(&bin)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::LocalServer,
        format!(
            "{} does not run: the local server archives its WAL with pgBackRest; run scripts/setup, or point PGBACKREST at one",
            bin.display()
        ),
    ))
}

/// Where a server's PostgreSQL is, as pgBackRest reaches it (over the unix socket, as the
/// server OS user, logged in as `postgres` by peer authentication).
#[derive(Debug, Clone)]
pub struct PgSide {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
}

/// Kinds of backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

impl std::str::FromStr for BackupKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<BackupKind> {
        match s {
            "full" => Ok(BackupKind::Full),
            "diff" => Ok(BackupKind::Diff),
            "incr" => Ok(BackupKind::Incr),
            _ => Err(crate::domain::error::invalid(format!(
                "backup type {s:?}: full, diff or incr"
            ))),
        }
    }
}

/// One restore: into `data_dir` from backup `set`, the databases `selection` picks (all when
/// `None`), replaying WAL to `target` (a time; the end of the archive when `None`).
#[derive(Debug, Clone)]
pub struct RestoreRequest<'a> {
    pub data_dir: &'a Path,
    pub set: Option<&'a str>,
    pub selection: Option<&'a DbSelection>,
    pub target: Option<&'a str>,
    /// Whether the restored cluster archives (a scratch copy must not: its WAL would land in
    /// the repository as a new timeline of the real server).
    pub archive: bool,
}

/// A server's pgBackRest: its configuration directory and stanza.
#[derive(Debug, Clone)]
pub struct Backrest {
    pub dir: PathBuf,
    pub stanza: String,
}

impl Backrest {
    /// The pgBackRest of the tool's data directory `data_dir`; the stanza is the server's id.
    pub fn in_data_dir(data_dir: &Path, stanza: &str) -> Backrest {
        Backrest {
            dir: data_dir.join(BACKREST_DIR),
            stanza: stanza.to_string(),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("pgbackrest.conf")
    }

    /// Whether `local up` set it up.
    pub fn configured(&self) -> bool {
        self.config_file().exists()
    }

    /// The repository directory, unless an operator's `conf.d` names another repository.
    pub fn default_repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    /// `pgbackrest.conf`. `repo1-path` is left to `conf.d` when a file there sets it.
    pub fn config_text(&self, pg: &PgSide, retention_full: u32, repo_in_conf_d: bool) -> String {
        let mut global = vec![
            ("log-path", self.dir.join("log").display().to_string()),
            ("lock-path", self.dir.join("lock").display().to_string()),
            ("log-level-console", "warn".into()),
            ("log-level-stderr", "off".into()),
            ("log-level-file", "info".into()),
            ("repo1-retention-full", retention_full.to_string()),
            // Many small files bundled: a fraction of the time on a slow disk.
            ("repo1-bundle", "y".into()),
            ("compress-type", "lz4".into()),
            ("start-fast", "y".into()),
            ("archive-timeout", ARCHIVE_WAIT.as_secs().to_string()),
        ];
        if !repo_in_conf_d {
            global.insert(0, ("repo1-path", self.default_repo().display().to_string()));
        }
        let stanza = [
            ("pg1-path", pg.data_dir.display().to_string()),
            ("pg1-socket-path", pg.socket_dir.display().to_string()),
            ("pg1-port", pg.port.to_string()),
            ("pg1-user", "postgres".into()),
        ];
        let mut text =
            String::from("# Written by `dl-tenancy local up` (rewritten at every up).\n[global]\n");
        for (k, v) in global {
            text.push_str(&format!("{k}={v}\n"));
        }
        text.push_str(&format!("\n[{}]\n", self.stanza));
        for (k, v) in stanza {
            text.push_str(&format!("{k}={v}\n"));
        }
        text
    }

    /// The options every command starts with.
    fn base_args(&self) -> Vec<String> {
        vec![
            format!("--config-path={}", self.dir.display()),
            format!("--stanza={}", self.stanza),
        ]
    }

    /// `archive_command`: the program and the configuration directory shell-quoted (the
    /// server runs it through `sh`).
    pub fn archive_command(&self) -> String {
        let mut words = vec![shell_quote(&backrest_bin().display().to_string())];
        words.extend(self.base_args().iter().map(|a| shell_quote(a)));
        words.push("archive-push".into());
        words.push("%p".into());
        words.join(" ")
    }

    /// The server settings that archive every WAL segment through pgBackRest.
    pub fn archive_settings(&self) -> Vec<(String, String)> {
        vec![
            ("archive_mode".into(), "on".into()),
            ("archive_command".into(), self.archive_command()),
            (
                "archive_timeout".into(),
                format!("{ARCHIVE_TIMEOUT_SECONDS}s"),
            ),
        ]
    }

    /// The directory, its subdirectories and the configuration file, all the server OS
    /// user's (the file 0600).
    pub fn write_config(&self, pg: &PgSide, retention_full: u32) -> Result<()> {
        for dir in ["", "conf.d", "log", "lock"] {
            let d = self.dir.join(dir);
            if !d.exists() {
                pg_harness::make_server_dir(&d, 0o700)?;
            }
        }
        let repo_in_conf_d = conf_d_sets_repo_path(&self.dir.join("conf.d"));
        pg_harness::write_server_file(
            &self.config_file(),
            &self.config_text(pg, retention_full, repo_in_conf_d),
            0o600,
        )?;
        Ok(())
    }

    /// The arguments of `restore` for `req`.
    pub fn restore_args(&self, req: &RestoreRequest) -> Vec<String> {
        let mut args = self.base_args();
        args.push("restore".into());
        args.push(format!("--pg1-path={}", req.data_dir.display()));
        if let Some(set) = req.set {
            args.push(format!("--set={set}"));
        }
        match req.selection {
            Some(DbSelection::Include(db)) => args.push(format!("--db-include={db}")),
            Some(DbSelection::ExcludeOthers(dbs)) => {
                args.extend(dbs.iter().map(|db| format!("--db-exclude={db}")))
            }
            None => {}
        }
        if let Some(target) = req.target {
            args.push("--type=time".into());
            args.push(format!("--target={target}"));
            args.push("--target-action=promote".into());
        }
        if !req.archive {
            args.push("--archive-mode=off".into());
        }
        args
    }

    /// `pgbackrest ARGS` as the server OS user, to its end or [`BACKREST_LIMIT`]; its stdout.
    fn run(&self, what: &str, args: Vec<String>) -> Result<String> {
        let mut cmd = pg_harness::server_command(backrest_bin());
        cmd.args(&args).stdin(std::process::Stdio::null());
        let out = crate::server::archive::output_within(cmd, BACKREST_LIMIT)
            .map_err(|e| e.with_context(&format!("pgbackrest {what}")))?;
        if !out.status.success() {
            // pgBackRest prints its errors on stdout (log-level-console) and never an option
            // of the `secure` kind (keys, passphrases) in them.
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let why: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .collect();
            let why = if why.is_empty() {
                text.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            } else {
                why.join(" | ")
            };
            return Err(Error::new(
                ErrorCode::LocalServer,
                format!("pgbackrest {what} failed ({}): {why}", out.status),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `stanza-create`: harmless when the stanza exists for this cluster.
    pub fn stanza_create(&self) -> Result<()> {
        let mut args = self.base_args();
        args.push("stanza-create".into());
        self.run("stanza-create", args).map(|_| ())
    }

    /// A backup of `kind` (an `incr` or `diff` without a full one before it becomes full),
    /// then the expiry of what retention no longer keeps.
    pub fn backup(&self, kind: BackupKind) -> Result<()> {
        let mut args = self.base_args();
        args.push("backup".into());
        args.push(format!("--type={}", kind.as_str()));
        self.run("backup", args).map(|_| ())
    }

    /// The repository's backups, oldest first.
    pub fn backups(&self) -> Result<Vec<BackupSet>> {
        Ok(parse_info(&self.info(None)?)?
            .backup
            .into_iter()
            .map(InfoBackup::into_set)
            .collect())
    }

    /// The databases of one backup.
    pub fn databases(&self, label: &str) -> Result<Vec<String>> {
        let info = parse_info(&self.info(Some(label))?)?;
        let set = info.backup.into_iter().find(|b| b.label == label);
        Ok(set
            .map(|b| b.database_ref.into_iter().map(|d| d.name).collect())
            .unwrap_or_default())
    }

    /// `info --output=json` of the stanza, as pgBackRest prints it.
    pub(crate) fn info_json(&self) -> Result<String> {
        self.info(None)
    }

    fn info(&self, set: Option<&str>) -> Result<String> {
        let mut args = self.base_args();
        args.push("info".into());
        args.push("--output=json".into());
        if let Some(set) = set {
            args.push(format!("--set={set}"));
        }
        self.run("info", args)
    }

    pub fn restore(&self, req: &RestoreRequest) -> Result<()> {
        self.run("restore", self.restore_args(req)).map(|_| ())
    }
}

/// Whether a file in `conf.d` sets `repo1-path` (an operator's repository).
fn conf_d_sets_repo_path(conf_d: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(conf_d) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.path().extension().is_some_and(|x| x == "conf")
            && std::fs::read_to_string(e.path())
                .is_ok_and(|t| t.lines().any(|l| l.trim_start().starts_with("repo1-path")))
    })
}

/// `'word'` for `sh`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[derive(Debug, Deserialize)]
struct Info {
    #[serde(default)]
    backup: Vec<InfoBackup>,
}

#[derive(Debug, Deserialize)]
struct InfoBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: InfoTimes,
    info: InfoSizes,
    #[serde(rename = "database-ref", default)]
    database_ref: Vec<InfoDatabase>,
}

#[derive(Debug, Deserialize)]
struct InfoTimes {
    start: i64,
    stop: i64,
}

#[derive(Debug, Deserialize)]
struct InfoSizes {
    size: u64,
    repository: InfoRepoSize,
}

#[derive(Debug, Deserialize)]
struct InfoRepoSize {
    size: u64,
}

#[derive(Debug, Deserialize)]
struct InfoDatabase {
    name: String,
}

impl InfoBackup {
    fn into_set(self) -> BackupSet {
        BackupSet {
            label: self.label,
            kind: self.kind,
            started: self.timestamp.start,
            stopped: self.timestamp.stop,
            size: self.info.size,
            repo_size: self.info.repository.size,
        }
    }
}

/// `info --output=json`: one stanza (we always name one).
fn parse_info(json: &str) -> Result<Info> {
    let mut stanzas: Vec<Info> = serde_json::from_str(json).map_err(|e| {
        Error::new(
            ErrorCode::LocalServer,
            format!("pgbackrest info: unexpected output: {e}"),
        )
    })?;
    Ok(stanzas.pop().unwrap_or(Info { backup: vec![] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backrest() -> Backrest {
        Backrest::in_data_dir(Path::new("/srv/dl tenancy"), "local")
    }

    fn pg() -> PgSide {
        PgSide {
            data_dir: "/srv/dl tenancy/pg".into(),
            socket_dir: "/srv/dl tenancy/run".into(),
            port: 55432,
        }
    }

    #[test]
    fn the_configuration_names_the_repository_and_the_server() {
        let text = backrest().config_text(&pg(), 3, false);
        for line in [
            "[global]",
            "repo1-path=/srv/dl tenancy/pgbackrest/repo",
            "repo1-retention-full=3",
            "log-path=/srv/dl tenancy/pgbackrest/log",
            "[local]",
            "pg1-path=/srv/dl tenancy/pg",
            "pg1-socket-path=/srv/dl tenancy/run",
            "pg1-port=55432",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // An operator's conf.d names the repository: we do not name a second one.
        let text = backrest().config_text(&pg(), 3, true);
        assert!(!text.contains("repo1-path"), "{text}");
    }

    #[test]
    fn the_archive_command_quotes_paths_for_the_shell() {
        assert_eq!(
            backrest().archive_command(),
            format!(
                "'{}' '--config-path=/srv/dl tenancy/pgbackrest' '--stanza=local' archive-push %p",
                backrest_bin().display()
            )
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_point_in_time_restore_of_one_database_without_archiving() {
        let include = DbSelection::Include("dlw_a".into());
        let args = backrest().restore_args(&RestoreRequest {
            data_dir: Path::new("/x/pg"),
            set: Some("20260101-000000F"),
            selection: Some(&include),
            target: Some("2026-01-01 00:00:05.000000+00"),
            archive: false,
        });
        assert_eq!(
            args,
            [
                "--config-path=/srv/dl tenancy/pgbackrest",
                "--stanza=local",
                "restore",
                "--pg1-path=/x/pg",
                "--set=20260101-000000F",
                "--db-include=dlw_a",
                "--type=time",
                "--target=2026-01-01 00:00:05.000000+00",
                "--target-action=promote",
                "--archive-mode=off",
            ]
        );
        let exclude = DbSelection::ExcludeOthers(vec!["dl_control".into(), "dlw_b".into()]);
        let args = backrest().restore_args(&RestoreRequest {
            data_dir: Path::new("/x/pg"),
            set: None,
            selection: Some(&exclude),
            target: None,
            archive: true,
        });
        assert_eq!(
            &args[3..],
            [
                "--pg1-path=/x/pg",
                "--db-exclude=dl_control",
                "--db-exclude=dlw_b"
            ]
        );
    }

    /// `info --output=json` as pgBackRest 2.45 prints it.
    #[test]
    fn info_is_read() {
        let json = r#"[{"archive":[{"id":"15-1","max":"000000010000000000000013","min":"000000010000000000000010"}],
          "backup":[{"archive":{"start":"000000010000000000000011","stop":"000000010000000000000012"},
            "database-ref":[{"name":"postgres","oid":5},{"name":"dlw_a","oid":16384}],
            "info":{"delta":23213861,"repository":{"delta":4546481,"size":4546481},"size":23213861},
            "label":"20261207-203101F","prior":null,"reference":null,
            "timestamp":{"start":1796675461,"stop":1796675463},"type":"full"}],
          "name":"local","status":{"code":0,"message":"ok"}}]"#;
        let info = parse_info(json).unwrap();
        assert_eq!(
            info.backup[0]
                .database_ref
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            ["postgres", "dlw_a"]
        );
        let set = parse_info(json).unwrap().backup.remove(0).into_set();
        assert_eq!(
            set,
            BackupSet {
                label: "20261207-203101F".into(),
                kind: "full".into(),
                started: 1796675461,
                stopped: 1796675463,
                size: 23213861,
                repo_size: 4546481,
            }
        );
        assert!(parse_info("[]").unwrap().backup.is_empty());
    }
}
