//! The OS side: which user the servers run as, commands and files for that user, temporary
//! directories.

use crate::{err, Error, Result};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The OS user the servers run as: `Some("postgres")` when we are root, `None` (= us) otherwise.
pub fn server_os_user() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Some("postgres")
    } else {
        None
    }
}

/// Name of the OS user the servers run as (for pg_ident maps).
pub fn server_os_user_name() -> String {
    match server_os_user() {
        Some(u) => u.to_string(),
        None => current_os_user_name(),
    }
}

/// Name of the OS user running this process.
pub fn current_os_user_name() -> String {
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy the name at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Give `path` to the server OS user (no-op when not root).
pub fn chown_to_server_user(path: &Path) -> Result<()> {
    if let Some(user) = server_os_user() {
        let (uid, gid) = os_user_ids(user)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error(format!("chown {}: {e}", path.display())))?;
    }
    Ok(())
}

fn os_user_ids(user: &str) -> Result<(u32, u32)> {
    let c = std::ffi::CString::new(user).unwrap();
    // SAFETY: getpwnam returns static storage or null; we read two integers at once.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            return err(format!("OS user {user:?} does not exist"));
        }
        Ok(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A `Command` that runs `program` as the server OS user.
pub fn server_command(program: impl AsRef<OsStr>) -> Command {
    match server_os_user() {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program.as_ref());
            c.current_dir("/");
            c
        }
        None => Command::new(program),
    }
}

/// [`server_command`] for a program that keeps many files open: its soft limit of open files
/// raised to its hard limit (at most 65,536). PgBouncer keeps a descriptor per client and per
/// server connection, and the usual soft limit (1,024, which `runuser`'s PAM session sets again)
/// is below its `max_client_conn`: past it, new server connections fail ("connect failed").
pub fn server_command_with_many_files(program: impl AsRef<OsStr>) -> Command {
    const RAISE: &str = "n=$(ulimit -Hn); \
        if [ \"$n\" = unlimited ] || [ \"$n\" -gt 65536 ]; then n=65536; fi; \
        ulimit -Sn \"$n\"; exec \"$0\" \"$@\"";
    let mut c = server_command("sh");
    c.arg("-c").arg(RAISE).arg(program.as_ref());
    c
}

/// Create a directory (and parents) owned by the server user with the given mode.
pub fn make_server_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error(format!("mkdir {}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    chown_to_server_user(path)
}

/// Write a file readable by the server user.
pub fn write_server_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut f =
        fs::File::create(path).map_err(|e| Error(format!("write {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    chown_to_server_user(path)
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh temporary directory (0711, owned by us; subdirectories go to the server user).
pub fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let base = std::env::var_os("PG_HARNESS_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for _ in 0..100 {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = base.join(format!(
            "{prefix}-{}-{n}-{:x}",
            std::process::id(),
            nanos % 0xfffff
        ));
        match fs::create_dir(&p) {
            Ok(()) => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o711))?;
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    err("cannot create a temporary directory")
}
