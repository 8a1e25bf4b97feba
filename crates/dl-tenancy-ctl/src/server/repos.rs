//! The pgBackRest repository of a server added with `server add` (whose WAL its own host
//! archives, set up by the operator): the operator's settings file, checked (`repo1-*`
//! options under `[global]` only: a repository in a directory or an object store, its keys
//! included) and stored 0600 under `<data dir>/pgbackrest/servers/<server>/`, with the tool's
//! own log and lock paths, for the commands the tool runs against that repository: `info`
//! (backups, the window, the stanza's system id) and `restore` into a scratch directory. The
//! file's values never reach a command line, a log or an error message (only option names).

use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::server::backrest::{Backrest, BACKREST_DIR};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A stanza name the tool accepts (pgBackRest's own rule is looser).
pub fn validate_stanza(stanza: &str) -> Result<()> {
    let ok = (1..=64).contains(&stanza.len())
        && stanza
            .bytes()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphanumeric() || (i > 0 && (c == b'_' || c == b'-')));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "stanza {} does not match ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$",
            serde_json::Value::String(stanza.chars().take(70).collect())
        )))
    }
}

/// The operator's repository settings, in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSettings {
    options: Vec<(String, String)>,
}

impl RepoSettings {
    /// Reads a pgBackRest configuration file of repository options: `key=value` lines under
    /// an optional `[global]` header, `#` comments. Anything else (another section, `pg1-*`,
    /// log or lock paths) is refused, naming the line but never a value.
    pub fn parse(text: &str) -> Result<RepoSettings> {
        let mut options = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let n = i + 1;
            if line.is_empty() || line.starts_with('#') || line == "[global]" {
                continue;
            }
            if line.starts_with('[') {
                return Err(invalid(format!(
                    "repository settings, line {n}: only a [global] section of repo1-* options is taken (the stanza's own section is the tool's)"
                )));
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(invalid(format!(
                    "repository settings, line {n}: not key=value"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            let key_ok = key.strip_prefix("repo1-").is_some_and(|k| {
                !k.is_empty()
                    && k.bytes()
                        .all(|c| c.is_ascii_lowercase() || c == b'-' || c.is_ascii_digit())
            });
            if !key_ok {
                return Err(invalid(format!(
                    "repository settings, line {n}: {} is not a repo1-* option",
                    serde_json::Value::String(key.chars().take(64).collect())
                )));
            }
            if value.is_empty() {
                return Err(invalid(format!(
                    "repository settings, line {n}: {key} has no value"
                )));
            }
            options.push((key.to_string(), value.to_string()));
        }
        if !options.iter().any(|(k, _)| k == "repo1-path") {
            return Err(invalid(
                "repository settings: repo1-path is missing (the repository's directory, or its path in the bucket)",
            ));
        }
        Ok(RepoSettings { options })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// What the repository is, without a secret: `posix:/path`, `s3:bucket/path`, ...
    pub fn describe(&self) -> String {
        let kind = self.get("repo1-type").unwrap_or("posix");
        let path = self.get("repo1-path").unwrap_or("");
        let bucket = [
            "repo1-s3-bucket",
            "repo1-gcs-bucket",
            "repo1-azure-container",
        ]
        .iter()
        .find_map(|k| self.get(k));
        match bucket {
            Some(b) => format!("{kind}:{b}{path}"),
            None => format!("{kind}:{path}"),
        }
    }

    /// The stored file: the tool's log and lock paths, quiet consoles, then the operator's
    /// options.
    pub fn config_text(&self, dir: &Path, server: &str) -> String {
        let mut text = format!(
            "# The repository of server {server}, stored by `dl-tenancy server archive` (rewritten by it).\n[global]\n"
        );
        for (k, v) in [
            ("log-path", dir.join("log").display().to_string()),
            ("lock-path", dir.join("lock").display().to_string()),
            ("log-level-console", "warn".into()),
            ("log-level-stderr", "off".into()),
            ("log-level-file", "info".into()),
        ] {
            text.push_str(&format!("{k}={v}\n"));
        }
        for (k, v) in &self.options {
            text.push_str(&format!("{k}={v}\n"));
        }
        text
    }
}

/// `<data dir>/pgbackrest/servers/<server>/`.
pub fn server_dir(home: &Path, server: &str) -> PathBuf {
    home.join(BACKREST_DIR).join("servers").join(server)
}

/// Writes the stored settings of `server` (the directories 0700 and the file 0600, the server
/// OS user's, who runs pgBackRest): its [`Backrest`] with `stanza`.
pub fn store(home: &Path, server: &str, stanza: &str, settings: &RepoSettings) -> Result<Backrest> {
    let dir = server_dir(home, server);
    for d in [
        home.join(BACKREST_DIR),
        home.join(BACKREST_DIR).join("servers"),
        dir.clone(),
        dir.join("log"),
        dir.join("lock"),
    ] {
        if !d.exists() {
            pg_harness::make_server_dir(&d, 0o700)?;
        }
    }
    let backrest = Backrest {
        dir: dir.clone(),
        stanza: stanza.to_string(),
    };
    pg_harness::write_server_file(
        &backrest.config_file(),
        &settings.config_text(&dir, server),
        0o600,
    )?;
    Ok(backrest)
}

/// The stored settings of `server`, for `stanza`; refused when this machine's data directory
/// does not hold them (another machine ran `server archive`).
pub fn stored(home: &Path, server: &str, stanza: &str) -> Result<Backrest> {
    let backrest = Backrest {
        dir: server_dir(home, server),
        stanza: stanza.to_string(),
    };
    if !backrest.configured() {
        return Err(Error::new(
            ErrorCode::ArchivingNotConfigured,
            format!(
                "server {server}'s repository settings are not in {} on this machine: run `dl-tenancy server archive --name {server} --backrest-stanza {stanza} --backrest-config FILE` here",
                backrest.dir.display()
            ),
        ));
    }
    Ok(backrest)
}

#[derive(Debug, Deserialize)]
struct InfoStanza {
    #[serde(default)]
    db: Vec<InfoDb>,
    status: InfoStatus,
}

#[derive(Debug, Deserialize)]
struct InfoDb {
    #[serde(rename = "system-id")]
    system_id: u64,
}

#[derive(Debug, Deserialize)]
struct InfoStatus {
    code: i64,
    message: String,
}

/// The system identifiers of the clusters the stanza has archived (the newest last), from
/// `info --output=json`; refused when the repository has no such stanza.
pub fn stanza_system_ids(backrest: &Backrest) -> Result<Vec<u64>> {
    let json = backrest.info_json()?;
    let mut stanzas: Vec<InfoStanza> = serde_json::from_str(&json).map_err(|e| {
        Error::new(
            ErrorCode::LocalServer,
            format!("pgbackrest info: unexpected output: {e}"),
        )
    })?;
    let stanza = stanzas
        .pop()
        .ok_or_else(|| invalid("pgbackrest info listed no stanza"))?;
    // 0: ok; 2: no valid backups yet (the stanza exists).
    if stanza.status.code != 0 && stanza.status.code != 2 {
        return Err(invalid(format!(
            "the repository has no usable stanza {} ({}): on the server, set its archive_command and run `pgbackrest --stanza={} stanza-create` first",
            backrest.stanza, stanza.status.message, backrest.stanza
        )));
    }
    Ok(stanza.db.into_iter().map(|d| d.system_id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_options_only_and_no_value_in_errors() {
        let s = RepoSettings::parse(
            "# ours\n[global]\nrepo1-type=s3\nrepo1-path=/dl\nrepo1-s3-bucket=backups\nrepo1-s3-key-secret=hunter2\n",
        )
        .unwrap();
        assert_eq!(s.describe(), "s3:backups/dl");
        let text = s.config_text(Path::new("/d/servers/db2"), "db2");
        assert!(text.contains("\nlog-path=/d/servers/db2/log\n"), "{text}");
        assert!(text.ends_with("repo1-s3-key-secret=hunter2\n"), "{text}");
        assert_eq!(
            RepoSettings::parse("repo1-path=/srv/repo")
                .unwrap()
                .describe(),
            "posix:/srv/repo"
        );
        for (bad, says) in [
            ("repo1-path=/r\n[db2]\npg1-path=/x", "line 2"),
            (
                "repo1-path=/r\npg1-path=/secret-ish",
                "\"pg1-path\" is not a repo1-* option",
            ),
            ("repo1-path=/r\nlog-path=/tmp", "not a repo1-* option"),
            ("repo1-path=/r\nrepo1-cipher-pass", "not key=value"),
            ("repo1-type=s3", "repo1-path is missing"),
            ("repo1-path=", "has no value"),
        ] {
            let e = RepoSettings::parse(bad).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {}", e.message);
            assert!(!e.message.contains("/secret-ish") && !e.message.contains("/tmp"));
        }
    }

    #[test]
    fn stanza_names() {
        assert!(validate_stanza("db2").is_ok());
        assert!(validate_stanza("Main_1-a").is_ok());
        for bad in ["", "-a", "a b", "a;b", &"a".repeat(65)] {
            assert!(validate_stanza(bad).is_err(), "{bad}");
        }
    }
}
