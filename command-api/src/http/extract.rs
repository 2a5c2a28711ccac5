//! Request extractors: JSON bodies with field-level errors, and the merchant's API key.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use payledger_store::merchants::{self, Merchant};
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::http::error::ApiError;

/// A JSON body: 415 without `Content-Type: application/json`, 413 over the body limit, 400 for
/// malformed JSON, 422 naming the field for JSON of the wrong shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&body).map(JsonBody)
    }
}

/// Maps a failure to read the body: over the limit is 413, anything else 400.
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::Malformed(rejection.body_text())
    }
}

/// Deserialises `body`, naming the offending field on a shape error.
///
/// # Errors
/// [`ApiError::Malformed`] for invalid JSON, [`ApiError::Validation`] for the wrong shape.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::Malformed(format!("body is not valid JSON: {inner}"))
        } else {
            let field = if path == "." { "body".to_string() } else { path };
            ApiError::field(&field, inner.to_string())
        }
    })?;
    de.end()
        .map_err(|e| ApiError::Malformed(format!("trailing data after the JSON body: {e}")))?;
    Ok(value)
}

/// The merchant authenticated by `Authorization: Bearer <api_key>`; 401 otherwise.
pub struct AuthMerchant(pub Merchant);

impl FromRequestParts<AppState> for AuthMerchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        merchants::by_api_key(state.db.pool(), key)
            .await?
            .map(AuthMerchant)
            .ok_or(ApiError::Unauthorized)
    }
}
