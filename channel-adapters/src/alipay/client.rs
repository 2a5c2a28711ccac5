//! Calling the Alipay gateway: public parameters, RSA2 request signature, and verified
//! responses.
//!
//! Source: <https://opendocs.alipay.com/common/02kf5q> (签名),
//! <https://opendocs.alipay.com/common/02mse7> (验签), and each API page's 公共请求参数: `app_id`,
//! `method`, `format=JSON`, `charset=utf-8`, `sign_type=RSA2`, `timestamp` (`yyyy-MM-dd HH:mm:ss`,
//! Beijing time), `version=1.0`, `notify_url`, `biz_content` (JSON), `sign`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::account::AlipayAccount;
use super::sign::{request_sign_content, response_node, rsa2_sign, rsa2_verify, SIGN_TYPE};
use super::types::{
    format_beijing, GatewayError, GatewayStatus, CODE_INSUFFICIENT_PERMISSION, CODE_INVALID_PARAMETER,
    CODE_MISSING_PARAMETER, CODE_PERMISSION_DENIED, CODE_SUCCESS, CODE_UNAVAILABLE,
};
use crate::ChannelError;

/// Connecting to the gateway gives up after this long.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A whole gateway call (connect, send, read) gives up after this long.
pub const REQUEST_TIMEOUT_MS: u64 = 15_000;
/// The largest response body we read, in bytes.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// Gateway codes Alipay's gateway answers before the business layer, which it may leave unsigned
/// (it cannot always identify the app): trusted unsigned only to say "not done". Anything else
/// unsigned (a business answer, a success) is refused.
const UNSIGNED_CODES_ACCEPTED: [&str; 5] = [
    CODE_UNAVAILABLE,
    CODE_INSUFFICIENT_PERMISSION,
    CODE_MISSING_PARAMETER,
    CODE_INVALID_PARAMETER,
    CODE_PERMISSION_DENIED,
];

/// The answer of one call, once authenticated.
pub(crate) type CallResult<T> = Result<Result<T, GatewayError>, ChannelError>;

/// An HTTP client for one account's gateway.
pub(crate) struct GatewayClient {
    pub(crate) account: AlipayAccount,
    http: reqwest::Client,
}

impl GatewayClient {
    pub(crate) fn new(account: AlipayAccount) -> Result<Self, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .build()
            .map_err(|e| ChannelError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self { account, http })
    }

    /// The public parameters, `biz_content` and `extra` (e.g. `return_url`), signed.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] if the private key cannot sign (*ring* failed).
    pub(crate) fn signed_params(
        &self,
        method: &str,
        biz_content: &str,
        extra: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, String>, ChannelError> {
        let mut params: BTreeMap<String, String> = [
            ("app_id", self.account.app_id.as_str()),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", SIGN_TYPE),
            ("version", "1.0"),
            ("notify_url", self.account.notify_url.as_str()),
            ("biz_content", biz_content),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        params.insert("timestamp".into(), format_beijing(now));
        let sign = rsa2_sign(&self.account.app_private_key, &request_sign_content(&params))
            .map_err(|e| ChannelError::Unavailable(format!("cannot sign the request: {e}")))?;
        params.insert("sign".into(), sign);
        Ok(params)
    }

    /// A signed GET URL to the gateway, for the methods the payer's browser opens (page.pay,
    /// wap.pay: 「不是服务端调用」, the gateway renders the cashier).
    ///
    /// # Errors
    /// [`ChannelError::Rejected`] when the configured gateway URL is not a URL,
    /// [`ChannelError::Unavailable`] when the request cannot be signed.
    pub(crate) fn pay_url(
        &self,
        method: &str,
        biz_content: &str,
        extra: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<String, ChannelError> {
        let mut url = url::Url::parse(&self.account.gateway_url).map_err(|e| ChannelError::Rejected {
            code: "GATEWAY_URL_INVALID".into(),
            message: e.to_string(),
        })?;
        url.query_pairs_mut()
            .extend_pairs(self.signed_params(method, biz_content, extra, now)?);
        Ok(url.to_string())
    }

    /// Calls `method` and returns its verified success node parsed as `T`, or the gateway's
    /// error.
    ///
    /// Public parameters go in the query string and `biz_content` in the form body, as Alipay's
    /// SDKs send them.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`]: the request cannot be signed, transport error, timeout, non-200 status, oversized or
    /// unparsable body, missing or bad response signature. Outer `Ok(Err(_))`: Alipay answered
    /// with a `code` other than `10000`.
    pub(crate) async fn call<T: DeserializeOwned>(&self, method: &str, biz_content: &str) -> CallResult<T> {
        let mut params = self.signed_params(method, biz_content, &[], Utc::now())?;
        let biz = params.remove("biz_content").unwrap_or_default();
        let mut url = url::Url::parse(&self.account.gateway_url)
            .map_err(|e| ChannelError::Unavailable(format!("gateway URL: {e}")))?;
        url.query_pairs_mut().extend_pairs(params);
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("biz_content", &biz)
            .finish();

        let mut response = self
            .http
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| ChannelError::Unavailable(format!("{method}: {e}")))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(ChannelError::Unavailable(format!("{method}: HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ChannelError::Unavailable(format!("{method}: {e}")))?
        {
            if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(ChannelError::Unavailable(format!(
                    "{method}: response exceeds {RESPONSE_BYTES_MAX} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8(body).map_err(|_| ChannelError::Unavailable(format!("{method}: not UTF-8")))?;
        self.verify_response(method, &body)
    }

    /// Authenticates a response body (signature over the raw node text) and splits success from
    /// gateway errors.
    ///
    /// # Errors
    /// As [`GatewayClient::call`].
    pub(crate) fn verify_response<T: DeserializeOwned>(&self, method: &str, body: &str) -> CallResult<T> {
        let unavailable = |what: &str| ChannelError::Unavailable(format!("{method}: {what}"));
        let node = response_node(body, method).map_err(|e| unavailable(&e.to_string()))?;
        let status: GatewayStatus =
            serde_json::from_str(node.text).map_err(|e| unavailable(&format!("malformed response: {e}")))?;
        match &node.sign {
            Some(sign) => {
                if !rsa2_verify(&self.account.alipay_public_key, node.text, sign) {
                    tracing::warn!(method, account = %self.account.account_id, "Alipay response signature does not verify");
                    return Err(unavailable("response signature verification failed"));
                }
            }
            None if status.code != CODE_SUCCESS && UNSIGNED_CODES_ACCEPTED.contains(&status.code.as_str()) => {}
            None => return Err(unavailable("response is not signed")),
        }
        if status.code != CODE_SUCCESS {
            return Ok(Err(GatewayError {
                code: status.code,
                msg: status.msg,
                sub_code: status.sub_code,
                sub_msg: status.sub_msg,
            }));
        }
        serde_json::from_str(node.text)
            .map(Ok)
            .map_err(|e| unavailable(&format!("malformed response: {e}")))
    }
}
