//! payledger's generic statement CSV, for channels without a statement format of their own (the
//! sandbox, or a channel whose export an operator converts).
//!
//! The format (this is its definition):
//! - UTF-8 (a leading BOM is ignored), RFC 4180 CSV: `,` separated, `"` quoting, `\n` or `\r\n`.
//!   Blank lines are ignored; spaces around fields are trimmed.
//! - First line: the header, naming exactly these ten columns, in any order, each once:
//!   `type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at`.
//!   An unknown column is an error: this is our own format, and a misspelt column (`fee_minr`)
//!   silently ignored would drop data from a reconciliation.
//! - Then one line per payment or refund, with as many fields as the header:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `type` | yes | `payment` or `refund` |
//! | `out_trade_no` | yes | the order's key at the channel (payledger's `order_id`) |
//! | `channel_trade_no` | no | the channel's payment id |
//! | `out_refund_no` | no | the merchant's refund key (refunds) |
//! | `channel_refund_no` | no | the channel's refund id (refunds) |
//! | `amount_minor` | yes | integer minor units, positive (digits only): the order amount, or the refund amount |
//! | `currency` | yes | ISO-4217 code, upper case, e.g. `CNY` |
//! | `fee_minor` | no | the channel's fee, integer minor units; negative when returned |
//! | `status` | yes | the channel's status text, kept verbatim |
//! | `occurred_at` | no | RFC 3339 time with offset, e.g. `2024-01-15T10:00:01+08:00`; stored in UTC |
//!
//! Example:
//! ```text
//! type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at
//! payment,8d0f…,ch_1,,,1230,CNY,7,SUCCESS,2024-01-15T10:00:01+08:00
//! refund,8d0f…,ch_1,r-1,chr_1,230,CNY,-1,SUCCESS,2024-01-15T12:00:00Z
//! ```
//! The format has no totals: [`Statement::totals`](super::Statement::totals) is `None`.

use chrono::{DateTime, Utc};
use payledger_domain::parse_currency_code;
use rust_decimal::Decimal;

use super::{
    check_not_empty_or_archive, money, non_empty, utf8_text, Fee, Header, LineCounter, LineKind, Statement,
    StatementError, StatementFormat, StatementLine,
};

const FORMAT: StatementFormat = StatementFormat::Generic;

/// The header's column names, in the order the documentation lists them.
pub const COLUMNS: [&str; 10] = [
    "type",
    "out_trade_no",
    "channel_trade_no",
    "out_refund_no",
    "channel_refund_no",
    "amount_minor",
    "currency",
    "fee_minor",
    "status",
    "occurred_at",
];

/// Longest integer field accepted, in digits: `AMOUNT_MINOR_MAX` has 16; more is refused before
/// parsing rather than overflowing.
const INTEGER_DIGITS_MAX: usize = 18;

/// Parses a generic statement (see the module docs for the format).
///
/// # Errors
/// [`StatementError`]: not UTF-8, an empty file, a header with a missing, unknown or repeated
/// column, a row with another field count than the header, an unknown `type`, an empty required
/// field, a bad amount (not digits, zero, above `AMOUNT_MINOR_MAX`), currency, fee or time.
pub fn parse(bytes: &[u8]) -> Result<Statement, StatementError> {
    check_not_empty_or_archive(bytes)?;
    let text = utf8_text(bytes)?;
    // flexible(false): every row must have the header's width; the reader reports the line.
    let mut at = LineCounter::new(text);
    let mut records = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes())
        .into_records();
    let header_record = match records.next() {
        Some(Ok(record)) => record,
        Some(Err(e)) => return Err(at.error(&e)),
        None => {
            return Err(StatementError::new(
                1,
                "empty file: a generic statement starts with its header",
            ))
        }
    };
    let header = Header {
        line: at.record(&header_record),
        names: header_record.iter().map(str::to_string).collect(),
    };
    let mut index = [0_usize; COLUMNS.len()];
    for (slot, name) in index.iter_mut().zip(COLUMNS) {
        *slot = header.require(&[name], FORMAT)?;
    }
    for (position, name) in header.names.iter().enumerate() {
        if !COLUMNS.contains(&name.as_str()) {
            return Err(StatementError::new(
                header.line,
                format!(
                    "unknown column {name:?}: the generic header has exactly {}",
                    COLUMNS.join(",")
                ),
            ));
        }
        if header.names[..position].contains(name) {
            return Err(StatementError::new(
                header.line,
                format!("column {name:?} appears twice"),
            ));
        }
    }
    let [kind, out_trade_no, channel_trade_no, out_refund_no, channel_refund_no, amount, currency, fee, status, occurred_at] =
        index;

    let mut lines = Vec::new();
    for record in records {
        let record = record.map_err(|e| at.error(&e))?;
        let line = at.record(&record);
        let field = |i: usize| record.get(i).unwrap_or_default();
        let required = |i: usize| {
            let value = field(i);
            if value.is_empty() {
                Err(StatementError::new(
                    line,
                    format!("{} is empty", COLUMNS[column_of(&index, i)]),
                ))
            } else {
                Ok(value)
            }
        };
        let line_kind = match required(kind)? {
            "payment" => LineKind::Payment,
            "refund" => LineKind::Refund,
            other => {
                return Err(StatementError::new(
                    line,
                    format!("type {other:?} is neither payment nor refund"),
                ));
            }
        };
        let line_currency = parse_currency_code(required(currency)?)
            .map_err(|e| StatementError::new(line, format!("currency: {e}")))?;
        let amount_text = required(amount)?;
        let amount_value = parse_integer(amount_text, false).ok_or_else(|| {
            StatementError::new(line, format!("amount_minor {amount_text:?} is not a positive integer"))
        })?;
        let fee_value = match field(fee) {
            "" => None,
            text => Some(Fee {
                amount_minor: Decimal::from(
                    parse_integer(text, true)
                        .ok_or_else(|| StatementError::new(line, format!("fee_minor {text:?} is not an integer")))?,
                ),
                currency: line_currency,
            }),
        };
        let occurred = match field(occurred_at) {
            "" => None,
            text => Some(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|_| {
                        StatementError::new(
                            line,
                            format!("occurred_at {text:?} is not an RFC 3339 time with offset"),
                        )
                    })?
                    .with_timezone(&Utc),
            ),
        };
        lines.push(StatementLine {
            line,
            kind: line_kind,
            out_trade_no: required(out_trade_no)?.to_string(),
            channel_trade_no: non_empty(field(channel_trade_no)),
            out_refund_no: non_empty(field(out_refund_no)),
            channel_refund_no: non_empty(field(channel_refund_no)),
            amount: money(amount_value, line_currency, line, "amount_minor")?,
            fee: fee_value,
            status: required(status)?.to_string(),
            occurred_at: occurred,
        });
    }
    Ok(Statement {
        format: FORMAT,
        lines,
        totals: None,
    })
}

/// Which of [`COLUMNS`] sits at header position `position`.
fn column_of(index: &[usize; COLUMNS.len()], position: usize) -> usize {
    index.iter().position(|&p| p == position).unwrap_or(0)
}

/// ASCII digits (with a leading `-` if `signed`) to an `i64`; `None` for anything else.
fn parse_integer(text: &str, signed: bool) -> Option<i64> {
    let digits = if signed {
        text.strip_prefix('-').unwrap_or(text)
    } else {
        text
    };
    if digits.is_empty() || digits.len() > INTEGER_DIGITS_MAX || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
