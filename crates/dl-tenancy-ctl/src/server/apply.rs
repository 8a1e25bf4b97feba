//! Running a decision's statements ([`Step`]s from `plan`) on one server.

use crate::base::connection::connect;
use crate::domain::error::{Error, Result};
use crate::plan::{Step, Target};
use postgres::Client;

/// Run `steps` in order: server statements on `admin`, database statements in `database`
/// (one session, opened when first needed), checkpoints through `checkpoint`. A failing
/// statement that holds a secret is reported without its text.
pub(crate) fn apply(
    admin_conn: &str,
    admin: &mut Client,
    database: &str,
    steps: &[Step],
    checkpoint: &mut dyn FnMut(&'static str),
) -> Result<()> {
    let mut db: Option<Client> = None;
    for step in steps {
        let (target, sql, secret) = match step {
            Step::Checkpoint(name) => {
                checkpoint(name);
                continue;
            }
            Step::Sql {
                target,
                sql,
                secret,
            } => (target, sql, secret),
        };
        let res = match target {
            Target::Server => admin.batch_execute(sql),
            Target::Database => {
                if db.is_none() {
                    db = Some(connect(admin_conn, Some(database))?);
                }
                db.as_mut().expect("opened").batch_execute(sql)
            }
        };
        res.map_err(|e| {
            let e = Error::from(e);
            if *secret {
                Error::new(e.code, "setting a password failed")
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// [`apply`] for steps that all run on the server's maintenance database.
pub(crate) fn apply_on_server(admin: &mut Client, steps: &[Step]) -> Result<()> {
    debug_assert!(steps.iter().all(|s| matches!(
        s,
        Step::Sql {
            target: Target::Server,
            ..
        }
    )));
    apply("", admin, "", steps, &mut |_| {})
}
