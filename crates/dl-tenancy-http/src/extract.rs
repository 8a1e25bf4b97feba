//! Extractors: the bearer-token principal and a strict JSON body.

use crate::error::ApiError;
use crate::limit::CallSlot;
use crate::AppState;
use axum::body::{Body, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use dl_tenancy_ctl::tokens::{self, Caller, Principal};
use dl_tenancy_ctl::ErrorCode;
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;
/// A body over the limit is still read (and dropped) up to this size before the 413, so that
/// the client, still sending, gets the answer instead of a connection reset. Larger bodies
/// (by Content-Length or as they arrive) are answered at once.
const DRAIN_LIMIT: usize = 1024 * 1024;
/// Time to receive a whole body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

enum BodyError {
    TooLarge,
    Broken,
}

/// The body if it has at most [`BODY_LIMIT`] bytes; reads on (discarding) up to
/// [`DRAIN_LIMIT`] when it is larger.
async fn read_capped(mut body: Body) -> Result<Vec<u8>, BodyError> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(|_| BodyError::Broken)?.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > DRAIN_LIMIT {
            return Err(BodyError::TooLarge);
        }
        if total <= BODY_LIMIT {
            buf.extend_from_slice(&data);
        }
    }
    if total > BODY_LIMIT {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf)
    }
}

/// The workspace a request acts on, decided by its bearer token and nothing else, and its
/// slot among the workspace's calls in flight (held until the handler ends).
#[derive(Debug)]
pub struct Auth(pub Principal, pub CallSlot);

/// Who the request's bearer token is (401 without one, or with one that matches none).
async fn caller(parts: &Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
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
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::conn::ConnHandle>>()
        .map(|c| c.0.peer());
    state.principal(token.to_string(), peer).await
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let principal = match caller(parts, state).await? {
            Caller::Workspace(p) => p,
            Caller::Operator { token_id } => {
                tracing::Span::current().record("token_id", token_id.as_str());
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "an operator token names no workspace: the tenant endpoints take a workspace's token",
                ));
            }
        };
        let span = tracing::Span::current();
        span.record("workspace", principal.workspace.as_str());
        span.record("token_id", principal.token_id.as_str());
        let slot = state.admit(&principal.workspace).await?;
        Ok(Auth(principal, slot))
    }
}

/// An operator's request (`/api/v2/operator/...`): its token's id. A workspace's token gets
/// 403 before anything else is looked at, the same answer whatever the request names.
#[derive(Debug)]
pub struct Operator(pub String);

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match caller(parts, state).await? {
            Caller::Operator { token_id } => {
                tracing::Span::current().record("token_id", token_id.as_str());
                Ok(Operator(token_id))
            }
            Caller::Workspace(p) => {
                let span = tracing::Span::current();
                span.record("workspace", p.workspace.as_str());
                span.record("token_id", p.token_id.as_str());
                Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "this endpoint needs an operator token (`dl-tenancy tokens create --operator`)",
                ))
            }
        }
    }
}

/// A JSON object body: 413 above [`BODY_LIMIT`], 400 when it is not JSON, 422 when it is JSON
/// of the wrong shape (not an object, unknown or missing fields, wrong types, bad values). An
/// empty body counts as `{}`. The Content-Type is not checked (`curl -d` sends form encoding by default).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request bodies are limited to {BODY_LIMIT} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
            return Err(too_large());
        }
        let read = read_capped(req.into_body());
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    "the request body did not arrive in time",
                ))
            }
            Ok(Err(BodyError::TooLarge)) => return Err(too_large()),
            Ok(Err(BodyError::Broken)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidBody,
                    "the request body could not be read",
                ))
            }
            Ok(Ok(b)) => b,
        };
        let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("the request body is not valid JSON: {e}"),
                )
            })?
        };
        let unprocessable = |msg: String| ApiError::new(ErrorCode::InvalidRequest, msg);
        // Only an object (serde would also take a struct from an array).
        if !value.is_object() {
            return Err(unprocessable(
                "invalid request body: expected a JSON object".into(),
            ));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| unprocessable(format!("invalid request body: {e}")))
    }
}
