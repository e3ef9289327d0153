//! The API's answers when something is wrong: a status and
//! `{"error": "...", "reasons": [...]}`, and the extractors (JSON body, query
//! string, path) that turn every malformed, oversized or mistyped request into one
//! of them, never axum's plain-text rejections.

use crate::users::StoreError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub reasons: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            reasons: Vec::new(),
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no such {what}"))
    }

    /// `422` with the reasons a request was refused.
    pub fn invalid(reasons: Vec<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "invalid request".into(),
            reasons,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "reasons": self.reasons });
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found("user"),
            StoreError::Exists => {
                ApiError::new(StatusCode::CONFLICT, "a user with that name exists")
            }
            StoreError::Invalid(reasons) => ApiError::invalid(reasons),
            // The details (a path, an OS error) go to the log, not to the client.
            StoreError::Unavailable(why) => {
                tracing::error!(error = %why, "admin API: users store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "users store unavailable; try again",
                )
            }
        }
    }
}

/// A JSON request body: over the size limit `413`, not JSON or not the expected
/// shape (unknown fields included) `422` with serde's reason.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body too large".to_string()
            } else {
                r.body_text()
            };
            ApiError::new(status, error)
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(vec![format!("body: {e}")]))
    }
}

/// A query string: one that does not parse or has unknown keys is `422`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|r| ApiError::invalid(vec![format!("query: {}", r.body_text())]))
    }
}

/// A path parameter: one that is not valid percent-encoded UTF-8 is `422`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|r| ApiError::invalid(vec![format!("path: {}", r.body_text())]))
    }
}
