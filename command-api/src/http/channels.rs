//! `GET /v1/channels`: the channels a merchant can use now, with their methods and limits (the
//! `/payment/methods` of the merchant integration guide).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use payledger_channel_adapters::Capabilities;
use serde::Serialize;

use crate::app::AppState;
use crate::http::extract::AuthMerchant;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/channels", get(list))
}

/// Body of `GET /v1/channels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelList {
    /// Every enabled channel, by name.
    pub data: Vec<ChannelInfo>,
}

/// One enabled channel: what `POST /v1/orders` accepts for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelInfo {
    /// The value of `channel` in `POST /v1/orders`.
    #[schema(example = "wechatpay")]
    pub channel: &'static str,
    /// Its payment methods, the values of `method`.
    #[schema(example = json!(["qr", "h5", "jsapi"]))]
    pub methods: &'static [&'static str],
    /// The method used when an order names none.
    #[schema(example = "qr")]
    pub default_method: &'static str,
    /// ISO-4217 codes it takes; `null`: any currency with a minor unit.
    #[schema(example = json!(["CNY"]))]
    pub currencies: Option<&'static [&'static str]>,
    /// Smallest amount of one order, minor units.
    #[schema(example = 1)]
    pub amount_minor_min: i64,
    /// Largest amount of one order, minor units.
    #[schema(example = 2_147_483_647_i64)]
    pub amount_minor_max: i64,
}

impl From<&'static Capabilities> for ChannelInfo {
    fn from(c: &'static Capabilities) -> Self {
        Self {
            channel: c.channel,
            methods: c.methods,
            default_method: c.methods.first().copied().unwrap_or_default(),
            currencies: c.currencies,
            amount_minor_min: c.amount_minor_min,
            amount_minor_max: c.amount_minor_max,
        }
    }
}

/// `GET /v1/channels`: `{"data": [{channel, methods, default_method, currencies,
/// amount_minor_min, amount_minor_max}]}`: the enabled channels the key's mode reaches. With the
/// test key, the sandbox (always enabled); with the live key, WeChat Pay and Alipay when an
/// account is configured (the list follows live configuration changes).
#[utoipa::path(
    get,
    path = "/v1/channels",
    tag = "channels",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The channels enabled now, their methods, currencies and amount limits (minor units).", body = ChannelList),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn list(State(state): State<AppState>, AuthMerchant(merchant): AuthMerchant) -> Json<ChannelList> {
    let data = state
        .channels
        .reachable_in(merchant.mode)
        .into_iter()
        .map(ChannelInfo::from)
        .collect();
    Json(ChannelList { data })
}
