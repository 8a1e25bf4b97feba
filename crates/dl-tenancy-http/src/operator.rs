//! The operator's endpoints (`/api/v2/operator/...`, an operator token only): a point-in-time
//! restore of a workspace as a job, and the job's state.
//!
//! `POST /api/v2/operator/workspaces/{workspace}/restore` checks at once what the restore
//! would refuse before copying anything ([`Tenancy::check_restore_at`]: the ids, the
//! workspace, its server's repository, `at` inside the window), then answers 202 with the job
//! and its `Location`; the restore itself ([`Tenancy::restore_at`], the CLI's very call) runs
//! on the blocking pool ([`crate::jobs`]). `GET /api/v2/operator/jobs/{job}` polls it.

use crate::error::ApiError;
use crate::extract::{JsonBody, Operator};
use crate::{Api, AppState};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dl_tenancy_ctl::{ErrorCode, RestoreInto};
use serde::Deserialize;
use std::sync::Arc;

/// `{"at": TIME, "into": W2}` or `{"at": TIME, "in_place": true, "confirm": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreBody {
    at: String,
    #[serde(default)]
    into: Option<String>,
    #[serde(default)]
    in_place: bool,
    #[serde(default)]
    confirm: bool,
}

impl RestoreBody {
    fn target(&self, workspace: &str) -> Result<RestoreInto, ApiError> {
        match (&self.into, self.in_place, self.confirm) {
            (Some(_), true, _) => Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "give either into (a new workspace) or in_place, not both",
            )),
            (Some(w2), false, _) => Ok(RestoreInto::Workspace(w2.clone())),
            (None, true, true) => Ok(RestoreInto::InPlace),
            (None, true, false) => Err(ApiError::new(
                ErrorCode::ConfirmationRequired,
                format!("in_place replaces the data of workspace {workspace} (its sessions end); add \"confirm\": true"),
            )),
            (None, false, _) => Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "give into (a new workspace) or in_place with confirm",
            )),
        }
    }
}

pub(crate) async fn restore(
    State(st): State<Arc<AppState>>,
    Operator(token_id): Operator,
    workspace: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<RestoreBody>,
) -> Api<Response> {
    let workspace = segment(workspace)?;
    let into = body.target(&workspace)?;
    let (ws, at, target) = (workspace.clone(), body.at.clone(), into.clone());
    st.call(move |t| t.check_restore_at(&ws, &at, &target))
        .await?;
    let tenancy = st.tenancy.clone();
    let (ws, at) = (workspace.clone(), body.at);
    let job = st.jobs.start("restore", &workspace, move || {
        let report = tenancy.restore_at(&ws, &at, &into)?;
        serde_json::to_value(report)
            .map_err(|e| dl_tenancy_ctl::Error::new(ErrorCode::Internal, format!("report: {e}")))
    })?;
    tracing::info!(job = %job.job, workspace = %workspace, token_id = %token_id, "restore job started");
    let location = format!("/api/v2/operator/jobs/{}", job.job);
    let mut res = (StatusCode::ACCEPTED, Json(job)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

pub(crate) async fn job(
    State(st): State<Arc<AppState>>,
    Operator(_): Operator,
    job: Result<Path<String>, PathRejection>,
) -> Api<Response> {
    let job = segment(job)?;
    let view = crate::jobs::well_formed(&job)
        .then(|| st.jobs.get(&job))
        .flatten()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no such job (jobs are kept {} minutes after they end, in the serving process)",
                    crate::jobs::JOB_KEEP.as_secs() / 60
                ),
            )
        })?;
    Ok(Json(view).into_response())
}

/// A path segment, or a JSON 404 when it cannot be read (bad percent-encoding).
fn segment(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|_| ApiError::not_found())
}
