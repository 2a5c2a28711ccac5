//! Signed calls to the API and verified answers.
//!
//! Decisions (the protocol pages are <https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay2_0.shtml>
//! for errors and `wechatpay4_1.shtml` for answer signatures):
//! - Every 2xx answer must carry a valid platform signature by the configured serial, signed
//!   within [`ANSWER_TOLERANCE_SECONDS`]: WeChat Pay says an unsigned success "should be
//!   considered forged or tampered". One that fails is [`ChannelError::Unavailable`], not
//!   `Rejected`: it may be an attack or a broken proxy, we must not act on its content, and the
//!   request may or may not have been carried out, exactly as when the answer is lost; callers
//!   retry or query, which is safe because WeChat Pay de-duplicates on `out_trade_no` and
//!   `out_refund_no`. It is logged at `warn` (never with the signature).
//! - 4xx answers with `{"code","message"}` are [`ChannelError::Rejected`]. Error answers are not
//!   required to be signed, but one that carries signature headers that do not verify is
//!   `Unavailable` as above.
//! - 429 (`FREQUENCY_LIMITED`), 5xx, timeouts and connection failures are `Unavailable`.

use std::time::Duration;

use chrono::Utc;

use super::account::WechatPayAccount;
use super::sign::{self, Authorization, SignatureHeaders};
use super::types::ErrorBody;
use crate::ChannelError;

/// Connect timeout, milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Whole-request timeout, milliseconds.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How far an answer's `Wechatpay-Timestamp` may be from our clock, seconds.
pub const ANSWER_TOLERANCE_SECONDS: i64 = 300;
/// How much of an unparseable error body goes into an error message, characters.
pub const ERROR_BODY_CHARS_MAX: usize = 256;
/// WeChat Pay asks API v3 callers to send a `User-Agent`.
pub const USER_AGENT: &str = concat!("payledger-wechatpay/", env!("CARGO_PKG_VERSION"));

/// The HTTP client used for API calls, with our timeouts.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .user_agent(USER_AGENT)
        .build()
        .unwrap_or_default()
}

/// The `Authorization` header value for a request, signed now with a fresh nonce.
///
/// # Errors
/// [`ChannelError::Unavailable`] if the private key cannot sign.
pub(crate) fn authorization(
    account: &WechatPayAccount,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<String, ChannelError> {
    let timestamp = Utc::now().timestamp();
    let nonce = sign::new_nonce();
    let message = sign::request_message(method, path_and_query, timestamp, &nonce, body);
    let signature = sign::sign(&account.merchant_private_key, &message)
        .map_err(|e| ChannelError::Unavailable(format!("cannot sign the request: {e}")))?;
    Ok(Authorization {
        mchid: account.mch_id.clone(),
        nonce_str: nonce,
        signature,
        timestamp: timestamp.to_string(),
        serial_no: account.merchant_serial_no.clone(),
    }
    .header_value())
}

/// Sends a signed request and returns the verified body of a 2xx answer (empty for 204).
///
/// `path_and_query` starts with `/v3/`; `body` is the exact JSON to send (`None` for GET).
///
/// # Errors
/// See the module docs.
pub(crate) async fn call(
    http: &reqwest::Client,
    account: &WechatPayAccount,
    method: http::Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, ChannelError> {
    let body_bytes = body.unwrap_or_default();
    let auth = authorization(account, method.as_str(), path_and_query, &body_bytes)?;
    let mut request = http
        .request(method.clone(), format!("{}{path_and_query}", account.base_url))
        .header(http::header::AUTHORIZATION, auth)
        .header(http::header::ACCEPT, "application/json");
    if method != http::Method::GET {
        request = request
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body_bytes);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ChannelError::Unavailable(format!("WeChat Pay not reached: {e}")))?;
    let status = response.status();
    let headers = response.headers().clone();
    let answer = response
        .bytes()
        .await
        .map_err(|e| ChannelError::Unavailable(format!("WeChat Pay answer not read: {e}")))?
        .to_vec();

    let signed = SignatureHeaders::from_headers(&headers);
    if status.is_success() || signed.is_some() {
        if let Err(why) = check_answer(account, signed.as_ref(), &answer) {
            tracing::warn!(
                account = %account.account_id,
                path = %path_and_query,
                status = status.as_u16(),
                why,
                "WeChat Pay answer failed verification; treated as not received"
            );
            return Err(ChannelError::Unavailable(format!("answer not verified: {why}")));
        }
    }
    if status.is_success() {
        return Ok(answer);
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&answer) {
        Ok(e) => (e.code, e.message),
        Err(_) => (
            format!("HTTP_{}", status.as_u16()),
            String::from_utf8_lossy(&answer)
                .chars()
                .take(ERROR_BODY_CHARS_MAX)
                .collect(),
        ),
    };
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        Err(ChannelError::Unavailable(format!(
            "WeChat Pay answered {}: {code}: {message}",
            status.as_u16()
        )))
    } else {
        Err(ChannelError::Rejected { code, message })
    }
}

/// Why an answer's signature is not acceptable, if it is not.
fn check_answer(
    account: &WechatPayAccount,
    signed: Option<&SignatureHeaders<'_>>,
    body: &[u8],
) -> Result<(), &'static str> {
    let signed = signed.ok_or("no signature headers")?;
    if signed.serial != account.platform_serial_no {
        return Err("unknown Wechatpay-Serial");
    }
    if !signed.verify(&account.platform_public_key, body) {
        return Err("signature does not verify");
    }
    let timestamp = signed.timestamp_seconds().ok_or("bad Wechatpay-Timestamp")?;
    if Utc::now().timestamp().abs_diff(timestamp) > ANSWER_TOLERANCE_SECONDS.unsigned_abs() {
        return Err("stale Wechatpay-Timestamp");
    }
    Ok(())
}
