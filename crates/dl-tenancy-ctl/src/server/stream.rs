//! A move's copy by logical replication: the workspace's data streams to the target while the
//! workspace stays live, so the pause only has to drain the last changes.
//!
//! Before the pause ([`Stream::start`], [`Stream::wait_copied`]): the target database gets the
//! extension at the source's version with its tables emptied; the source publishes every
//! table of the extension (the internal resolved store too: an apply worker fires no
//! triggers, so the store is copied, not rebuilt) to a subscription on the target. The
//! subscription logs in as a login made for this move only: `REPLICATION`, a random
//! password, `SELECT` on those tables and nothing else; it is dropped when the move ends.
//!
//! In the pause ([`Stream::catch_up`]): a marker row is written on the source last; once the
//! target has it, everything committed before it is applied (an apply worker keeps commit
//! order). The sequences follow. `tenant_custom` is not streamed: an apply worker runs as a
//! superuser, and the tenant's code (CHECK constraints, index expressions, domains) would run
//! with its rights. It is dumped and loaded as the tenant in the pause instead, as a restore
//! does.
//!
//! Every object is named `dl_move_<16 hex digits>` (the handle, recorded in the control
//! database before any is made), so [`remove`] finds and drops them after a crash.

use crate::server::catalog::end_sessions;
use crate::server::catalog::Sessions;

use crate::domain::limits::CATCH_UP_LIMIT;
use crate::domain::limits::COPY_LIMIT;
use crate::domain::limits::MOVER_CONNECTION_LIMIT;
use crate::domain::limits::SUBSCRIBE_LIMIT;
use crate::domain::limits::WORKER_WAIT;

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::EXTENSION;
use crate::domain::types::Server;
use crate::plan::quote::{quote_ident, quote_literal};
use crate::server::archive::install_version;
use crate::server::catalog::{database_exists, role_exists};
use crate::server::counts::count_each;
use crate::server::roles::ensure_tool_login;
use postgres::Client;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The replicated tables: the extension's own, all of them (regclass text).
const STREAMED_TABLES: &str = "
    SELECT c.oid::regclass::text FROM pg_catalog.pg_depend AS d
      JOIN pg_catalog.pg_class AS c ON c.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_class'::regclass
       AND d.refclassid = 'pg_catalog.pg_extension'::regclass
       AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = $1)
       AND d.deptype = 'e' AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
     ORDER BY 1";

/// A new handle: names the move's login, publication, slot, subscription and marker table.
pub(crate) fn new_handle() -> String {
    let bytes = crate::base::secret::random_bytes::<8>();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("dl_move_{hex}")
}

/// Why the source cannot stream (its `wal_level`), or `None` when it can.
pub(crate) fn cannot_stream(source_admin: &mut Client) -> Result<Option<String>> {
    let level: String = source_admin.query_one("SHOW wal_level", &[])?.get(0);
    Ok((level != "logical").then(|| {
        format!("the source server runs with wal_level = {level} (logical replication needs wal_level = logical)")
    }))
}

/// The marker table (in `dl_internal`, out of tenants' reach) as regclass text.
fn marker(handle: &str) -> String {
    format!("dl_internal.{}", quote_ident(handle))
}

/// A running subscription of the target database to the source's.
pub(crate) struct Stream {
    pub handle: String,
    /// The workspace database (the same name on both servers).
    db: String,
    /// The streamed tables and the marker.
    tables: Vec<String>,
}

impl Stream {
    /// Prepare both sides and subscribe. `source_db` and `target_db` are superuser sessions
    /// in the workspace database on each server.
    pub(crate) fn start(
        handle: &str,
        source: &Server,
        source_db: &mut Client,
        target_db: &mut Client,
        db: &str,
        from_version: &str,
    ) -> Result<Stream> {
        source_db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
        let mut tables: Vec<String> = source_db
            .query(STREAMED_TABLES, &[&EXTENSION])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let marker = marker(handle);
        let create_marker =
            format!("CREATE TABLE IF NOT EXISTS {marker} (done boolean PRIMARY KEY)");

        // The target: the extension at the source's version, its tables empty (the install
        // fills some), and the marker.
        install_version(target_db, from_version)?;
        target_db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
        target_db.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))?;
        target_db.batch_execute(&create_marker)?;
        tables.push(marker.clone());

        // The source: the move's login, its read rights, the publication.
        let password = crate::base::secret::random_password();
        let mut source_admin = connect(&source.admin_conn, None)?;
        let qrole = quote_ident(handle);
        ensure_tool_login(
            &mut source_admin,
            handle,
            &format!("REPLICATION NOINHERIT CONNECTION LIMIT {MOVER_CONNECTION_LIMIT}"),
            &password,
        )?;
        source_admin.batch_execute(&format!(
            "GRANT CONNECT ON DATABASE {} TO {qrole}",
            quote_ident(db)
        ))?;
        let schemas: Vec<String> = source_db
            .query(
                "SELECT DISTINCT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_class AS c
                   JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                  WHERE c.oid::regclass::text = ANY ($1)",
                &[&tables[..tables.len() - 1].to_vec()],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // One statement per transaction: holding catalog row locks from the GRANTs while
        // waiting for a table lock deadlocks with an autovacuum that updates those rows.
        for sql in [
            create_marker,
            format!("GRANT USAGE ON SCHEMA {} TO {qrole}", schemas.join(", ")),
            format!("GRANT SELECT ON {} TO {qrole}", tables.join(", ")),
            format!("DROP PUBLICATION IF EXISTS {qrole}"),
            format!("CREATE PUBLICATION {qrole} FOR TABLE {}", tables.join(", ")),
        ] {
            source_db.batch_execute(&sql)?;
        }

        // The target subscribes. The statement holds the password: not logged, never echoed.
        let conninfo = conninfo(&[
            ("host", source.host.as_str()),
            // PostgreSQL itself, not a front for tenants.
            ("port", &source.platform_port.to_string()),
            ("dbname", db),
            ("user", handle),
            ("password", &password),
            ("application_name", handle),
            (
                "sslmode",
                if source.ca_file.is_some() {
                    "verify-full"
                } else {
                    "require"
                },
            ),
            ("sslrootcert", source.ca_file.as_deref().unwrap_or("")),
            // Without a CA to verify against, SCRAM's channel binding still keeps a man in
            // the middle from relaying the login.
            (
                "channel_binding",
                if source.ca_file.is_some() {
                    ""
                } else {
                    "require"
                },
            ),
        ]);
        // Creating the slot waits for every transaction running on the source to end: bounded.
        target_db.batch_execute(&format!(
            "SET log_statement = 'none'; SET log_min_error_statement = 'panic';
             SET log_min_duration_statement = -1; SET statement_timeout = {}",
            SUBSCRIBE_LIMIT.as_millis()
        ))?;
        target_db
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {qrole} CONNECTION {} PUBLICATION {qrole}
                   WITH (slot_name = {}, copy_data = true)",
                quote_literal(&conninfo),
                quote_literal(handle)
            ))
            .map_err(|e| {
                let e = Error::from(e);
                let message = e
                    .message
                    .replace(&password, "********")
                    .replace(&crate::base::secret::scram_verifier(&password), "********");
                Error::new(
                    e.code,
                    format!("the target server could not subscribe to the source: {message}"),
                )
            })?;
        target_db.batch_execute(
            "RESET log_statement; RESET log_min_error_statement; RESET log_min_duration_statement",
        )?;
        Ok(Stream {
            handle: handle.into(),
            db: db.into(),
            tables,
        })
    }

    /// The streamed tables (regclass text), without the marker.
    pub(crate) fn tables(&self) -> &[String] {
        &self.tables[..self.tables.len() - 1]
    }

    /// After the catch-up: the subscription applies nothing more (whatever reached the source
    /// late could only be applied onto the live target).
    pub(crate) fn stop(&self, target_db: &mut Client) -> Result<()> {
        target_db.batch_execute(&format!(
            "ALTER SUBSCRIPTION {} DISABLE",
            quote_ident(&self.handle)
        ))?;
        Ok(())
    }

    /// After [`Stream::stop`]: the publication, the marker and the move login's rights gone
    /// from the source database, so that its dump holds nothing of the stream.
    pub(crate) fn release_source(
        &self,
        source_admin: &mut Client,
        source_db: &mut Client,
    ) -> Result<()> {
        release_database(source_admin, source_db, &self.db, &self.handle)
    }

    /// Wait until every table's first copy is done (the workspace stays live meanwhile).
    /// `report` gets (tables copied, tables) when it changes.
    pub(crate) fn wait_copied(
        &self,
        target_db: &mut Client,
        mut report: impl FnMut(i64, i64),
    ) -> Result<()> {
        let started = Instant::now();
        let mut last = -1;
        let mut last_progress = Instant::now();
        loop {
            let row = target_db.query_one(
                "SELECT count(*) FILTER (WHERE r.srsubstate = 'r'), count(*)
                   FROM pg_catalog.pg_subscription_rel AS r
                   JOIN pg_catalog.pg_subscription AS s ON s.oid = r.srsubid
                  WHERE s.subname = $1",
                &[&self.handle],
            )?;
            let (ready, all): (i64, i64) = (row.get(0), row.get(1));
            if ready != last {
                report(ready, self.tables.len() as i64);
                last = ready;
                last_progress = Instant::now();
            }
            if all == self.tables.len() as i64 && ready == all {
                return Ok(());
            }
            self.check_workers(target_db)?;
            let copying: i64 = target_db
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_stat_subscription
                      WHERE subname = $1 AND relid IS NOT NULL",
                    &[&self.handle],
                )?
                .get(0);
            if copying > 0 {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > WORKER_WAIT {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("no worker copied a table for {WORKER_WAIT:?} (the target's max_logical_replication_workers?)"),
                ));
            }
            if started.elapsed() > COPY_LIMIT {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("the first copy took longer than {COPY_LIMIT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// In the pause (no session writes the source any more): wait until the target has
    /// applied everything, then copy the sequences. Returns the rows of each streamed table,
    /// the same on both sides.
    pub(crate) fn catch_up(
        &self,
        source_db: &mut Client,
        target_db: &mut Client,
    ) -> Result<BTreeMap<String, i64>> {
        let marker = marker(&self.handle);
        source_db.batch_execute(&format!(
            "INSERT INTO {marker} VALUES (true) ON CONFLICT DO NOTHING"
        ))?;
        let started = Instant::now();
        loop {
            let n: i64 = target_db
                .query_one(&format!("SELECT count(*) FROM {marker}"), &[])?
                .get(0);
            if n == 1 {
                break;
            }
            self.check_workers(target_db)?;
            if started.elapsed() > CATCH_UP_LIMIT {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("the target did not catch up within {CATCH_UP_LIMIT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        copy_sequences(source_db, target_db)?;
        // Both sides at once: on large tables the counts are most of the pause.
        let streamed = self.tables();
        let (rows, copied) = std::thread::scope(|s| {
            let on_target = s.spawn(|| count_each(target_db, streamed));
            let on_source = count_each(source_db, streamed);
            (on_source, on_target.join())
        });
        let copied = copied.map_err(|_| Error::new(ErrorCode::Internal, "counting rows failed"))?;
        let rows = rows?;
        crate::server::counts::verify_rows(&rows, &copied?)?;
        Ok(rows)
    }

    /// A worker that failed (a table copy or the apply) fails the move: it would retry the
    /// same thing, and the reason is in the target server's log.
    fn check_workers(&self, target_db: &mut Client) -> Result<()> {
        let errors: Option<i64> = target_db
            .query_opt(
                "SELECT apply_error_count + sync_error_count
                   FROM pg_catalog.pg_stat_subscription_stats WHERE subname = $1",
                &[&self.handle],
            )?
            .map(|r| r.get(0));
        if errors.unwrap_or(0) > 0 {
            return Err(Error::new(
                ErrorCode::Internal,
                "the target's replication worker failed (its server log says why)",
            ));
        }
        Ok(())
    }
}

/// `key='value' ...` with libpq's quoting.
fn conninfo(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The source's sequences outside `tenant_custom` (that schema is dumped with its sequences)
/// set on the target: an apply worker copies rows, not sequence positions.
fn copy_sequences(source_db: &mut Client, target_db: &mut Client) -> Result<()> {
    let sequences: Vec<String> = source_db
        .query(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class AS c
               JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
              WHERE c.relkind = 'S' AND n.nspname <> 'tenant_custom'
                AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for seq in sequences {
        let row = source_db.query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])?;
        let (value, called): (i64, bool) = (row.get(0), row.get(1));
        target_db.execute(
            "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
            &[&seq, &value, &called],
        )?;
    }
    Ok(())
}

/// Everything a move's stream made, gone from both servers: the subscription (without
/// reaching the source: its slot is dropped here), the slot, the publication, the markers,
/// the login. Idempotent; a database that is gone already is skipped.
pub(crate) fn remove(source: &Server, target: &Server, db: &str, handle: &str) -> Result<()> {
    // Each side even when the other cannot be reached: a slot left behind holds WAL forever.
    let on_target = remove_subscription(target, db, handle);
    let on_source = remove_publication(source, db, handle);
    on_target.and(on_source)
}

fn remove_subscription(target: &Server, db: &str, handle: &str) -> Result<()> {
    let qh = quote_ident(handle);
    let mut target_admin = connect(&target.admin_conn, None)?;
    if database_exists(&mut target_admin, db)? {
        let mut target_db = connect(&target.admin_conn, Some(db))?;
        let subscribed = target_db
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1",
                &[&handle],
            )?
            .is_some();
        if subscribed {
            // One statement at a time (each commits): the slot is dropped on the source
            // below, so this works whether or not the source can be reached.
            for sql in [
                format!("ALTER SUBSCRIPTION {qh} DISABLE"),
                format!("ALTER SUBSCRIPTION {qh} SET (slot_name = NONE)"),
                format!("DROP SUBSCRIPTION {qh}"),
            ] {
                target_db.batch_execute(&sql)?;
            }
        }
        target_db.batch_execute(&format!("DROP TABLE IF EXISTS {}", marker(handle)))?;
    }
    Ok(())
}

fn remove_publication(source: &Server, db: &str, handle: &str) -> Result<()> {
    let qh = quote_ident(handle);
    let mut source_admin = connect(&source.admin_conn, None)?;
    // The stream's slot, and those its table copies made (no other slot names a workspace's
    // database: only a REPLICATION login can make one).
    let slots: Vec<String> = source_admin
        .query(
            "SELECT slot_name::text FROM pg_catalog.pg_replication_slots
              WHERE database = $1 OR slot_name = $2",
            &[&db, &handle],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for slot in slots {
        drop_slot(&mut source_admin, &slot)?;
    }
    if database_exists(&mut source_admin, db)? {
        let mut source_db = connect(&source.admin_conn, Some(db))?;
        release_database(&mut source_admin, &mut source_db, db, handle)?;
    }
    if role_exists(&mut source_admin, handle)? {
        end_sessions(
            &mut source_admin,
            Sessions::OfLogins(&[handle.to_string()]),
            None,
        )?;
        source_admin.batch_execute(&format!("DROP ROLE {qh}"))?;
    }
    Ok(())
}

/// The publication, the marker and the move login's rights gone from the source database
/// `db` (`source_db` a session in it). One statement per transaction (see `Stream::start`).
fn release_database(
    source_admin: &mut Client,
    source_db: &mut Client,
    db: &str,
    handle: &str,
) -> Result<()> {
    let qh = quote_ident(handle);
    source_db.batch_execute(&format!("DROP PUBLICATION IF EXISTS {qh}"))?;
    source_db.batch_execute(&format!("DROP TABLE IF EXISTS {}", marker(handle)))?;
    if role_exists(source_admin, handle)? {
        source_db.batch_execute(&format!("DROP OWNED BY {qh}"))?;
        source_admin.batch_execute(&format!(
            "REVOKE ALL ON DATABASE {} FROM {qh}",
            quote_ident(db)
        ))?;
    }
    Ok(())
}

/// The replication slot, dropped once its sender has gone (ended here if it lingers).
fn drop_slot(source_admin: &mut Client, slot: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let row = source_admin.query_opt(
            "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )?;
        match row.map(|r| r.get::<_, Option<i32>>(0)) {
            None => return Ok(()),
            Some(None) => {
                match source_admin
                    .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&slot])
                {
                    Ok(_) => return Ok(()),
                    // Became active again in between (55006): look again.
                    Err(e) if e.code().is_some_and(|c| c.code() == "55006") => {}
                    Err(e) if e.code().is_some_and(|c| c.code() == "42704") => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            Some(Some(pid)) => {
                end_sessions(source_admin, Sessions::Pid(pid), None)?;
            }
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("replication slot {slot} stayed in use"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
