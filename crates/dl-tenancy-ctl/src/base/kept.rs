//! Sessions kept for reuse by a long-running front (`serve`): one r2d2 pool per connection
//! string and database, for read-only work only (status, metadata, reveal, token lookups).
//! Operations that take locks or change a session's state open sessions of their own, so
//! nothing one call leaves in a session (an advisory lock, a setting) reaches the next.

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use postgres::Client;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::Duration;

/// Opens and checks the sessions of one pool.
pub(crate) struct Manager {
    conn: String,
    db: Option<String>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Client;
    type Error = Error;

    fn connect(&self) -> Result<Client> {
        connect(&self.conn, self.db.as_deref())
    }

    fn is_valid(&self, c: &mut Client) -> Result<()> {
        c.simple_query("").map(|_| ()).map_err(Error::from)
    }

    fn has_broken(&self, c: &mut Client) -> bool {
        c.is_closed()
    }
}

/// A session: kept (back to its pool when dropped) or opened for this call alone.
pub(crate) enum Session {
    Own(Client),
    Kept(r2d2::PooledConnection<Manager>),
}

impl Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self {
            Session::Own(c) => c,
            Session::Kept(c) => c,
        }
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        match self {
            Session::Own(c) => c,
            Session::Kept(c) => c,
        }
    }
}

/// Where a pool's sessions go: a connection string and a database (`None`: its own).
type Target = (String, Option<String>);

/// The pools, one per [`Target`], each of at most `size` sessions.
pub(crate) struct Kept {
    size: u32,
    pools: Mutex<HashMap<Target, r2d2::Pool<Manager>>>,
}

impl Kept {
    pub(crate) fn new(size: u32) -> Kept {
        Kept {
            size: size.max(1),
            pools: Mutex::default(),
        }
    }

    pub(crate) fn get(&self, conn: &str, db: Option<&str>) -> Result<Session> {
        let key = (conn.to_string(), db.map(str::to_string));
        let pool = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            match pools.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = r2d2::Pool::builder()
                        .max_size(self.size)
                        .min_idle(Some(0))
                        // Idle sessions go, and give their slots back to the server.
                        .idle_timeout(Some(Duration::from_secs(60)))
                        .connection_timeout(Duration::from_secs(5))
                        .error_handler(Box::new(r2d2::NopErrorHandler))
                        .build_unchecked(Manager {
                            conn: key.0.clone(),
                            db: key.1.clone(),
                        });
                    pools.insert(key, p.clone());
                    p
                }
            }
        };
        match pool.get() {
            Ok(c) => Ok(Session::Kept(c)),
            // Every session in use for the whole timeout: busy, not one more session (a flood
            // of calls must not take more of the server's slots than the platform keeps).
            Err(_) if pool.state().connections >= self.size => Err(Error::new(
                ErrorCode::Busy,
                "every session kept for this server is in use; retry",
            )),
            // None could be opened: the error of one more try names the cause (the server is
            // down, the database is gone, ...), or the server is back.
            Err(_) => connect(conn, db).map(Session::Own),
        }
    }
}

impl std::fmt::Debug for Kept {
    /// No connection strings: they hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Drop for Kept {
    /// The sync `postgres` client blocks on its own runtime when dropped, which panics inside
    /// an async runtime (where a server drops its state): the pools go on a plain thread.
    fn drop(&mut self) {
        let pools = std::mem::take(self.pools.get_mut().unwrap_or_else(|e| e.into_inner()));
        let _ = std::thread::spawn(move || drop(pools)).join();
    }
}
