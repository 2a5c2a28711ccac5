//! `/v1/orders`: create, read, list, close, and the audit trail.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use payledger_channel_adapters::{Capabilities, ChannelError};
use payledger_domain::{parse_currency_code, Mode, Money, OrderStatus, OrderTerms};
use payledger_projections::queries::{self, OrderFilter};
use payledger_projections::OrderView;
use payledger_store::OrderOwner;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{AuthMerchant, JsonBody};
use crate::http::parse_id;
use crate::validate::{self, FieldErrors, EXPIRE_IN_SECONDS_DEFAULT, EXPIRE_IN_SECONDS_MAX, EXPIRE_IN_SECONDS_MIN};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", post(create).get(list))
        .route("/v1/orders/{order_id}", get(show))
        .route("/v1/orders/{order_id}/close", post(close))
        .route("/v1/orders/{order_id}/events", get(events))
}

/// Body of `POST /v1/orders`. `amount` is an integer in minor units.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// The merchant's own order number: 1–64 of `A-Z a-z 0-9 _ -`. The same number again is the
    /// same order.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub out_trade_no: String,
    /// Amount to collect, an integer in minor units of `currency` (1999 = 19.99 CNY).
    #[schema(value_type = i64, minimum = 1, maximum = 9_007_199_254_740_991_i64, example = 1999)]
    pub amount: Value,
    /// ISO-4217 code of a currency with a minor unit, e.g. `CNY`.
    #[schema(pattern = "^[A-Z]{3}$", example = "CNY")]
    pub currency: String,
    /// An enabled channel: `sandbox` always, `wechatpay` and `alipay` when configured.
    #[schema(example = "sandbox")]
    pub channel: String,
    /// Payment method of the channel (default its first): one of the channel's
    /// [`Capabilities::methods`](payledger_channel_adapters::Capabilities); the OpenAPI text is
    /// written from those lists (`crate::openapi`).
    pub method: Option<String>,
    /// What is sold, shown to the payer: 1–256 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
        example = "Coffee beans 1kg"
    )]
    pub subject: String,
    /// The payer's id at the channel (WeChat Pay `openid` for `jsapi`): 1–256 characters.
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub user_id: Option<String>,
    /// Where payledger POSTs notifications of this order: absolute http(s), at most 2048 bytes,
    /// no control characters.
    #[schema(max_length = 2048, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub notify_url: Option<String>,
    /// Where the channel sends the payer after paying: absolute http(s), at most 2048 bytes, no
    /// control characters.
    #[schema(max_length = 2048, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub return_url: Option<String>,
    /// Seconds until the order expires unpaid (default 7200).
    #[schema(minimum = 60, maximum = 1_296_000)]
    pub expire_in_seconds: Option<i64>,
    /// Merchant data kept with the order: at most 20 distinct keys of 1–40 characters without
    /// control characters, values at most 500 characters without NUL.
    #[serde(default, deserialize_with = "validate::unique_keys")]
    #[schema(schema_with = crate::openapi::metadata_schema)]
    pub metadata: BTreeMap<String, String>,
}

/// Refuses, before the channel is called, a currency or an amount the channel does not take
/// (the channel would refuse it with a 502 after a round trip).
fn within_capabilities(e: &mut FieldErrors, capabilities: &Capabilities, amount: &Money) {
    let code = amount.currency.code();
    if let Some(currencies) = capabilities.currencies {
        if !currencies.contains(&code) {
            e.add(
                "currency",
                format!("{} takes {}", capabilities.channel, currencies.join(", ")),
            );
            return;
        }
    }
    if !(capabilities.amount_minor_min..=capabilities.amount_minor_max).contains(&amount.amount_minor) {
        e.add(
            "amount",
            format!(
                "{} takes {} to {} minor units",
                capabilities.channel, capabilities.amount_minor_min, capabilities.amount_minor_max
            ),
        );
    }
}

async fn terms_of(state: &AppState, owner: &OrderOwner, req: CreateOrderRequest) -> Result<OrderTerms, ApiError> {
    let mode = owner.mode;
    let mut e = FieldErrors::default();
    validate::merchant_no(&mut e, "out_trade_no", &req.out_trade_no);
    let amount_minor = validate::amount_minor(&mut e, "amount", &req.amount);
    let currency = validate::currency_code(&mut e, "currency", &req.currency)
        .then(|| parse_currency_code(&req.currency).map_err(|err| e.add("currency", err.to_string())))
        .and_then(Result::ok);
    let channel = state
        .channels
        .for_new_order(&req.channel)
        .filter(|_| mode.reaches(&req.channel));
    let method = match &channel {
        None if state.channels.for_new_order(&req.channel).is_some() => {
            let hint = match mode {
                Mode::Test => "test mode reaches only the sandbox: use the live API key for real channels",
                Mode::Live => "the sandbox is test mode's channel: use the test API key",
            };
            e.add(
                "channel",
                format!("{} cannot be used in {mode} mode; {hint}", req.channel),
            );
            None
        }
        None => {
            e.add(
                "channel",
                format!(
                    "unknown or disabled channel; enabled in {mode} mode: {}",
                    state.channel_names(mode)
                ),
            );
            None
        }
        Some(channel) => match &req.method {
            None => channel.methods().first().map(|m| m.to_string()),
            Some(m) if channel.methods().contains(&m.as_str()) => Some(m.clone()),
            Some(_) => {
                e.add(
                    "method",
                    format!("{} supports: {}", req.channel, channel.methods().join(", ")),
                );
                None
            }
        },
    };
    validate::text(&mut e, "subject", &req.subject, validate::SUBJECT_CHARS_MAX, true);
    if let Some(u) = &req.user_id {
        validate::text(&mut e, "user_id", u, validate::SHORT_TEXT_CHARS_MAX, true);
    }
    for (field, url) in [("notify_url", &req.notify_url), ("return_url", &req.return_url)] {
        if let Some(url) = url {
            validate::merchant_url(&mut e, field, url, state.config.private_urls.allows(mode)).await;
        }
    }
    let expire_in_seconds = match req.expire_in_seconds {
        None => Some(EXPIRE_IN_SECONDS_DEFAULT),
        Some(s) if (EXPIRE_IN_SECONDS_MIN..=EXPIRE_IN_SECONDS_MAX).contains(&s) => u32::try_from(s).ok(),
        Some(_) => {
            e.add(
                "expire_in_seconds",
                format!("must be between {EXPIRE_IN_SECONDS_MIN} and {EXPIRE_IN_SECONDS_MAX}"),
            );
            None
        }
    };
    validate::metadata(&mut e, &req.metadata);
    let amount = match (amount_minor, currency) {
        (Some(a), Some(c)) => Money::new(a, c).map_err(|err| e.add("amount", err.to_string())).ok(),
        _ => None,
    };
    if let (Some(channel), Some(amount)) = (&channel, &amount) {
        within_capabilities(&mut e, channel.capabilities(), amount);
    }
    e.finish()?;
    let (Some(amount), Some(method), Some(expire_in_seconds)) = (amount, method, expire_in_seconds) else {
        return Err(ApiError::Internal("validated request lacks a field".into()));
    };
    Ok(OrderTerms {
        merchant_id: owner.merchant_id.clone(),
        mode,
        out_trade_no: req.out_trade_no,
        amount,
        channel: req.channel,
        method,
        subject: req.subject,
        user_id: req.user_id,
        notify_url: req.notify_url,
        return_url: req.return_url,
        expire_in_seconds,
        metadata: req.metadata,
    })
}

/// `POST /v1/orders`: 201 with the new order; 200 with the existing order when the same request
/// comes again; 409 when `out_trade_no` exists with other parameters; 422 for invalid fields.
/// When placing the order at the channel fails, the order is recorded as failed
/// (`ChannelOrderFailed`) and the answer is 502 `channel-failed` (the channel refused it), 502
/// `channel-unavailable` (unreachable, no channel service, the channel's 5xx; `retryable`) or 504
/// `channel-timeout` (no answer within the channel timeout; `retryable`, the channel may have
/// opened the order, which is never paid since its pay URL was not handed out).
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    security(("api_key" = [])),
    request_body = CreateOrderRequest,
    responses(
        (status = 201, description = "The new order, placed at its channel (`pay_url` or `qr_code`).", body = OrderView),
        (status = 200, description = "The same request again: the existing order.", body = OrderView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 500, response = crate::openapi::InternalError),
        (status = 502, response = crate::openapi::BadGateway),
        (status = 503, response = crate::openapi::ServiceUnavailable),
        (status = 504, response = crate::openapi::GatewayTimeout),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    JsonBody(req): JsonBody<CreateOrderRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let terms = terms_of(&state, &merchant, req).await?;
    let actor = format!("merchant:{}", merchant.merchant_id);
    let placed = state.flows.place_order(terms, &actor, Utc::now()).await?;
    if let Some(e) = placed.failed_at_channel() {
        let detail = format!(
            "order {} was recorded as failed: {}",
            placed.order_id,
            placed.failure_reason().as_deref().unwrap_or("channel error")
        );
        return Err(match e {
            ChannelError::Timeout(_) => ApiError::ChannelTimeout(detail),
            ChannelError::Unavailable(_) => ApiError::ChannelUnavailable(detail),
            _ => ApiError::BadGateway(detail),
        });
    }
    // A new order's answer folds the events just appended; a repeat reads the log.
    let view = match &placed.history {
        Some(history) => OrderView::from_events(history.iter().map(|(sequence, event)| (*sequence, event)))
            .map_err(ApiError::Internal)?
            .ok_or_else(|| ApiError::Internal(format!("order {} has no events", placed.order_id)))?,
        None => state.order_now(&merchant, placed.order_id).await?,
    };
    let status = if placed.is_new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// `GET /v1/orders/{order_id}`: the order view; 404 if it is not this merchant's.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    security(("api_key" = [])),
    params(("order_id" = String, Path, format = Uuid, description = "The order's id.")),
    responses(
        (status = 200, description = "The order with its refunds.", body = OrderView),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = parse_id(&order_id, "order")?;
    Ok(Json(state.order_now(&merchant, order_id).await?))
}

/// Query of `GET /v1/orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the order with this number.
    pub out_trade_no: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<payledger_projections::openapi::OrderStatusSchema>)]
    pub status: Option<String>,
    /// Created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Created before this time (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/orders?out_trade_no=&status=&from=&to=&limit=&cursor=`: newest first, keyset
/// pagination; `{data: [order view], next_cursor}`.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of the merchant's orders, newest first.", body = queries::OrderPage),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let mut e = FieldErrors::default();
    if let Some(s) = &q.status {
        if !OrderStatus::ALL.iter().any(|st| st.as_str() == s) {
            let names: Vec<&str> = OrderStatus::ALL.iter().map(|st| st.as_str()).collect();
            e.add("status", format!("one of {}", names.join(", ")));
        }
    }
    if let Some(no) = &q.out_trade_no {
        validate::merchant_no(&mut e, "out_trade_no", no);
    }
    let mut time = |field: &str, v: &Option<String>| {
        v.as_deref().and_then(|t| match payledger_store::time::parse_ts(t) {
            Ok(t) => Some(payledger_store::time::fmt_ts(t)),
            Err(_) => {
                e.add(field, "must be an RFC 3339 time, e.g. 2026-11-21T00:00:00Z");
                None
            }
        })
    };
    let created_from = time("from", &q.from);
    let created_to = time("to", &q.to);
    let (limit, cursor) = validate::page(&mut e, q.limit, q.cursor.as_deref());
    e.finish()?;
    let filter = OrderFilter {
        out_trade_no: q.out_trade_no,
        status: q.status,
        created_from,
        created_to,
        ..OrderFilter::default()
    };
    state.read_models_current().await?;
    let page = queries::list_orders(state.db.pool(), &merchant, &filter, limit, cursor).await?;
    Ok(Json(page))
}

/// `POST /v1/orders/{order_id}/close`: closes an unpaid order (200 with the order); closing a
/// closed order again is a no-op; 409 when it was paid.
#[utoipa::path(
    post,
    path = "/v1/orders/{order_id}/close",
    tag = "orders",
    security(("api_key" = [])),
    params(("order_id" = String, Path, format = Uuid, description = "The order's id.")),
    responses(
        (status = 200, description = "The closed order (also when it was closed already).", body = OrderView),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn close(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = parse_id(&order_id, "order")?;
    let actor = format!("merchant:{}", merchant.merchant_id);
    state.flows.close_order(&merchant, order_id, &actor).await?;
    Ok(Json(state.order_now(&merchant, order_id).await?))
}

/// `GET /v1/orders/{order_id}/events`: every event of the order, in order, with who caused it
/// (`metadata.actor`) and when it was stored.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_id}/events",
    tag = "orders",
    security(("api_key" = [])),
    params(("order_id" = String, Path, format = Uuid, description = "The order's id.")),
    responses(
        (status = 200, description = "The order's audit trail.", body = crate::openapi::OrderEvents),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let order_id = parse_id(&order_id, "order")?;
    state.owned_order(&merchant, order_id).await?;
    let events = state.db.log().order_events(order_id).await?;
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            // Stored as {"<Type>": {fields}}: show the fields under `payload`.
            let payload = match serde_json::to_value(&e.event) {
                Ok(Value::Object(mut m)) => m.remove(&e.event_type).unwrap_or(Value::Null),
                _ => Value::Null,
            };
            json!({
                "event_id": e.event_id,
                "sequence": e.sequence,
                "type": e.event_type,
                "version": e.event_version,
                "recorded_at": payledger_store::time::fmt_ts(e.recorded_at),
                "global_position": e.position.global_position,
                "metadata": e.metadata,
                "payload": payload,
            })
        })
        .collect();
    Ok(Json(json!({ "order_id": order_id, "events": events })))
}
