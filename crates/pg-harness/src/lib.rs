//! Start and stop PostgreSQL clusters and PgBouncers from Rust.
//!
//! Two layers:
//! - free functions ([`init_cluster`], [`start_cluster`], [`stop_cluster`], [`start_pgbouncer`],
//!   [`stop_pgbouncer`], ...) that operate on a directory you own and leave the servers running
//!   (the `dl-tenancy local` cluster uses these);
//! - [`PgCluster`] and [`PgBouncer`]: throwaway servers in a temporary directory on free loopback
//!   ports, stopped and deleted on `Drop` (for tests).
//!
//! PostgreSQL refuses to run as root. When the current process is root, every server command
//! runs as the `postgres` OS user (`runuser -u postgres --`) and the directories the servers need
//! are chowned to it. Otherwise the servers run as the current user.
//!
//! ```no_run
//! use pg_harness::{pgbouncer_ini, PgBouncer, PgBouncerIni, PgCluster};
//!
//! let pg = PgCluster::builder().conf("log_statement", "all").start().unwrap();
//! // Superuser over the unix socket (trust); SCRAM over TCP on 127.0.0.1:pg.port().
//! let conn = pg.conn_string("postgres", "postgres");
//! let bouncer = PgBouncer::start(|port, dir| {
//!     let ini = pgbouncer_ini(&PgBouncerIni {
//!         dir,
//!         listen_port: port,
//!         server_socket_dir: pg.socket_dir(),
//!         server_port: pg.port(),
//!         auth_type: "trust",
//!         auth_user: None,
//!         auth_query: None,
//!         pool_mode: "session",
//!         extra: &[],
//!     });
//!     (ini, "\"postgres\" \"\"\n".to_string())
//! })
//! .unwrap();
//! # let _ = (conn, bouncer.port(), pg.log());
//! // Both are stopped and their directories removed when dropped.
//! ```
//!
//! The PostgreSQL binaries are taken from `$PG_BIN_DIR`, else `pg_config --bindir` of
//! `$PG_CONFIG`, else `/usr/lib/postgresql/15/bin`. PgBouncer from `$PGBOUNCER`, else
//! `/usr/sbin/pgbouncer`, else `pgbouncer` on `$PATH`.

mod app;
mod cluster;
mod os;
mod pgbouncer;
mod ports;

pub use app::*;
pub use cluster::*;
pub use os::*;
pub use pgbouncer::*;
pub use ports::*;

use std::fmt;
use std::io;
use std::process::{Command, Stdio};

/// Errors from the harness: a message that says which command failed and its output.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error(msg.into()))
}

pub(crate) fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error(format!("{what}: cannot run: {e}")))?;
    if !out.status.success() {
        return err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
