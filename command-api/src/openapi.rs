//! The OpenAPI 3.1 document of the whole HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they answer with; served at `GET /openapi.json`, rendered at
//! `GET /docs`, and checked in as `schemas/openapi.json` (a test fails when the two drift;
//! `payledger openapi > schemas/openapi.json` regenerates it).
//!
//! Every error is RFC 9457 `application/problem+json` ([`Problem`]); each operation lists the
//! statuses it can answer with one of the reusable responses below. Amounts are integers in minor
//! units; times RFC 3339 UTC.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::app::AppState;
use crate::http;
use crate::validate::{METADATA_KEYS_MAX, METADATA_KEY_CHARS_MAX, METADATA_VALUE_CHARS_MAX};

/// Name of the security scheme of merchant endpoints: `Authorization: Bearer <api_key>` (the
/// handlers' `security(("api_key" = []))` spell it out: the macro takes only a literal).
pub const MERCHANT_AUTH: &str = "api_key";

/// The whole document; see [`document`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "payledger",
        description = "Payment gateway and ledger: merchants create payment orders, channels call back, \
                       every fact is an event. Merchant endpoints take `Authorization: Bearer <api_key>` \
                       and see only the merchant's own orders. Amounts are integers in minor units of the \
                       currency (1999 = 19.99 CNY); times are RFC 3339 UTC. Errors are RFC 9457 \
                       `application/problem+json`.",
    ),
    paths(
        http::orders::create,
        http::orders::list,
        http::orders::show,
        http::orders::close,
        http::orders::events,
        http::refunds::create,
        http::refunds::show,
        http::ledger::daily,
        http::ledger::balances,
        http::channels::list,
        http::notifications::list,
        http::notifications::show,
        http::notifications::resend,
        http::callbacks::receive,
        http::callbacks::receive_for_account,
        http::sandbox::page,
        http::sandbox::pay,
        http::health::healthz,
        http::health::readyz,
        http::health::metrics,
        openapi_json,
        docs,
        docs_script,
    ),
    components(responses(
        BadRequest,
        Unauthorized,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        TooManyRequests,
        InternalError,
        BadGateway,
        ServiceUnavailable,
        GatewayTimeout,
    )),
    modifiers(&BearerApiKey, &ChannelMethods),
    tags(
        (name = "orders", description = "Payment orders: create, read, list, close, audit trail."),
        (name = "refunds", description = "Refunds of paid orders."),
        (name = "ledger", description = "Daily figures and the double-entry journal's balances."),
        (name = "notifications", description = "The merchant's notify queue, and resend."),
        (name = "channels", description = "The channels a merchant can use; channel-facing callbacks and the sandbox channel's pay page."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    ),
)]
pub struct ApiDoc;

/// Adds the Bearer API-key scheme that merchant operations name in `security`.
struct BearerApiKey;

impl Modify for BearerApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            MERCHANT_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The merchant's API key, as printed once by `payledger merchants add`: its test key (`plk_test_…`: the sandbox only, test data only) or its live key (`plk_live_…`: real channels only). Every request sees only the data of its key's mode.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Writes `method` of `CreateOrderRequest` from the adapters' own [`Capabilities`] (its allowed
/// values and, per channel, the list and the default), so the document cannot drift from what
/// orders are validated against.
///
/// [`Capabilities`]: payledger_channel_adapters::Capabilities
struct ChannelMethods;

impl Modify for ChannelMethods {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{Schema, SchemaType};
        let Some(RefOr::T(Schema::Object(request))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("CreateOrderRequest"))
        else {
            return;
        };
        let channels = payledger_channel_adapters::CAPABILITIES;
        let per_channel: Vec<String> = channels
            .iter()
            .map(|c| {
                let methods: Vec<String> = c.methods.iter().map(|m| format!("`{m}`")).collect();
                format!("{} {}", c.channel, methods.join(", "))
            })
            .collect();
        let mut values: Vec<serde_json::Value> = Vec::new();
        for m in channels.iter().flat_map(|c| c.methods.iter()) {
            let v = serde_json::Value::from(*m);
            if !values.contains(&v) {
                values.push(v);
            }
        }
        // `null` reads as absent: the channel's first method.
        values.push(serde_json::Value::Null);
        let method = ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .enum_values(Some(values))
            .description(Some(format!(
                "Payment method of the channel; absent: the channel's first. {}. `GET /v1/channels` \
                 lists the channels enabled now.",
                per_channel.join("; ")
            )))
            .build();
        request.properties.insert("method".to_string(), method.into());
    }
}

/// The document, with the package version as `info.version`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.info.license = None;
    doc
}

/// The document as pretty JSON with a final newline: the exact text of `schemas/openapi.json`.
/// Key order is stable (paths and components sorted, properties in declaration order).
///
/// # Errors
/// Only if serialisation fails, which would be a bug.
pub fn to_pretty_json() -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(&document())?;
    text.push('\n');
    Ok(text)
}

/// `GET /openapi.json`, `GET /docs` and the viewer's script.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        .route(DOCS_SCRIPT_PATH, get(docs_script))
}

/// Where `/docs` loads Scalar's viewer script from: this server, never a CDN, so the page works
/// with no internet (self-hosted payment systems often run where it cannot be reached).
pub const DOCS_SCRIPT_PATH: &str = "/docs/scalar.js";

/// The viewer script, embedded at build time by the `scalar_api_reference` crate (Scalar's own
/// build of `@scalar/api-reference`, about 5 MB).
static DOCS_SCRIPT: LazyLock<bytes::Bytes> =
    LazyLock::new(|| scalar_api_reference::get_asset("scalar.js").unwrap_or_default().into());

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// `GET /docs`: the API reference page: Scalar's viewer with this document inline, its script
/// from [`DOCS_SCRIPT_PATH`]. `withDefaultFonts: false` keeps the viewer from asking a font CDN:
/// the page loads nothing from outside this server (`tests/openapi.rs` renders it in Chromium
/// with every host but loopback unresolvable).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    responses((status = 200, description = "An HTML page rendering this document.", content_type = "text/html", body = String)),
)]
async fn docs() -> impl IntoResponse {
    static PAGE: LazyLock<String> = LazyLock::new(|| {
        let config = serde_json::json!({
            "content": document(),
            "withDefaultFonts": false,
            "hideClientButton": true,
            // Operations by path: the summaries are whole paragraphs.
            "operationTitleSource": "path",
            // No hosted services from a self-hosted server's docs: no AI agent, no "deploy".
            "agent": { "disabled": true },
            "showDeveloperTools": "never",
        });
        scalar_api_reference::scalar_html(&config, Some(DOCS_SCRIPT_PATH))
            .replace("<title>Scalar API Reference</title>", "<title>payledger API</title>")
    });
    static CSP: LazyLock<String> = LazyLock::new(|| crate::http::security::docs_csp(&PAGE));
    ([(header::CONTENT_SECURITY_POLICY, CSP.as_str())], Html(PAGE.as_str()))
}

/// `GET /docs/scalar.js`: the viewer script of `/docs`.
#[utoipa::path(
    get,
    path = "/docs/scalar.js",
    tag = "operations",
    responses((status = 200, description = "The API reference viewer's script (Scalar), served by this server.", content_type = "text/javascript", body = String)),
)]
async fn docs_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // The script changes only with the binary.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        DOCS_SCRIPT.clone(),
    )
}

/// An RFC 9457 problem: the body of every error answer (`application/problem+json`).
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "type": "https://payledger.dev/problems/refund-exceeds-refundable",
    "title": "Conflict",
    "status": 409,
    "detail": "refund of 1500 exceeds the refundable amount of 1499 minor units"
}))]
pub struct Problem {
    /// `https://payledger.dev/problems/<slug>`; the slug names the rule (e.g. `not-found`,
    /// `validation`, `out-trade-no-conflict`).
    pub r#type: String,
    /// Short summary of the status, e.g. `Conflict`.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request, for a person.
    pub detail: String,
    /// Only for 422 (`validation`): each offending field (a JSON path such as `amount` or
    /// `metadata.k`) and its messages.
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

fn problem_response(description: &str, header: Option<(&str, &str)>) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", content);
    if let Some((name, header_description)) = header {
        response = response.header(
            name,
            HeaderBuilder::new()
                .schema(<String as utoipa::PartialSchema>::schema())
                .description(Some(header_description))
                .build(),
        );
    }
    response.build().into()
}

/// Reusable problem responses: `(status = 404, response = NotFound)` in an operation refers to
/// `#/components/responses/NotFound`.
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => $description:literal $(, header($header:literal, $header_doc:literal))?;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                let header: Option<(&str, &str)> = None $(.or(Some(($header, $header_doc))))?;
                (stringify!($name), problem_response($description, header))
            }
        }
    )*};
}

problem_responses! {
    /// 400.
    BadRequest => "Malformed request: the body is not valid JSON, or the query string does not parse (an unknown parameter, a number that is not one).";
    /// 401.
    Unauthorized => "Missing or invalid API key.", header("WWW-Authenticate", "`Bearer`");
    /// 404.
    NotFound => "No such resource for this merchant (another merchant's is indistinguishable from a missing one; so is an id that is not a UUID).";
    /// 409.
    Conflict => "The request conflicts with the resource's state; `type` names the rule.";
    /// 413.
    PayloadTooLarge => "Request body over its limit (1 MiB; 64 KiB for channel callbacks); `detail` names the limit.";
    /// 415.
    UnsupportedMediaType => "The body is not sent as `Content-Type: application/json`.";
    /// 422.
    ValidationFailed => "Invalid fields: `errors` maps each field to its messages.";
    /// 429.
    TooManyRequests => "Over a request rate: this merchant's (`serve --rate-limit`; other merchants are not affected) or, for a request that is not authenticated (a missing or wrong API key, the sandbox pay page), the client address's (`serve --unauthenticated-rate-limit`; a merchant's authenticated requests never count there). `detail` names the limit.", header("Retry-After", "Seconds to wait.");
    /// 500.
    InternalError => "An unexpected failure (the database failed); the detail is logged, not returned.";
    /// 502.
    BadGateway => "The payment channel refused (`channel-failed`) or could not be reached (`channel-unavailable`: the channel, or the channel service over NATS). An order being placed is recorded as failed.";
    /// 503.
    ServiceUnavailable => "Try again shortly (contention on the order, the database unreachable).", header("Retry-After", "Seconds to wait: `1`.");
    /// 504.
    GatewayTimeout => "Type `channel-timeout`: the payment channel (or the channel service over NATS) did not answer within the channel timeout; the order is recorded as failed.";
}

/// Schema of an order's `metadata` in a request, with the limits of [`crate::validate::metadata`].
pub fn metadata_schema() -> Object {
    let text = |min: usize, max: usize, pattern: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(min))
            .max_length(Some(max))
            .pattern(Some(pattern))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "Merchant data kept with the order: at most {METADATA_KEYS_MAX} distinct keys of \
             1–{METADATA_KEY_CHARS_MAX} characters without control characters, values at most \
             {METADATA_VALUE_CHARS_MAX} characters without NUL."
        )))
        .max_properties(Some(METADATA_KEYS_MAX))
        .property_names(Some(text(1, METADATA_KEY_CHARS_MAX, "^[^\\x00-\\x1f\\x7f-\\x9f]*$")))
        .additional_properties(Some(text(0, METADATA_VALUE_CHARS_MAX, "^[^\\x00]*$")))
        .build()
}

/// Schema of `GET /v1/orders/{order_id}/events`.
#[derive(Debug, ToSchema)]
pub struct OrderEvents {
    #[schema(format = Uuid)]
    pub order_id: String,
    /// Every event of the order, by `sequence`.
    pub events: Vec<OrderEvent>,
}

/// One event of an order's audit trail.
#[derive(Debug, ToSchema)]
pub struct OrderEvent {
    #[schema(format = Uuid)]
    pub event_id: String,
    /// 1-based, dense per order.
    pub sequence: i64,
    /// The event type, e.g. `OrderCreated`, `PaymentSucceeded`.
    pub r#type: String,
    /// The stored payload version.
    pub version: String,
    /// When the database stored it.
    #[schema(format = DateTime)]
    pub recorded_at: String,
    /// Position in the global log (commit order across orders).
    pub global_position: i64,
    /// Who caused it (`actor`: `merchant:<id>`, `channel:<name>`, `monitor`, …).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// The event's fields, as `schemas/events/<type>.json` describes them.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// Schema of `GET /v1/stats/daily`.
#[derive(Debug, ToSchema)]
pub struct DailyStatsList {
    /// Newest day first, at most 366 rows.
    pub data: Vec<payledger_projections::queries::DailyStats>,
}

/// Schema of `GET /v1/ledger/balances`.
#[derive(Debug, ToSchema)]
pub struct BalanceList {
    /// One row per account and currency.
    pub data: Vec<payledger_projections::queries::AccountBalance>,
}

/// Schema of the answer of `POST /sandbox/pay/{order_id}`.
#[derive(Debug, ToSchema)]
pub struct SandboxPayResult {
    #[schema(format = Uuid)]
    pub order_id: String,
    /// How payledger answered the sandbox's signed callback (200).
    pub callback_status: u16,
    /// The order's status after the callback.
    #[schema(value_type = payledger_projections::openapi::OrderStatusSchema)]
    pub order_status: String,
}
