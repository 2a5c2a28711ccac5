//! Channel settlement statements: parse the files channels publish for a day into lines that
//! reconciliation (`payledger reconcile --statement FILE --channel C`) compares with the ledger.
//!
//! Pure parsing: every parser takes the file's bytes and returns a [`Statement`] or a
//! [`StatementError`] naming the 1-based line at fault. No I/O, no clock; no input panics.
//!
//! | format | source document | module |
//! |---|---|---|
//! | [`StatementFormat::WechatPayTradeBill`] | WeChat Pay APIv3 交易账单, `GET /v3/bill/tradebill` → `download_url` (pay.weixin.qq.com `docs/merchant/apis/*/get-trade-bill.html`), uncompressed | [`wechatpay`] |
//! | [`StatementFormat::AlipayTradeStatement`] | Alipay 业务明细 CSV inside the zip from `alipay.data.dataservice.bill.downloadurl.query` (`bill_type=trade`), GBK | [`alipay`] |
//! | [`StatementFormat::Generic`] | payledger's own CSV for channels without a statement format | [`generic`] |
//!
//! Conventions shared by every format:
//! - amounts are integer minor units ([`Money`]: fen for CNY), positive; a refund line carries the
//!   refunded amount as a positive number and [`LineKind::Refund`];
//! - amounts printed in major units (yuan) are converted exactly; a value that is not a whole
//!   number of minor units ("1.234") is an error, never rounded;
//! - channel-local times (China Standard Time, UTC+08:00, no DST) are converted to UTC;
//! - columns are found by header name, not position; each format documents the names it needs.
//!
//! Compressed downloads (WeChat `tar_type=GZIP`, Alipay's zip) must be unpacked by the caller;
//! handing one in is an error that says so.

pub mod alipay;
mod amount;
pub mod generic;
pub mod wechatpay;

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use payledger_domain::{Currency, Money};
use rust_decimal::Decimal;

/// Which file layout a statement has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementFormat {
    /// payledger's generic CSV ([`generic`]).
    Generic,
    /// WeChat Pay APIv3 trade bill, bill types ALL, SUCCESS or REFUND ([`wechatpay`]).
    WechatPayTradeBill,
    /// Alipay trade statement, 业务明细 file ([`alipay`]).
    AlipayTradeStatement,
}

impl StatementFormat {
    /// The format a channel publishes: `wechatpay` → [`Self::WechatPayTradeBill`], `alipay` →
    /// [`Self::AlipayTradeStatement`], any other channel → [`Self::Generic`].
    pub fn for_channel(channel: &str) -> Self {
        match channel {
            "wechatpay" => Self::WechatPayTradeBill,
            "alipay" => Self::AlipayTradeStatement,
            _ => Self::Generic,
        }
    }

    /// A stable name for messages: `generic`, `wechatpay-tradebill`, `alipay-trade`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::WechatPayTradeBill => "wechatpay-tradebill",
            Self::AlipayTradeStatement => "alipay-trade",
        }
    }
}

impl fmt::Display for StatementFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed settlement statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The layout it was parsed as.
    pub format: StatementFormat,
    /// Payment and refund lines in file order.
    pub lines: Vec<StatementLine>,
    /// The totals the file states about itself, already checked against `lines`; `None` when the
    /// format (or this file) states none.
    pub totals: Option<StatementTotals>,
}

/// Whether a line is money in (payment) or money back (refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// The payer paid an order.
    Payment,
    /// Money was (or is being) returned to the payer.
    Refund,
}

/// One payment or refund as the channel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// 1-based line of the file this came from.
    pub line: usize,
    /// Payment or refund.
    pub kind: LineKind,
    /// The order's key as the channel knows it (payledger sends its `order_id` as the channel's
    /// `out_trade_no`); for a refund, the refunded order's.
    pub out_trade_no: String,
    /// The channel's id of the payment (WeChat 微信订单号, Alipay 支付宝交易号).
    pub channel_trade_no: Option<String>,
    /// The merchant's refund key (refund lines only).
    pub out_refund_no: Option<String>,
    /// The channel's refund id (refund lines only, where the format has one).
    pub channel_refund_no: Option<String>,
    /// Integer minor units, positive: the order amount of a payment, the refund amount of a
    /// refund.
    pub amount: Money,
    /// The channel's fee on this line, where the format states one.
    pub fee: Option<Fee>,
    /// The channel's status text, verbatim (see each format: e.g. `SUCCESS`, `PROCESSING`, `交易`).
    pub status: String,
    /// When it happened, converted to UTC; `None` where the file leaves it empty.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// A channel fee, exact.
///
/// Not a [`Money`]: fees may be a fraction of a minor unit (WeChat Pay prints 手续费 to 5
/// decimals of a yuan, e.g. `0.05940` = 5.94 fen) and may be zero or negative, and rounding
/// them would make the statement's own totals unverifiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fee {
    /// Minor units, possibly fractional. Positive: charged to the merchant; negative: returned to
    /// the merchant (the fee share given back on a refund).
    pub amount_minor: Decimal,
    /// The line's currency.
    pub currency: Currency,
}

/// The totals a statement states about itself (its summary rows), as the file states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementTotals {
    /// Every stated total in file order.
    pub items: Vec<StatementTotal>,
}

impl StatementTotals {
    /// The total with this label, if the file states it.
    pub fn get(&self, label: &str) -> Option<&StatementTotal> {
        self.items.iter().find(|t| t.label == label)
    }
}

/// One stated total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementTotal {
    /// 1-based line of the file that states it.
    pub line: usize,
    /// The file's own label, e.g. `总交易单数`, `应结订单总金额` (WeChat Pay) or `交易合计:商家实收`
    /// (Alipay: the summary line's name and the part's name).
    pub label: String,
    /// The stated value.
    pub value: TotalValue,
    /// Whether the parser checked it against the lines (labels it does not know are kept but not
    /// checked; each format lists the ones it checks).
    pub verified: bool,
}

/// A stated count or sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TotalValue {
    /// A number of rows.
    Count(u64),
    /// A sum in minor units (exact; fractional for fee sums).
    AmountMinor(Decimal),
}

/// Why a statement could not be parsed. `line` is the 1-based line at fault; for something
/// missing at the end (a truncated file) it is the line after the last one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct StatementError {
    /// 1-based line in the file.
    pub line: usize,
    /// What is wrong, naming the column or total where there is one.
    pub message: String,
}

impl StatementError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// Parses `bytes` as a statement in `format`.
///
/// # Errors
/// [`StatementError`] naming the line: bad encoding, missing header columns, wrong field count,
/// bad amounts or times, unknown row types, totals that disagree with the rows, an empty file.
pub fn parse(format: StatementFormat, bytes: &[u8]) -> Result<Statement, StatementError> {
    match format {
        StatementFormat::Generic => generic::parse(bytes),
        StatementFormat::WechatPayTradeBill => wechatpay::parse(bytes),
        StatementFormat::AlipayTradeStatement => alipay::parse(bytes),
    }
}

/// Guesses the format from the first lines: a GBK (or UTF-8) `#支付宝` title line → Alipay; a
/// header naming `交易时间` and `商户订单号`, or backtick-prefixed fields on the second line →
/// WeChat Pay; a header naming `type` and `out_trade_no` → generic. `None` otherwise. A guess,
/// not a validation: [`parse`] still checks everything.
pub fn detect(bytes: &[u8]) -> Option<StatementFormat> {
    let bytes = strip_utf8_bom(bytes);
    let mut lines = bytes.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let title = "#支付宝";
    let gbk_first = encoding_rs::GBK.decode_without_bom_handling_and_without_replacement(first);
    if gbk_first.is_some_and(|t| t.starts_with(title)) || first.starts_with(title.as_bytes()) {
        return Some(StatementFormat::AlipayTradeStatement);
    }
    let first = std::str::from_utf8(first).ok()?;
    let names: Vec<String> = first.split(',').map(wechatpay::clean_field).collect();
    let has = |name: &str| names.iter().any(|n| n == name);
    let second_is_backticked = lines.next().is_some_and(|l| l.first() == Some(&b'`'));
    if (has("交易时间") && has("商户订单号")) || second_is_backticked {
        return Some(StatementFormat::WechatPayTradeBill);
    }
    if has("type") && has("out_trade_no") {
        return Some(StatementFormat::Generic);
    }
    None
}

// ---- shared by the format modules -------------------------------------------------------------

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// China Standard Time: the zone of WeChat Pay and Alipay statement times (UTC+08:00, no DST).
const CHINA_OFFSET_SECONDS: i32 = 8 * 3600;

fn strip_utf8_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes)
}

/// Refuses input that is plainly not a statement: nothing at all, or a compressed download.
fn check_not_empty_or_archive(bytes: &[u8]) -> Result<(), StatementError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StatementError::new(
            1,
            "empty file: a statement starts with a header line",
        ));
    }
    if bytes.starts_with(&[0x1F, 0x8B]) {
        return Err(StatementError::new(
            1,
            "gzip-compressed file: decompress the download first",
        ));
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(StatementError::new(
            1,
            "zip archive: extract the statement CSV from it first",
        ));
    }
    Ok(())
}

/// The bytes as UTF-8 (after a BOM, which spreadsheet programs add), or an error naming the
/// first line that is not.
fn utf8_text(bytes: &[u8]) -> Result<&str, StatementError> {
    let bytes = strip_utf8_bom(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let line = line_of_offset(bytes, e.valid_up_to());
        StatementError::new(line, "not valid UTF-8 (is the file in another encoding, such as GBK?)")
    })
}

/// 1-based line holding byte `offset`.
fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line after the last one: where something missing at the end was expected.
fn line_after_end(text: &str) -> usize {
    text.lines().count() + 1
}

/// A CSV reader over in-memory text: no header handling (the formats locate their own header),
/// `"` quoting as RFC 4180.
fn csv_reader(text: &str, flexible: bool) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(flexible)
        .from_reader(text.as_bytes())
}

/// Finds the 1-based file line of CSV records, from their byte positions.
///
/// The csv crate's own `Position::line` counts from where the previous record ended, before the
/// blank lines it skips and before the `\n` of a `\r\n`, so it can name a line too early.
/// Byte offsets are exact: skip the line breaks at the offset and count the `\n`s before it.
/// Records arrive in file order, so counting resumes where it stopped (linear in the file).
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            offset: 0,
            line: 1,
        }
    }

    /// 1-based line at which the record (or error) at `position` starts.
    fn line_of(&mut self, position: Option<&csv::Position>) -> usize {
        let byte = position.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
        let mut start = byte.min(self.bytes.len());
        while matches!(self.bytes.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start < self.offset {
            self.offset = 0;
            self.line = 1;
        }
        self.line += self.bytes[self.offset..start].iter().filter(|&&b| b == b'\n').count();
        self.offset = start;
        self.line
    }

    /// 1-based line where `record` starts.
    fn record(&mut self, record: &csv::StringRecord) -> usize {
        self.line_of(record.position())
    }

    /// A CSV reader error as a [`StatementError`] on its line.
    fn error(&mut self, error: &csv::Error) -> StatementError {
        let line = self.line_of(error.position());
        let message = match error.kind() {
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("expected {expected_len} fields as in the header, found {len} (truncated or malformed row)")
            }
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
            _ => format!("malformed CSV: {error}"),
        };
        StatementError::new(line, message)
    }
}

/// A header row: column names and where to find them.
struct Header {
    line: usize,
    names: Vec<String>,
}

impl Header {
    /// Index of the first column named any of `aliases`.
    fn find(&self, aliases: &[&str]) -> Option<usize> {
        aliases
            .iter()
            .find_map(|alias| self.names.iter().position(|n| n == alias))
    }

    /// Index of a column that must exist.
    fn require(&self, aliases: &[&str], format: StatementFormat) -> Result<usize, StatementError> {
        self.find(aliases).ok_or_else(|| {
            StatementError::new(
                self.line,
                format!("missing column {} in the {format} header", aliases.join(" or ")),
            )
        })
    }

    /// Checks a data row has exactly the header's number of fields.
    fn check_width(&self, line: usize, found: usize) -> Result<(), StatementError> {
        if found == self.names.len() {
            return Ok(());
        }
        Err(StatementError::new(
            line,
            format!(
                "expected {} fields as in the header (line {}), found {found} (truncated row, or an unquoted comma in a field)",
                self.names.len(),
                self.line
            ),
        ))
    }
}

/// Parses `2024-01-15 10:00:01` (China Standard Time) to UTC. Runs of spaces between date and
/// time are accepted (seen in real WeChat Pay bills).
fn parse_china_time(text: &str, line: usize, column: &str) -> Result<DateTime<Utc>, StatementError> {
    let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let naive = NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        StatementError::new(
            line,
            format!("{column} {text:?} is not a time like 2024-01-15 10:00:01"),
        )
    })?;
    let offset = FixedOffset::east_opt(CHINA_OFFSET_SECONDS)
        .ok_or_else(|| StatementError::new(line, "invalid China Standard Time offset"))?;
    naive
        .and_local_timezone(offset)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| StatementError::new(line, format!("{column} {text:?} is not a valid time")))
}

/// `Some(text)` unless empty.
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// A positive [`Money`] or an error naming the column.
fn money(amount_minor: i64, currency: Currency, line: usize, column: &str) -> Result<Money, StatementError> {
    Money::new(amount_minor, currency).map_err(|e| StatementError::new(line, format!("{column}: {e}")))
}

/// Parses a major-unit amount to whole minor units, or an error naming the column.
fn amount_minor(text: &str, currency: Currency, line: usize, column: &str) -> Result<i64, StatementError> {
    amount::parse_amount_minor(text, currency).map_err(|e| StatementError::new(line, format!("{column}: {e}")))
}

/// Parses a major-unit decimal, or an error naming the column.
fn major(text: &str, line: usize, column: &str) -> Result<Decimal, StatementError> {
    amount::parse_major(text).map_err(|e| StatementError::new(line, format!("{column}: {e}")))
}

/// A stated sum in major units as a [`TotalValue::AmountMinor`].
fn total_minor(major_value: Decimal, currency: Currency, line: usize) -> Result<TotalValue, StatementError> {
    amount::major_to_minor(major_value, currency)
        .map(TotalValue::AmountMinor)
        .map_err(|e| StatementError::new(line, e))
}
