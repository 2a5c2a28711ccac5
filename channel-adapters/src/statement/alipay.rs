//! Alipay trade statement (业务明细).
//!
//! Source: Alipay open platform `alipay.data.dataservice.bill.downloadurl.query` with
//! `bill_type=trade` returns `bill_download_url`, a zip holding `…_业务明细.csv` (this file) and
//! `…_业务明细(汇总).csv`; the caller extracts the 业务明细 file. Amounts are in yuan (CNY), from
//! the merchant's side (refunds negative); times are China Standard Time.
//!
//! Layout (GBK, `\n` or `\r\n`):
//! ```text
//! #支付宝业务明细查询
//! #账号：[20880211096256330156]
//! #起始日期：[2019年09月16日 00:00:00]   终止日期：[2019年09月17日 00:00:00]
//! #-----------------------------------------业务明细列表----------------------------------------
//! 支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注
//! 2019091622001458860515315453\t,order-1\t,交易\t,…,2019-09-16 10:55:16,2019-09-16 10:55:23,…,0.01,0.01,…
//! 2019091622001458860515315453\t,order-1\t,退款\t,…,2019-09-16 10:55:16,2019-09-16 10:56:48,…,-0.01,-0.01,…,refund-1\t,0.00,0.00,…
//! #-----------------------------------------业务明细列表结束------------------------------------
//! #交易合计：1笔，商家实收共0.01元，商家优惠共0.00元
//! #退款合计：1笔，商家实收退款共-0.01元，商家优惠退款共0.00元
//! #导出时间：[2019年09月17日 05:46:49]
//! ```
//! Fields carry trailing tabs (Alipay's way of keeping long numbers as text); they are trimmed.
//! Header names are compared with full-width parentheses folded to ASCII, so `订单金额(元)` also
//! matches.
//!
//! Columns are located by name. Required: 支付宝交易号, 商户订单号, 业务类型, 完成时间, 订单金额（元）.
//! Used when present: 退款批次号/请求号, 服务费（元）, 商家实收（元）, 商家优惠（元）.
//!
//! Rows, by 业务类型:
//! - `交易` → [`LineKind::Payment`]: amount = 订单金额（元）, which must be positive.
//! - `退款` → [`LineKind::Refund`]: amount = −订单金额（元） (the file prints refunds negative; a
//!   positive one is an error), out_refund_no = 退款批次号/请求号 (the merchant's
//!   `out_request_no`). Alipay has no separate refund id: channel_refund_no is `None`.
//! - anything else is an error.
//!
//! status = the 业务类型 text; occurred_at = 完成时间 (for a refund, the refund's time; 创建时间 is
//! the original trade's), `None` if empty. Fee = −服务费（元）: the file states the service fee from
//! the merchant's side (a charge is money out), [`super::Fee`] counts a charge positive.
//!
//! Structure checks: the first line is the title `#支付宝业务明细查询` (the 汇总 file's
//! `#支付宝业务汇总查询` is refused by name), the header follows the `#` lines, and the end
//! marker `#…业务明细列表结束…` must follow the rows (a file without it is truncated); no rows
//! may follow it. Lines starting `#` are comments otherwise.
//!
//! Totals: `#交易合计：N笔，商家实收共X元，商家优惠共Y元` and `#退款合计：N笔，商家实收退款共X元，
//! 商家优惠退款共Y元`, each optional. Checked: the count against the rows of that 业务类型, 商家实收 /
//! 商家实收退款 against the sum of 商家实收（元）, 商家优惠 / 商家优惠退款 against 商家优惠（元）, over those
//! rows. Labels are `交易合计:笔`, `交易合计:商家实收`, …; other parts are kept, unchecked.

use payledger_domain::Currency;
use rust_decimal::Decimal;

use super::{
    amount_minor, check_not_empty_or_archive, csv_reader, major, money, non_empty, parse_china_time, strip_utf8_bom,
    total_minor, Fee, Header, LineCounter, LineKind, Statement, StatementError, StatementFormat, StatementLine,
    StatementTotal, StatementTotals, TotalValue,
};

const FORMAT: StatementFormat = StatementFormat::AlipayTradeStatement;
const TITLE: &str = "#支付宝业务明细查询";
const SUMMARY_FILE_TITLE: &str = "#支付宝业务汇总查询";
const END_MARKER: &str = "业务明细列表结束";
const PAYMENT_TYPE: &str = "交易";
const REFUND_TYPE: &str = "退款";
/// Alipay statements are CNY.
const CURRENCY: Currency = Currency::CNY;

/// A field without surrounding spaces and Alipay's trailing tab.
fn clean_field(field: &str) -> &str {
    field.trim()
}

/// A header name with full-width parentheses folded to ASCII.
fn header_name(field: &str) -> String {
    clean_field(field).replace('（', "(").replace('）', ")")
}

struct Columns {
    channel_trade_no: usize,
    out_trade_no: usize,
    business_type: usize,
    completed_at: usize,
    order_amount: usize,
    out_refund_no: Option<usize>,
    service_fee: Option<usize>,
    merchant_received: Option<usize>,
    merchant_discount: Option<usize>,
}

impl Columns {
    fn locate(header: &Header) -> Result<Self, StatementError> {
        Ok(Self {
            channel_trade_no: header.require(&["支付宝交易号"], FORMAT)?,
            out_trade_no: header.require(&["商户订单号"], FORMAT)?,
            business_type: header.require(&["业务类型"], FORMAT)?,
            completed_at: header.require(&["完成时间"], FORMAT)?,
            order_amount: header.require(&["订单金额(元)"], FORMAT)?,
            out_refund_no: header.find(&["退款批次号/请求号"]),
            service_fee: header.find(&["服务费(元)"]),
            merchant_received: header.find(&["商家实收(元)"]),
            merchant_discount: header.find(&["商家优惠(元)"]),
        })
    }
}

/// Counts and sums of one 业务类型, to check the `#…合计` lines against.
#[derive(Default)]
struct KindSums {
    rows: u64,
    merchant_received: Decimal,
    merchant_discount: Decimal,
}

/// Parses an Alipay 业务明细 statement (see the module docs for the layout and decisions).
///
/// # Errors
/// [`StatementError`]: bytes that are not GBK, a UTF-8 file, a missing title, header column or
/// end marker, a row with another field count than the header, an unknown 业务类型, an amount
/// with the wrong sign or more than 2 decimals, a bad 完成时间, rows after the end marker, a
/// `#…合计` line that does not parse or disagrees with the rows (the error names that line).
pub fn parse(bytes: &[u8]) -> Result<Statement, StatementError> {
    check_not_empty_or_archive(bytes)?;
    let lines = decode_gbk_lines(bytes)?;
    // The piece after a final line break is not a line.
    let line_count = lines.len() - usize::from(lines.last().is_some_and(String::is_empty));

    let title_index = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
    let title = lines.get(title_index).map_or("", |l| l.trim());
    if title.starts_with(SUMMARY_FILE_TITLE) {
        return Err(StatementError::new(
            title_index + 1,
            "this is the 业务汇总 (summary) file; pass the 业务明细 (detail) file",
        ));
    }
    if !title.starts_with(TITLE) {
        return Err(StatementError::new(
            title_index + 1,
            format!("expected the title line {TITLE} of an Alipay 业务明细 statement (GBK-encoded)"),
        ));
    }
    let end_index = lines
        .iter()
        .position(|l| l.starts_with('#') && l.contains(END_MARKER))
        .ok_or_else(|| {
            StatementError::new(
                line_count + 1,
                format!("missing the end marker #…{END_MARKER}… after the rows: truncated file?"),
            )
        })?;
    let end_line = end_index + 1;

    // The CSV reader sees every comment line as an empty line (which it skips), so record
    // positions stay the file's line numbers and a quote in a comment cannot confuse it.
    let csv_text: String = lines
        .iter()
        .map(|l| if l.starts_with('#') { "" } else { l.as_str() })
        .collect::<Vec<_>>()
        .join("\n");
    let mut at = LineCounter::new(&csv_text);
    let mut records = csv_reader(&csv_text, true).into_records();

    let header_record = match records.next() {
        Some(Ok(record)) => record,
        Some(Err(e)) => return Err(at.error(&e)),
        None => {
            return Err(StatementError::new(
                end_line,
                "missing the column header line before the end marker",
            ))
        }
    };
    let header = Header {
        line: at.record(&header_record),
        names: header_record.iter().map(header_name).collect(),
    };
    if header.line > end_line {
        return Err(StatementError::new(
            header.line,
            "the column header comes after the end marker",
        ));
    }
    let columns = Columns::locate(&header)?;

    let mut statement_lines = Vec::new();
    let mut payments = KindSums::default();
    let mut refunds = KindSums::default();
    for record in records {
        let record = record.map_err(|e| at.error(&e))?;
        let line = at.record(&record);
        if line > end_line {
            return Err(StatementError::new(
                line,
                format!("row after the end marker (line {end_line})"),
            ));
        }
        let fields: Vec<&str> = record.iter().map(clean_field).collect();
        header.check_width(line, fields.len())?;
        let row = parse_row(&columns, &fields, line)?;
        let sums = match row.kind {
            LineKind::Payment => &mut payments,
            LineKind::Refund => &mut refunds,
        };
        sums.rows += 1;
        if let Some(index) = columns.merchant_received {
            sums.merchant_received += major(fields[index], line, "商家实收（元）")?;
        }
        if let Some(index) = columns.merchant_discount {
            sums.merchant_discount += major(fields[index], line, "商家优惠（元）")?;
        }
        statement_lines.push(row);
    }

    let mut items = Vec::new();
    for (index, text) in lines.iter().enumerate().skip(end_index + 1) {
        let summary = text.trim_start_matches('#');
        let (name, sums) = if summary.starts_with("交易合计") {
            ("交易合计", &payments)
        } else if summary.starts_with("退款合计") {
            ("退款合计", &refunds)
        } else {
            continue;
        };
        items.extend(check_summary_line(summary, name, sums, &columns, index + 1)?);
    }
    Ok(Statement {
        format: FORMAT,
        lines: statement_lines,
        totals: (!items.is_empty()).then_some(StatementTotals { items }),
    })
}

/// Decodes each line from GBK, refusing malformed bytes with the line they are on. Splitting on
/// `\n` before decoding is safe: GBK trail bytes are 0x40..=0xFE, never 0x0A.
fn decode_gbk_lines(bytes: &[u8]) -> Result<Vec<String>, StatementError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") || std::str::from_utf8(bytes).is_ok_and(|t| t.contains(TITLE)) {
        return Err(StatementError::new(
            1,
            "the file is UTF-8; Alipay statements are GBK as downloaded (do not re-save them)",
        ));
    }
    let bytes = strip_utf8_bom(bytes);
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(index, raw)| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            encoding_rs::GBK
                .decode_without_bom_handling_and_without_replacement(raw)
                .map(|text| text.into_owned())
                .ok_or_else(|| {
                    StatementError::new(index + 1, "not valid GBK: is this an Alipay statement as downloaded?")
                })
        })
        .collect()
}

fn parse_row(columns: &Columns, fields: &[&str], line: usize) -> Result<StatementLine, StatementError> {
    let out_trade_no = fields[columns.out_trade_no];
    if out_trade_no.is_empty() {
        return Err(StatementError::new(line, "商户订单号 is empty"));
    }
    let business_type = fields[columns.business_type];
    let kind = match business_type {
        PAYMENT_TYPE => LineKind::Payment,
        REFUND_TYPE => LineKind::Refund,
        other => {
            return Err(StatementError::new(
                line,
                format!("业务类型 {other:?} is neither {PAYMENT_TYPE} nor {REFUND_TYPE}"),
            ))
        }
    };
    let stated = amount_minor(fields[columns.order_amount], CURRENCY, line, "订单金额（元）")?;
    let amount_minor = match kind {
        LineKind::Payment if stated > 0 => stated,
        LineKind::Refund if stated < 0 => stated.saturating_neg(),
        _ => {
            let expected = if kind == LineKind::Payment {
                "positive"
            } else {
                "negative"
            };
            return Err(StatementError::new(
                line,
                format!(
                    "订单金额（元） {} must be {expected} on a {business_type} row",
                    fields[columns.order_amount]
                ),
            ));
        }
    };
    let fee = match columns.service_fee.map(|i| fields[i]).filter(|t| !t.is_empty()) {
        Some(text) => Some(Fee {
            amount_minor: -super::amount::parse_fee_minor(text, CURRENCY)
                .map_err(|e| StatementError::new(line, format!("服务费（元）: {e}")))?,
            currency: CURRENCY,
        }),
        None => None,
    };
    let completed_at = fields[columns.completed_at];
    let occurred_at = if completed_at.is_empty() {
        None
    } else {
        Some(parse_china_time(completed_at, line, "完成时间")?)
    };
    Ok(StatementLine {
        line,
        kind,
        out_trade_no: out_trade_no.to_string(),
        channel_trade_no: non_empty(fields[columns.channel_trade_no]),
        out_refund_no: match kind {
            LineKind::Refund => columns.out_refund_no.and_then(|i| non_empty(fields[i])),
            LineKind::Payment => None,
        },
        channel_refund_no: None,
        amount: money(amount_minor, CURRENCY, line, "订单金额（元）")?,
        fee,
        status: business_type.to_string(),
        occurred_at,
    })
}

/// Parses and checks `交易合计：6笔，商家实收共0.06元，商家优惠共0.00元` (without the `#`).
fn check_summary_line(
    summary: &str,
    name: &str,
    sums: &KindSums,
    columns: &Columns,
    line: usize,
) -> Result<Vec<StatementTotal>, StatementError> {
    let malformed = || {
        StatementError::new(
            line,
            format!("malformed {name} line: expected {name}：N笔，商家实收共X元，…"),
        )
    };
    let (_, parts) = summary
        .split_once('：')
        .or_else(|| summary.split_once(':'))
        .ok_or_else(malformed)?;
    let mut items = Vec::new();
    for part in parts.split(['，', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(count_text) = part.strip_suffix('笔') {
            let count: u64 = count_text.trim().parse().map_err(|_| malformed())?;
            if count != sums.rows {
                return Err(StatementError::new(
                    line,
                    format!("{name} says {count}笔 but the statement has {} such rows", sums.rows),
                ));
            }
            items.push(StatementTotal {
                line,
                label: format!("{name}:笔"),
                value: TotalValue::Count(count),
                verified: true,
            });
            continue;
        }
        let (label, value) = part.split_once('共').ok_or_else(malformed)?;
        let value_text = value.strip_suffix('元').ok_or_else(malformed)?.trim();
        let stated = major(value_text, line, &format!("{name} {label}"))?;
        let checked = match label {
            "商家实收" | "商家实收退款" => {
                Some((columns.merchant_received, sums.merchant_received, "商家实收（元）"))
            }
            "商家优惠" | "商家优惠退款" => {
                Some((columns.merchant_discount, sums.merchant_discount, "商家优惠（元）"))
            }
            _ => None,
        };
        if let Some((column, sum, column_name)) = checked {
            if column.is_none() {
                return Err(StatementError::new(
                    line,
                    format!("{name} states {label} but the header has no {column_name} column to check it against"),
                ));
            }
            if sum != stated {
                return Err(StatementError::new(
                    line,
                    format!("{name} says {label} {value_text}元 but the rows add up to {sum}"),
                ));
            }
        }
        items.push(StatementTotal {
            line,
            label: format!("{name}:{label}"),
            value: total_minor(stated, CURRENCY, line)?,
            verified: checked.is_some(),
        });
    }
    Ok(items)
}
