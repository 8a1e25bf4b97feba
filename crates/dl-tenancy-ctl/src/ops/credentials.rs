//! A workspace's credentials: its logins on the server (created, given a password, revoked so
//! that they cannot come back), and the operations on them: reveal, rotate, and the end of a
//! rotation's grace period.
//!
//! A login is `LOGIN` only while it holds a live credential (the active one, or the previous
//! one during a rotation's grace). Everything else about it is re-asserted by every
//! `provision`: membership, the group role it acts as, its connection cap and session
//! defaults ([`crate::fences`]); whatever a tenant changed is put back.

use crate::control::records::workspace_limits;
use crate::domain::limits::GraceSeconds;
use crate::domain::names::credential_aad;
use crate::plan::{access, workspace};
use crate::server::apply::apply_on_server;
use crate::server::catalog::{end_sessions, observe, Sessions};
use crate::server::roles::revoke_login;
use crate::server::roles::set_password;

use crate::base::connection::{connect, tls_query, SslMode};
use crate::base::secret::random_password;
use crate::control::lock::with_workspace_lock;
use crate::domain::error::not_provisioned;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::{validate_workspace_id, Kind, Slot, WorkspaceNames};
use crate::domain::types::{Endpoint, Reveal, Rotation};
use crate::ops::Tenancy;
use crate::plan::quote::{libpq_value, percent_encode};
use postgres::Client;
use std::path::Path;

fn format_host(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

impl Tenancy {
    pub(crate) fn ensure_credential(
        &self,
        ctl: &mut Client,
        admin: &mut Client,
        names: &WorkspaceNames,
        kind: Kind,
    ) -> Result<()> {
        let ws = names.workspace.as_str();
        let rows = ctl.query(
            "SELECT slot, active, nonce, ciphertext, coalesce(valid_until > now(), false)
               FROM credentials WHERE workspace_id = $1 AND kind = $2",
            &[&ws, &kind.as_str()],
        )?;
        let active = rows.iter().find(|r| r.get::<_, bool>(1));
        match active {
            Some(r) => {
                let slot = Slot::parse(r.get(0)).unwrap_or(Slot::A);
                let pw =
                    self.key
                        .decrypt_string(r.get(2), r.get(3), &credential_aad(ws, kind, slot))?;
                set_password(admin, &names.login(kind, slot), &pw)?;
                let other = slot.other();
                let in_grace = rows
                    .iter()
                    .any(|r| r.get::<_, &str>(0) == other.as_str() && r.get::<_, bool>(4));
                if !in_grace {
                    revoke_login(admin, &names.login(kind, other))?;
                }
            }
            None => {
                let pw = random_password();
                let (nonce, ct) = self
                    .key
                    .encrypt(pw.as_bytes(), &credential_aad(ws, kind, Slot::A));
                let mut tx = ctl.transaction()?;
                tx.execute(
                    "DELETE FROM credentials WHERE workspace_id = $1 AND kind = $2",
                    &[&ws, &kind.as_str()],
                )?;
                tx.execute(
                    "INSERT INTO credentials (workspace_id, kind, slot, login_name, active, nonce, ciphertext)
                     VALUES ($1, $2, 'a', $3, true, $4, $5)",
                    &[&ws, &kind.as_str(), &names.login(kind, Slot::A), &nonce, &ct],
                )?;
                tx.commit()?;
                set_password(admin, &names.login(kind, Slot::A), &pw)?;
                revoke_login(admin, &names.login(kind, Slot::B))?;
            }
        }
        Ok(())
    }

    pub(crate) fn active_slot(&self, ctl: &mut Client, ws: &str, kind: Kind) -> Result<Slot> {
        let row = ctl.query_opt(
            "SELECT slot FROM credentials WHERE workspace_id = $1 AND kind = $2 AND active",
            &[&ws, &kind.as_str()],
        )?;
        row.and_then(|r| Slot::parse(r.get(0)))
            .ok_or_else(|| not_provisioned(ws))
    }

    /// `connection-uris reveal`: the URI of the active login of `kind`, direct or through the
    /// server's PgBouncer. The same URI until the next rotation.
    pub fn reveal(&self, workspace: &str, kind: Kind, pooled: bool) -> Result<Reveal> {
        let mut ctl = self.control_read()?;
        let (names, server_id) = self.active_workspace(&mut ctl, workspace)?;
        let server = self.load_server(&mut ctl, &server_id)?;
        let row = ctl
            .query_opt(
                "SELECT slot, nonce, ciphertext FROM credentials
                  WHERE workspace_id = $1 AND kind = $2 AND active",
                &[&workspace, &kind.as_str()],
            )?
            .ok_or_else(|| not_provisioned(workspace))?;
        let slot = Slot::parse(row.get(0)).ok_or_else(|| not_provisioned(workspace))?;
        let pw = self.key.decrypt_string(
            row.get(1),
            row.get(2),
            &credential_aad(workspace, kind, slot),
        )?;
        // A pooled URI names the pooler that serves the workspace (after a move, the one of
        // the server it came from), and that pooler's TLS.
        let pooler_server = if pooled {
            Some(self.pooler_server(&mut ctl, workspace, &server)?)
        } else {
            None
        };
        let tls_of = pooler_server.as_ref().unwrap_or(&server);
        let ep = if let Some(p) = &pooler_server {
            p.pooler.clone().ok_or_else(|| {
                Error::new(
                    ErrorCode::PoolerNotConfigured,
                    format!("server {} has no pooler registered", server.id),
                )
            })?
        } else {
            Endpoint {
                host: server.host.clone(),
                port: server.port,
            }
        };
        let login = names.login(kind, slot);
        // TLS always: verified against the server's CA when it is known.
        let (sslmode, ca_certificate) = match &tls_of.ca_file {
            Some(file) => (
                SslMode::VerifyFull,
                Some(crate::base::certs::read_ca_pem(file).map_err(|e| {
                    Error::new(
                        ErrorCode::Internal,
                        format!("server {}: {}", tls_of.id, e.message),
                    )
                })?),
            ),
            None => (SslMode::Require, None),
        };
        let db = names.database();
        let tls = tls_query(sslmode, tls_of.ca_file.as_deref().map(Path::new));
        let uri = format!(
            "postgresql://{}:{}@{}:{}/{}?{tls}",
            percent_encode(&login),
            percent_encode(&pw),
            format_host(&ep.host),
            ep.port,
            percent_encode(&db),
        );
        let jdbc_url = format!(
            "jdbc:postgresql://{}:{}/{}?user={}&password={}&{tls}",
            format_host(&ep.host),
            ep.port,
            percent_encode(&db),
            percent_encode(&login),
            percent_encode(&pw),
        );
        let mut keywords: Vec<String> = [
            ("host", ep.host.as_str()),
            ("port", &ep.port.to_string()),
            ("user", &login),
            ("password", &pw),
            ("dbname", &db),
            ("sslmode", sslmode.as_str()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", libpq_value(v)))
        .collect();
        if let Some(ca) = &tls_of.ca_file {
            keywords.push(format!("sslrootcert={}", libpq_value(ca)));
        }
        Ok(Reveal {
            workspace: workspace.into(),
            kind,
            pooled,
            uri,
            login: login.clone(),
            database: db,
            sslmode: sslmode.as_str().into(),
            ca_certificate,
            host: ep.host.clone(),
            port: ep.port,
            user: login,
            password: pw,
            sslrootcert: tls_of.ca_file.clone(),
            keywords: keywords.join(" "),
            jdbc_url,
        })
    }

    /// `connection-uris rotate`: a new password on the standby login of `kind`, which becomes
    /// the active one. The previous login keeps working for `grace_seconds` (VALID UNTIL), or
    /// with 0 loses its password at once (new logins fail, direct and pooled).
    pub fn rotate(&self, workspace: &str, kind: Kind, grace_seconds: u64) -> Result<Rotation> {
        validate_workspace_id(workspace)?;
        let grace_seconds = GraceSeconds::try_from(grace_seconds)?.get();
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            self.rotate_locked(ctl, workspace, kind, grace_seconds)
        })
    }

    /// End the grace periods that are over: each previous login whose `VALID UNTIL` has passed
    /// is revoked ([`revoke_login`]: NOLOGIN, no password, its sessions ended). `serve` runs
    /// this every [`GRACE_SWEEP_INTERVAL`], `rotate` for its workspace. Returns the logins it
    /// revoked.
    pub fn expire_grace_periods(&self) -> Result<Vec<String>> {
        let mut ctl = self.control()?;
        let due: Vec<String> = ctl
            .query(
                "SELECT DISTINCT workspace_id FROM credentials
                  WHERE NOT active AND valid_until <= now() ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut revoked = vec![];
        for ws in due {
            let res = with_workspace_lock(&mut ctl, &ws, |ctl| self.expire_grace_locked(ctl, &ws));
            revoked.extend(res?);
        }
        Ok(revoked)
    }

    fn expire_grace_locked(&self, ctl: &mut Client, ws: &str) -> Result<Vec<String>> {
        let rows = ctl.query(
            "SELECT c.login_name, w.server_id FROM credentials AS c JOIN workspaces AS w ON w.id = c.workspace_id
              WHERE c.workspace_id = $1 AND NOT c.active AND c.valid_until <= now()",
            &[&ws],
        )?;
        let mut revoked = vec![];
        for row in rows {
            let login: String = row.get(0);
            let server = self.load_server(ctl, row.get(1))?;
            revoke_login(&mut connect(&server.admin_conn, None)?, &login)?;
            ctl.execute(
                "UPDATE credentials SET valid_until = NULL
                  WHERE workspace_id = $1 AND login_name = $2 AND NOT active",
                &[&ws, &login],
            )?;
            revoked.push(login);
        }
        Ok(revoked)
    }

    fn rotate_locked(
        &self,
        ctl: &mut Client,
        ws: &str,
        kind: Kind,
        grace: u64,
    ) -> Result<Rotation> {
        self.expire_grace_locked(ctl, ws)?;
        let (names, server_id) = self.active_workspace(ctl, ws)?;
        let names = &names;
        let server = self.load_server(ctl, &server_id)?;
        let current = self.active_slot(ctl, ws, kind)?;
        let mut admin = connect(&server.admin_conn, None)?;
        // The server's clock decides when the grace ends.
        let until: Option<String> = if grace > 0 {
            Some(
                admin
                    .query_one(
                        "SELECT (pg_catalog.now() + pg_catalog.make_interval(secs => $1::float8))::text",
                        &[&(grace as f64)],
                    )?
                    .get(0),
            )
        } else {
            None
        };
        let plan = access::rotate(names, kind, current, until.as_deref());
        // The new login as provision makes it (its fences re-asserted), then its password.
        let limits = workspace_limits(ctl, ws)?;
        let seen = observe("", &mut admin, names, false)?;
        apply_on_server(
            &mut admin,
            &workspace::login(names, kind, plan.new_slot, &limits, &seen)?,
        )?;
        let pw = random_password();
        let (nonce, ct) = self
            .key
            .encrypt(pw.as_bytes(), &credential_aad(ws, kind, plan.new_slot));
        set_password(&mut admin, &plan.new_login, &pw)?;
        let mut tx = ctl.transaction()?;
        tx.execute(
            "UPDATE credentials SET active = false, valid_until = $3::text::timestamptz, rotated_at = now()
              WHERE workspace_id = $1 AND kind = $2",
            &[&ws, &kind.as_str(), &until],
        )?;
        tx.execute(
            "INSERT INTO credentials (workspace_id, kind, slot, login_name, active, nonce, ciphertext)
             VALUES ($1, $2, $3, $4, true, $5, $6)
             ON CONFLICT (workspace_id, kind, slot) DO UPDATE
                SET active = true, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
                    valid_until = NULL, rotated_at = now()",
            &[&ws, &kind.as_str(), &plan.new_slot.as_str(), &plan.new_login, &nonce, &ct],
        )?;
        tx.commit()?;
        apply_on_server(&mut admin, &plan.retire_old)?;
        if plan.end_old_sessions {
            end_sessions(
                &mut admin,
                Sessions::OfLogins(std::slice::from_ref(&plan.old_login)),
                None,
            )?;
        }
        Ok(Rotation {
            workspace: ws.into(),
            kind,
            login: plan.new_login,
            previous_login: plan.old_login,
            previous_valid_until: until,
            grace_seconds: grace,
        })
    }
}
