//! Extractors: the bearer-token principal and a strict JSON body.

use super::error::ApiError;
use super::AppState;
use crate::tokens::{self, Principal};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The workspace a request acts on, decided by its bearer token and nothing else.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::missing_token());
        };
        let value = value.to_str().map_err(|_| ApiError::invalid_token())?;
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::missing_token());
        }
        let token = token.trim();
        if !tokens::well_formed(token) {
            return Err(ApiError::invalid_token());
        }
        let token = token.to_string();
        let st = state.clone();
        let principal = state
            .blocking(move || st.tokens.verify(&token))
            .await?
            .ok_or_else(ApiError::invalid_token)?;
        let span = tracing::Span::current();
        span.record("workspace", principal.workspace.as_str());
        span.record("token_id", principal.token_id.as_str());
        Ok(Auth(principal))
    }
}

/// A JSON body: 413 above [`BODY_LIMIT`], 400 when it is not JSON, 422 when it is JSON of the
/// wrong shape (unknown or missing fields, wrong types, bad values). An empty body counts as
/// `{}`. The Content-Type is not checked (`curl -d` sends form encoding by default).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request bodies are limited to {BODY_LIMIT} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(too_large());
        }
        let read = axum::body::to_bytes(req.into_body(), BODY_LIMIT);
        let bytes = match tokio::time::timeout(std::time::Duration::from_secs(30), read).await {
            Err(_) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                ))
            }
            // Over the limit (or the client went away, then nobody reads the answer).
            Ok(Err(_)) => return Err(too_large()),
            Ok(Ok(b)) => b,
        };
        let parsed = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_slice(b"{}")
        } else {
            serde_json::from_slice(&bytes)
        };
        match parsed {
            Ok(v) => Ok(JsonBody(v)),
            Err(e) if e.classify() == serde_json::error::Category::Data => Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("invalid request body: {e}"),
            )),
            Err(e) => Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the request body is not valid JSON: {e}"),
            )),
        }
    }
}
