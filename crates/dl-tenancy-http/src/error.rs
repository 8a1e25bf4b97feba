//! The HTTP error type: `{"error":{"code":"...","message":"..."}}` with a status and, where
//! it applies, `WWW-Authenticate` or `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dl_tenancy_ctl::ErrorCode;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` value (401).
    pub www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An answer with `code`'s status (the one list of codes, `crate::ErrorCode`).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// 401 for a request without a bearer token.
    pub fn missing_token() -> Self {
        ApiError {
            www_authenticate: Some("Bearer realm=\"dl-tenancy\""),
            ..ApiError::new(
                ErrorCode::Unauthorized,
                "an `Authorization: Bearer <token>` header is required",
            )
        }
    }

    /// 401 for a malformed, unknown or revoked token (the same answer for all three).
    pub fn invalid_token() -> Self {
        ApiError {
            www_authenticate: Some("Bearer realm=\"dl-tenancy\", error=\"invalid_token\""),
            ..ApiError::new(
                ErrorCode::Unauthorized,
                "the bearer token is invalid or revoked",
            )
        }
    }

    pub fn not_found() -> Self {
        ApiError::new(ErrorCode::NotFound, "no such endpoint")
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this endpoint does not support this method (see the Allow header)",
        )
    }

    /// Past the workspace's calls per minute (every endpoint).
    pub fn too_many_calls(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(
                ErrorCode::RateLimited,
                "too many requests for this workspace; retry later",
            )
        }
    }

    /// The workspace has as many calls waiting as it may.
    pub fn calls_in_flight() -> Self {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::RateLimited,
                "too many requests of this workspace are running or waiting; retry when one is done",
            )
        }
    }

    /// The client's address looked up too many tokens that matched none.
    pub fn too_many_failed_lookups(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(
                ErrorCode::RateLimited,
                "too many requests with unknown tokens from this address; retry later",
            )
        }
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(
                ErrorCode::RateLimited,
                "too many reveal/rotate requests for this token; retry later",
            )
        }
    }

    pub fn timeout() -> Self {
        ApiError::new(
            ErrorCode::Timeout,
            "the operation did not finish in time; retry later",
        )
    }

    /// 500 with a generic message; the cause goes to the log only.
    pub fn internal(cause: &str) -> Self {
        tracing::error!(cause, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            "internal error; the server log has the details",
        )
    }

    /// A library error: its code and status. Messages of 4xx errors are the library's (they
    /// name only the caller's own workspace and never hold a secret); 5xx messages are generic
    /// and the library's message goes to the log.
    pub fn from_lib(e: dl_tenancy_ctl::Error) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = e.code;
        if status.is_server_error() {
            tracing::error!(code = code.as_str(), cause = %e.message, "operation failed");
            let message = if status == StatusCode::SERVICE_UNAVAILABLE {
                "a database server is unavailable; retry later"
            } else {
                "internal error; the server log has the details"
            };
            return ApiError {
                status,
                code,
                message: message.into(),
                retry_after: None,
                www_authenticate: None,
            };
        }
        ApiError {
            status,
            code,
            message: e.message,
            retry_after: None,
            www_authenticate: None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        let h = res.headers_mut();
        if let Some(v) = self.www_authenticate {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dl_tenancy_ctl::{Error, ErrorCode};

    #[test]
    fn library_errors_keep_codes_and_hide_5xx_causes() {
        let e = ApiError::from_lib(Error::new(
            ErrorCode::NotProvisioned,
            "workspace acme is not provisioned; run provision",
        ));
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (404, "not_provisioned")
        );
        assert!(e.message.contains("acme"));
        for (code, status) in [
            (ErrorCode::DatabaseError, 500),
            (ErrorCode::SecretKey, 500),
            (ErrorCode::ServerUnreachable, 503),
        ] {
            let e = ApiError::from_lib(Error::new(
                code,
                "cannot connect to /srv/run:5432/dl_control as admin password=hunter2",
            ));
            assert_eq!(e.status.as_u16(), status);
            assert_eq!(e.code, code);
            assert!(!e.message.contains("hunter2") && !e.message.contains("/srv/run"));
        }
        let body = ApiError::rate_limited(0).body();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(ApiError::rate_limited(0).retry_after, Some(1));
    }
}
