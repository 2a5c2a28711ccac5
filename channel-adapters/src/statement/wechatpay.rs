//! WeChat Pay APIv3 trade bill (交易账单).
//!
//! Source: WeChat Pay merchant docs, 申请交易账单 `GET /v3/bill/tradebill?bill_date=&bill_type=`
//! (pay.weixin.qq.com `docs/merchant/apis/*/get-trade-bill.html`) returns a `download_url`; the
//! file behind it (uncompressed; `tar_type=GZIP` must be unpacked by the caller) is what this
//! parses. Amounts are in yuan; times are China Standard Time.
//!
//! Layout (UTF-8, an optional BOM, `\n` or `\r\n`):
//! ```text
//! 交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注
//! `2024-01-15 10:00:01,`wx…,`190…,`0,`,`4200…,`order-1,`o…,`JSAPI,`SUCCESS,`OTHERS,`CNY,`8.88,`0.00,`0,`0,`0.00,`0.00,`,`,`…,`,`0.05328,`0.60%,`8.88,`0.00,`
//! …
//! 总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
//! `2,`8.88,`0.00,`0.00,`0.05328,`8.88,`0.00
//! ```
//! Every field may carry one leading backtick (WeChat adds it so spreadsheets keep long numbers
//! as text); it is removed, as are surrounding spaces. Header names may carry it too.
//!
//! Columns are located by name. Required: 交易时间, 微信订单号, 商户订单号, 交易状态, 货币种类,
//! 应结订单金额 (or the pre-2018-11 name 总金额), 微信退款单号, 商户退款单号, 退款金额, 退款状态.
//! Used when present: 订单金额, 申请退款金额 (both added in 2018-11), 手续费, 退款成功时间
//! (REFUND-type bills), and the summed columns listed under totals.
//!
//! Rows, by 交易状态:
//! - `SUCCESS` → a [`LineKind::Payment`]: amount = 订单金额 (the order amount the merchant asked
//!   for, including free coupons; 应结订单金额 where the file predates 订单金额), status `SUCCESS`,
//!   time 交易时间.
//! - `REFUND` → a [`LineKind::Refund`]: amount = 申请退款金额 (the refund the merchant asked for —
//!   the ledger's refund amount; 退款金额 where the file predates it; the two differ only by free
//!   coupon refunds), out_refund_no = 商户退款单号, channel_refund_no = 微信退款单号, status =
//!   退款状态 (`SUCCESS`, `PROCESSING`, …; `REFUND` if empty), time = 退款成功时间 if present,
//!   else 交易时间. A REFUND row does not imply a payment line: in an ALL bill a refunded order
//!   appears as its own SUCCESS row (on the day it was paid) and a separate REFUND row (on the
//!   day of the refund), so each row gives exactly one line.
//! - anything else is an error: the bill documents only these two, and silently dropping a row
//!   of money would hide exactly what reconciliation looks for.
//!
//! Fee: 手续费, exact (printed with up to 5 decimals), negative on refund rows (fee returned).
//!
//! Totals: the summary block (a header row starting 总交易单数 and one values row) must close
//! the file. Checked: 总交易单数 = number of detail rows; each `…总金额` = the sum of its column
//! over all detail rows: 应结订单总金额 (总交易额) ← 应结订单金额 (总金额), 退款总金额 (总退款金额) ←
//! 退款金额, 充值券退款总金额 (总企业红包退款金额) ← 充值券退款金额 (企业红包退款金额), 手续费总金额 ←
//! 手续费, 订单总金额 ← 订单金额, 申请退款总金额 ← 申请退款金额. Other labels are kept, unchecked.

use payledger_domain::{parse_currency_code, Currency};
use rust_decimal::Decimal;

use super::{
    amount_minor, check_not_empty_or_archive, csv_reader, line_after_end, major, money, non_empty, parse_china_time,
    total_minor, utf8_text, Fee, Header, LineCounter, LineKind, Statement, StatementError, StatementFormat,
    StatementLine, StatementTotal, StatementTotals, TotalValue,
};

const FORMAT: StatementFormat = StatementFormat::WechatPayTradeBill;

/// The first label of the summary header row.
const ROW_COUNT_LABEL: &str = "总交易单数";

/// Summary labels and the detail column each one sums (current name first, then older names).
const SUMMED: &[(&[&str], &[&str])] = &[
    (&["应结订单总金额", "总交易额"], &["应结订单金额", "总金额"]),
    (&["退款总金额", "总退款金额"], &["退款金额"]),
    (
        &["充值券退款总金额", "总企业红包退款金额", "总代金券或立减优惠退款金额"],
        &["充值券退款金额", "企业红包退款金额"],
    ),
    (&["手续费总金额"], &["手续费"]),
    (&["订单总金额"], &["订单金额"]),
    (&["申请退款总金额"], &["申请退款金额"]),
];

/// A field without WeChat's leading backtick, surrounding spaces or a BOM.
pub(crate) fn clean_field(field: &str) -> String {
    let field = field.trim().trim_start_matches('\u{feff}').trim();
    field.strip_prefix('`').unwrap_or(field).trim().to_string()
}

struct Columns {
    time: usize,
    channel_trade_no: usize,
    out_trade_no: usize,
    status: usize,
    currency: usize,
    settlement: usize,
    channel_refund_no: usize,
    out_refund_no: usize,
    refund: usize,
    refund_status: usize,
    order_amount: Option<usize>,
    refund_requested: Option<usize>,
    fee: Option<usize>,
    refund_succeeded_at: Option<usize>,
    /// Per [`SUMMED`] entry: the column it sums, if the header has it.
    summed: Vec<Option<usize>>,
}

impl Columns {
    fn locate(header: &Header) -> Result<Self, StatementError> {
        Ok(Self {
            time: header.require(&["交易时间"], FORMAT)?,
            channel_trade_no: header.require(&["微信订单号"], FORMAT)?,
            out_trade_no: header.require(&["商户订单号"], FORMAT)?,
            status: header.require(&["交易状态"], FORMAT)?,
            currency: header.require(&["货币种类"], FORMAT)?,
            settlement: header.require(&["应结订单金额", "总金额"], FORMAT)?,
            channel_refund_no: header.require(&["微信退款单号"], FORMAT)?,
            out_refund_no: header.require(&["商户退款单号"], FORMAT)?,
            refund: header.require(&["退款金额"], FORMAT)?,
            refund_status: header.require(&["退款状态"], FORMAT)?,
            order_amount: header.find(&["订单金额"]),
            refund_requested: header.find(&["申请退款金额"]),
            fee: header.find(&["手续费"]),
            refund_succeeded_at: header.find(&["退款成功时间"]),
            summed: SUMMED.iter().map(|(_, columns)| header.find(columns)).collect(),
        })
    }
}

/// Parses a WeChat Pay trade bill (see the module docs for the layout and decisions).
///
/// # Errors
/// [`StatementError`]: not UTF-8, missing header column, a row with another field count than the
/// header, an empty or malformed amount, more than 2 decimals in an amount, an unknown 交易状态
/// or currency, a bad 交易时间, a missing or malformed summary, rows after the summary, a summary
/// value that disagrees with the rows (the error names the summary line and label).
pub fn parse(bytes: &[u8]) -> Result<Statement, StatementError> {
    check_not_empty_or_archive(bytes)?;
    let text = utf8_text(bytes)?;
    let mut at = LineCounter::new(text);
    let mut records = csv_reader(text, true).into_records();

    let header_record = match records.next() {
        Some(Ok(record)) => record,
        Some(Err(e)) => return Err(at.error(&e)),
        None => {
            return Err(StatementError::new(
                1,
                "empty file: a WeChat Pay trade bill starts with a header",
            ))
        }
    };
    let header = Header {
        line: at.record(&header_record),
        names: header_record.iter().map(clean_field).collect(),
    };
    if header.names.first().map(String::as_str) == Some(ROW_COUNT_LABEL) {
        return Err(StatementError::new(
            header.line,
            "the file starts with the summary: the bill header is missing",
        ));
    }
    let columns = Columns::locate(&header)?;

    let mut lines = Vec::new();
    // Per SUMMED entry: the running sum of its column in yuan, `None` if the header lacks it.
    let mut sums: Vec<Option<Decimal>> = columns.summed.iter().map(|c| c.map(|_| Decimal::ZERO)).collect();
    let mut currency: Option<Currency> = None;
    let mut summary: Option<(Header, csv::StringRecord, usize)> = None;

    while let Some(record) = records.next() {
        let record = record.map_err(|e| at.error(&e))?;
        let line = at.record(&record);
        let fields: Vec<String> = record.iter().map(clean_field).collect();
        if fields.first().map(String::as_str) == Some(ROW_COUNT_LABEL) {
            let labels = Header { line, names: fields };
            let values = match records.next() {
                Some(Ok(values)) => values,
                Some(Err(e)) => return Err(at.error(&e)),
                None => {
                    return Err(StatementError::new(
                        line_after_end(text),
                        "the summary header has no values row (truncated file?)",
                    ))
                }
            };
            let values_line = at.record(&values);
            if let Some(extra) = records.next() {
                let extra_line = match extra {
                    Ok(record) => at.record(&record),
                    Err(e) => at.error(&e).line,
                };
                return Err(StatementError::new(extra_line, "unexpected row after the summary"));
            }
            summary = Some((labels, values, values_line));
            break;
        }
        header.check_width(line, fields.len())?;
        let row = parse_row(&columns, &fields, line)?;
        match currency {
            None => currency = Some(row.amount.currency),
            Some(c) if c != row.amount.currency => {
                return Err(StatementError::new(
                    line,
                    format!(
                        "货币种类 {} differs from the bill's {}; one bill has one currency",
                        row.amount.currency.code(),
                        c.code()
                    ),
                ))
            }
            Some(_) => {}
        }
        for (sum, column) in sums.iter_mut().zip(&columns.summed) {
            if let (Some(sum), Some(index)) = (sum.as_mut(), *column) {
                // WeChat prints 0.00 for "none"; an empty cell adds nothing.
                let text = &fields[index];
                if !text.is_empty() {
                    *sum += major(text, line, &header.names[index])?;
                }
            }
        }
        lines.push(row);
    }

    let Some((labels, values, values_line)) = summary else {
        return Err(StatementError::new(
            line_after_end(text),
            "missing the summary (总交易单数,…) that ends a WeChat Pay trade bill: truncated file?",
        ));
    };
    let totals = check_summary(
        &labels,
        &values,
        values_line,
        &lines,
        &sums,
        currency.unwrap_or(Currency::CNY),
    )?;
    Ok(Statement {
        format: FORMAT,
        lines,
        totals: Some(totals),
    })
}

fn parse_row(columns: &Columns, fields: &[String], line: usize) -> Result<StatementLine, StatementError> {
    let field = |index: usize| fields[index].as_str();
    let out_trade_no = field(columns.out_trade_no);
    if out_trade_no.is_empty() {
        return Err(StatementError::new(line, "商户订单号 is empty"));
    }
    let currency = parse_currency_code(field(columns.currency))
        .map_err(|e| StatementError::new(line, format!("货币种类: {e}")))?;
    let traded_at = parse_china_time(field(columns.time), line, "交易时间")?;
    let fee = match columns.fee.map(field).filter(|t| !t.is_empty()) {
        Some(text) => Some(Fee {
            amount_minor: super::amount::parse_fee_minor(text, currency)
                .map_err(|e| StatementError::new(line, format!("手续费: {e}")))?,
            currency,
        }),
        None => None,
    };
    let status = field(columns.status);
    match status {
        "SUCCESS" => {
            let (index, name) = match columns.order_amount {
                Some(index) => (index, "订单金额"),
                None => (columns.settlement, "应结订单金额"),
            };
            let amount = money(amount_minor(field(index), currency, line, name)?, currency, line, name)?;
            Ok(StatementLine {
                line,
                kind: LineKind::Payment,
                out_trade_no: out_trade_no.to_string(),
                channel_trade_no: non_empty(field(columns.channel_trade_no)),
                out_refund_no: None,
                channel_refund_no: None,
                amount,
                fee,
                status: status.to_string(),
                occurred_at: Some(traded_at),
            })
        }
        "REFUND" => {
            let (index, name) = match columns.refund_requested {
                Some(index) => (index, "申请退款金额"),
                None => (columns.refund, "退款金额"),
            };
            let amount = money(amount_minor(field(index), currency, line, name)?, currency, line, name)?;
            let occurred_at = match columns.refund_succeeded_at.map(field).filter(|t| !t.is_empty()) {
                Some(text) => parse_china_time(text, line, "退款成功时间")?,
                None => traded_at,
            };
            let refund_status = field(columns.refund_status);
            Ok(StatementLine {
                line,
                kind: LineKind::Refund,
                out_trade_no: out_trade_no.to_string(),
                channel_trade_no: non_empty(field(columns.channel_trade_no)),
                out_refund_no: non_empty(field(columns.out_refund_no)),
                channel_refund_no: non_empty(field(columns.channel_refund_no)),
                amount,
                fee,
                status: if refund_status.is_empty() {
                    status
                } else {
                    refund_status
                }
                .to_string(),
                occurred_at: Some(occurred_at),
            })
        }
        other => Err(StatementError::new(
            line,
            format!("交易状态 {other:?} is neither SUCCESS nor REFUND"),
        )),
    }
}

fn check_summary(
    labels: &Header,
    values: &csv::StringRecord,
    line: usize,
    lines: &[StatementLine],
    sums: &[Option<Decimal>],
    currency: Currency,
) -> Result<StatementTotals, StatementError> {
    let values: Vec<String> = values.iter().map(clean_field).collect();
    labels.check_width(line, values.len())?;
    let mut items = Vec::with_capacity(values.len());
    for (label, text) in labels.names.iter().zip(&values) {
        let stated = major(text, line, label)?;
        if label == ROW_COUNT_LABEL {
            let count = u64::try_from(stated)
                .ok()
                .filter(|_| stated.is_integer())
                .ok_or_else(|| StatementError::new(line, format!("{label} {text:?} is not a row count")))?;
            let rows = lines.len() as u64;
            if count != rows {
                return Err(StatementError::new(
                    line,
                    format!("summary {label} says {count} rows but the bill has {rows}"),
                ));
            }
            items.push(StatementTotal {
                line,
                label: label.clone(),
                value: TotalValue::Count(count),
                verified: true,
            });
            continue;
        }
        let checked = SUMMED
            .iter()
            .position(|(names, _)| names.contains(&label.as_str()))
            .and_then(|i| sums[i]);
        if let Some(sum) = checked {
            if sum != stated {
                return Err(StatementError::new(
                    line,
                    format!("summary {label} says {text} but the rows add up to {sum}"),
                ));
            }
        }
        items.push(StatementTotal {
            line,
            label: label.clone(),
            value: total_minor(stated, currency, line)?,
            verified: checked.is_some(),
        });
    }
    Ok(StatementTotals { items })
}
