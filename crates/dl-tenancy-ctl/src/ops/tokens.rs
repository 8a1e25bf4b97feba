//! Workspace API tokens for the HTTP API (`dl-tenancy tokens create|revoke|list`).
//!
//! A token is 32 random bytes shown once as `dlt_<base64url, no padding>` (47 characters).
//! Only its SHA-256 is stored, in the table `api_tokens` of the control database
//! `dl_control` (created idempotently here: the table is this module's own). A token names
//! exactly one workspace, which need not be provisioned yet (the quick start provisions
//! through the API), or none: an operator token (`tokens create --operator`) is for the
//! `/api/v2/operator/` endpoints only, and a workspace token never reaches those.
//! Verification looks the hash up (no comparison of secrets in Rust).

use crate::base::secret::random_bytes;
use crate::domain::error::{invalid, Result};
use crate::domain::names::validate_workspace_id;
use crate::ops::Tenancy;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Prefix of every token (lets secret scanners recognise them).
pub const TOKEN_PREFIX: &str = "dlt_";
/// Prefix of token ids (not secret: for logs and `tokens revoke`).
pub const TOKEN_ID_PREFIX: &str = "tok_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Length of the base64url text of [`TOKEN_BYTES`] bytes.
const TOKEN_B64_LEN: usize = 43;

/// `tokens create`: the token itself, shown only here.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub token_id: String,
    /// `None` for an operator token.
    pub workspace: Option<String>,
    pub operator: bool,
    pub created_at: String,
}

/// One token without its secret (`tokens list`, `tokens revoke`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub token_id: String,
    pub workspace: Option<String>,
    pub operator: bool,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// `tokens list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// Who a verified workspace token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub workspace: String,
}

/// Who a verified token is: a workspace's, or the operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Workspace(Principal),
    Operator { token_id: String },
}

fn sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A presented token has the right shape (prefix, length, alphabet): checked before any
/// database round trip.
pub fn well_formed(token: &str) -> bool {
    match token.strip_prefix(TOKEN_PREFIX) {
        Some(rest) => {
            rest.len() == TOKEN_B64_LEN
                && rest
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        }
        None => false,
    }
}

fn validate_token_id(id: &str) -> Result<()> {
    let ok = id.strip_prefix(TOKEN_ID_PREFIX).is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "token id {} does not match ^tok_[0-9a-f]{{16}}$",
            serde_json::Value::String(id.chars().take(40).collect())
        )))
    }
}

fn info(r: &postgres::Row) -> TokenInfo {
    let workspace: Option<String> = r.get(1);
    TokenInfo {
        token_id: r.get(0),
        operator: workspace.is_none(),
        workspace,
        created_at: r.get(2),
        revoked_at: r.get(3),
    }
}

/// Issue a token for `workspace` (provisioned or not).
pub fn create(tenancy: &Tenancy, workspace: &str) -> Result<IssuedToken> {
    validate_workspace_id(workspace)?;
    issue(tenancy, Some(workspace))
}

/// Issue an operator token (`tokens create --operator`): the `/api/v2/operator/` endpoints,
/// every workspace; no tenant endpoint.
pub fn create_operator(tenancy: &Tenancy) -> Result<IssuedToken> {
    issue(tenancy, None)
}

fn issue(tenancy: &Tenancy, workspace: Option<&str>) -> Result<IssuedToken> {
    let mut ctl = tenancy.control()?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_BYTES>())
    );
    let id_bytes = random_bytes::<8>();
    let token_id = format!(
        "{TOKEN_ID_PREFIX}{}",
        id_bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let row = ctl.query_one(
        "INSERT INTO api_tokens (id, workspace_id, token_sha256, operator)
         VALUES ($1, $2, $3, $2::text IS NULL)
         RETURNING created_at::text",
        &[&token_id, &workspace, &sha256(&token)],
    )?;
    Ok(IssuedToken {
        token,
        token_id,
        workspace: workspace.map(str::to_string),
        operator: workspace.is_none(),
        created_at: row.get(0),
    })
}

/// Revoke a token by id (idempotent: revoking twice keeps the first time). Requests with it
/// are refused from the next request on.
pub fn revoke(tenancy: &Tenancy, token_id: &str) -> Result<TokenInfo> {
    validate_token_id(token_id)?;
    let mut ctl = tenancy.control()?;
    let row = ctl
        .query_opt(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
             RETURNING id, workspace_id, created_at::text, revoked_at::text",
            &[&token_id],
        )?
        .ok_or_else(|| invalid(format!("no token with id {token_id}")))?;
    Ok(info(&row))
}

/// Tokens (without secrets), of one workspace or all, oldest first.
pub fn list(tenancy: &Tenancy, workspace: Option<&str>) -> Result<TokenList> {
    if let Some(w) = workspace {
        validate_workspace_id(w)?;
    }
    let mut ctl = tenancy.control()?;
    let rows = ctl.query(
        "SELECT id, workspace_id, created_at::text, revoked_at::text FROM api_tokens
          WHERE $1::text IS NULL OR workspace_id = $1 ORDER BY created_at, id",
        &[&workspace],
    )?;
    Ok(TokenList {
        tokens: rows.iter().map(info).collect(),
    })
}

/// Verifies presented tokens for the server, on its handle's kept control sessions
/// ([`Tenancy::with_kept_sessions`]).
pub struct TokenStore {
    tenancy: Tenancy,
}

impl TokenStore {
    /// A store on `tenancy`'s control database; creates the table when missing.
    pub fn open(tenancy: Tenancy) -> Result<TokenStore> {
        drop(tenancy.control()?);
        Ok(TokenStore { tenancy })
    }

    /// The caller of a live token; `None` for a malformed, unknown or revoked one.
    /// Blocking (one indexed lookup by hash).
    pub fn verify(&self, presented: &str) -> Result<Option<Caller>> {
        if !well_formed(presented) {
            return Ok(None);
        }
        let hash = sha256(presented);
        let row = self.tenancy.control_read()?.query_opt(
            "SELECT id, workspace_id FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
            &[&hash],
        )?;
        Ok(row.map(|r| match r.get::<_, Option<String>>(1) {
            Some(workspace) => Caller::Workspace(Principal {
                token_id: r.get(0),
                workspace,
            }),
            None => Caller::Operator { token_id: r.get(0) },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let t = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(t.len(), 47);
        assert!(well_formed(&t));
        assert!(!well_formed(&t[..46]));
        assert!(!well_formed(&t.replace("dlt_", "dlx_")));
        assert!(!well_formed(&format!("{}=", &t[..46])));
        assert!(validate_token_id("tok_0123456789abcdef").is_ok());
        assert!(validate_token_id("tok_0123456789ABCDEF").is_err());
        assert!(validate_token_id("tok_'").is_err());
    }
}
