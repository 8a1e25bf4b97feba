//! A throwaway PostgreSQL that a point-in-time restore recovers into: a private directory
//! (0700, the server OS user's) holding its data and its unix socket, no TCP, no archiving;
//! stopped and deleted when the [`Scratch`] is dropped, whatever happened. A scratch left by
//! a process that died is removed by the next one made at the same place.

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use pg_harness::ClusterSpec;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest unix socket path (`sun_path` holds 108 bytes with its NUL).
const SOCKET_PATH_MAX: usize = 107;

pub struct Scratch {
    root: PathBuf,
    spec: Option<ClusterSpec>,
}

impl Scratch {
    /// A fresh scratch directory at `root` (what was there before is stopped and removed).
    pub fn create(root: &Path, port: u16) -> Result<Scratch> {
        let socket = root.join(format!(".s.PGSQL.{port}"));
        if socket.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!(
                    "{} is too long for a unix socket path; use a shorter --data-dir",
                    socket.display()
                ),
            ));
        }
        remove(root)?;
        pg_harness::make_server_dir(root, 0o700)?;
        // pgBackRest restores into an existing, empty directory.
        pg_harness::make_server_dir(&root.join("pg"), 0o700)?;
        Ok(Scratch {
            root: root.to_path_buf(),
            spec: None,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("pg")
    }

    /// Start the restored cluster with `base`'s settings (those of the server it is a copy
    /// of: the same libraries, the same slots) but on a private socket only, without
    /// archiving, and wait until it has replayed to its target and promoted.
    pub fn start(&mut self, base: &ClusterSpec, limit: Duration) -> Result<()> {
        let mut conf = base.conf.clone();
        conf.extend([
            ("listen_addresses".to_string(), String::new()),
            ("archive_mode".to_string(), "off".to_string()),
            ("hot_standby".to_string(), "off".to_string()),
        ]);
        let spec = ClusterSpec {
            data_dir: self.data_dir(),
            socket_dir: self.root.clone(),
            port: base.port,
            log_file: self.root.join("postgresql.log"),
            conf,
            hba: base.hba.clone(),
            ident: base.ident.clone(),
        };
        self.spec = Some(spec.clone());
        pin_settings(&spec)?;
        pg_harness::start_cluster_no_wait(&spec)?;
        wait_promoted(&spec, limit)
    }

    /// The superuser's connection string (peer authentication over the private socket).
    pub fn admin_conn(&self) -> String {
        let port = self.spec.as_ref().map_or(0, |s| s.port);
        format!(
            "host={} port={port} user=postgres dbname=postgres",
            self.root.display()
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove(&self.root);
    }
}

/// The settings that keep a scratch server private, whatever the copied configuration says
/// (an added server's own `postgresql.conf` may name its port, a TCP address, certificate
/// files of its host or other hba files, and `ALTER SYSTEM` settings come last): appended to
/// the copy's `postgresql.auto.conf`, read after everything else, after the recovery
/// settings pgBackRest wrote there. A copy without a `postgresql.conf` (the server kept it
/// outside its data directory) gets one that includes the harness' settings.
fn pin_settings(spec: &ClusterSpec) -> Result<()> {
    let data = &spec.data_dir;
    let conf = data.join("postgresql.conf");
    if !conf.exists() {
        pg_harness::write_server_file(&conf, "include_if_exists = 'harness.conf'\n", 0o600)?;
    }
    let auto = data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let path = |p: PathBuf| p.display().to_string();
    text.push_str("\n# A point-in-time restore's scratch server: private socket only.\n");
    for (k, v) in [
        ("port", spec.port.to_string()),
        ("listen_addresses", String::new()),
        ("unix_socket_directories", path(spec.socket_dir.clone())),
        ("archive_mode", "off".into()),
        ("hot_standby", "off".into()),
        ("ssl", "off".into()),
        ("logging_collector", "off".into()),
        ("hba_file", path(data.join("pg_hba.conf"))),
        ("ident_file", path(data.join("pg_ident.conf"))),
    ] {
        text.push_str(&format!("{k} = {}\n", quote(&v)));
    }
    pg_harness::write_server_file(&auto, &text, 0o600)?;
    Ok(())
}

/// Stop whatever runs in a scratch directory and delete it.
fn remove(root: &Path) -> Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let data = root.join("pg");
    if data.join("postmaster.pid").exists() {
        pg_harness::stop_cluster_immediate(&data)?;
    }
    std::fs::remove_dir_all(root)?;
    Ok(())
}

/// Wait until the cluster of `spec`, started without waiting, has recovered and promoted (it
/// answers and is not in recovery), at most `limit`. A recovery that fails stops the server:
/// that is reported with its log's FATAL lines.
pub fn wait_promoted(spec: &ClusterSpec, limit: Duration) -> Result<()> {
    let conn = spec.conn_string("postgres", "postgres");
    let started = Instant::now();
    loop {
        if let Ok(mut c) = connect(&conn, None) {
            if let Ok(r) = c.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[]) {
                if !r.get::<_, bool>(0) {
                    return Ok(());
                }
            }
        } else if !pg_harness::cluster_running(&spec.data_dir) {
            // Not answering and not running: the recovery ended it (or it never started).
            let log = std::fs::read_to_string(&spec.log_file).unwrap_or_default();
            let why: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("FATAL") || l.contains("PANIC"))
                .collect();
            return Err(Error::new(
                ErrorCode::LocalServer,
                format!(
                    "the restored server stopped during recovery: {}",
                    if why.is_empty() {
                        "no FATAL in its log".to_string()
                    } else {
                        why.join(" | ")
                    }
                ),
            ));
        }
        if started.elapsed() > limit {
            return Err(Error::new(
                ErrorCode::LocalServer,
                format!("the restored server did not finish recovering within {limit:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Free bytes for an unprivileged user on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::new(ErrorCode::InvalidArgument, "a path with a NUL byte"))?;
    // SAFETY: statvfs fills the struct we pass; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}
