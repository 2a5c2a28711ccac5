//! Settlement statement parsers: exact lines from realistic files, and every malformed case
//! refused with the line at fault.

use chrono::{DateTime, Utc};
use payledger_channel_adapters::statement::{
    detect, parse, Fee, LineKind, Statement, StatementError, StatementFormat, StatementLine, TotalValue,
};
use payledger_domain::{Currency, Money};
use rust_decimal::Decimal;

const WECHAT: &str = include_str!("fixtures/statements/wechatpay_tradebill_all.csv");
const ALIPAY_UTF8: &str = include_str!("fixtures/statements/alipay_trade_detail.utf8.csv");
const GENERIC: &str = include_str!("fixtures/statements/generic.csv");

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable, "fixture has characters GBK cannot encode");
    bytes.into_owned()
}

fn alipay() -> Vec<u8> {
    gbk(ALIPAY_UTF8)
}

fn utc(text: &str) -> Option<DateTime<Utc>> {
    Some(text.parse().expect("test time"))
}

fn cny(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::CNY).expect("test amount")
}

fn fee(minor: &str) -> Option<Fee> {
    Some(Fee {
        amount_minor: minor.parse().expect("test fee"),
        currency: Currency::CNY,
    })
}

/// `text` with 1-based line `n` replaced by `f(old line)`.
fn edit_line(text: &str, n: usize, f: impl Fn(&str) -> String) -> String {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| if i + 1 == n { f(l) } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` with field `column` (0-based, comma-separated) of line `n` set to `value`.
fn edit_field(text: &str, n: usize, column: usize, value: &str) -> String {
    edit_line(text, n, |l| {
        let mut fields: Vec<&str> = l.split(',').collect();
        fields[column] = value;
        fields.join(",")
    })
}

fn error(format: StatementFormat, bytes: &[u8]) -> StatementError {
    match parse(format, bytes) {
        Ok(statement) => panic!("parsed malformed input: {statement:?}"),
        Err(e) => e,
    }
}

fn assert_error(format: StatementFormat, bytes: &[u8], line: usize, needle: &str) {
    let e = error(format, bytes);
    assert_eq!(e.line, line, "wrong line in {e}");
    assert!(e.message.contains(needle), "{e:?} does not mention {needle:?}");
}

// ---- WeChat Pay trade bill --------------------------------------------------------------------

// Columns of the WeChat fixture, 0-based.
const WX_OUT_TRADE_NO: usize = 6;
const WX_STATUS: usize = 9;
const WX_SETTLEMENT: usize = 12;
const WX_ORDER_AMOUNT: usize = 24;

#[test]
fn wechat_trade_bill_gives_one_exact_line_per_row() {
    let statement = parse(StatementFormat::WechatPayTradeBill, WECHAT.as_bytes()).unwrap();
    assert_eq!(statement.format, StatementFormat::WechatPayTradeBill);
    let expected = vec![
        StatementLine {
            line: 2,
            kind: LineKind::Payment,
            out_trade_no: "order-1001".into(),
            channel_trade_no: Some("4200002101202403010000000001".into()),
            out_refund_no: None,
            channel_refund_no: None,
            amount: cny(1000),
            fee: fee("6"),
            status: "SUCCESS".into(),
            occurred_at: utc("2024-03-01T01:15:02Z"),
        },
        StatementLine {
            line: 3,
            kind: LineKind::Payment,
            out_trade_no: "order-1002".into(),
            channel_trade_no: Some("4200002101202403010000000002".into()),
            out_refund_no: None,
            channel_refund_no: None,
            amount: cny(2550),
            fee: fee("15.3"),
            status: "SUCCESS".into(),
            occurred_at: utc("2024-03-01T03:40:30Z"),
        },
        StatementLine {
            line: 4,
            kind: LineKind::Refund,
            out_trade_no: "order-1001".into(),
            channel_trade_no: Some("4200002101202403010000000001".into()),
            out_refund_no: Some("refund-1001-1".into()),
            channel_refund_no: Some("50300007212024030100000000001".into()),
            amount: cny(400),
            fee: fee("-2.4"),
            status: "SUCCESS".into(),
            occurred_at: utc("2024-03-01T06:20:00Z"),
        },
        StatementLine {
            line: 5,
            kind: LineKind::Payment,
            out_trade_no: "order-1003".into(),
            channel_trade_no: Some("4200002101202403010000000003".into()),
            out_refund_no: None,
            channel_refund_no: None,
            amount: cny(1),
            fee: fee("0.006"),
            status: "SUCCESS".into(),
            // 23:59:59 in China is still the same UTC day, 15:59:59.
            occurred_at: utc("2024-03-01T15:59:59Z"),
        },
        StatementLine {
            line: 6,
            kind: LineKind::Refund,
            out_trade_no: "order-0999".into(),
            channel_trade_no: Some("4200002101202402290000000099".into()),
            out_refund_no: Some("refund-0999-1".into()),
            channel_refund_no: Some("50300007212024030100000000002".into()),
            amount: cny(880),
            fee: fee("-5.28"),
            status: "PROCESSING".into(),
            occurred_at: utc("2024-03-01T08:05:00Z"),
        },
    ];
    assert_eq!(statement.lines, expected);
}

#[test]
fn wechat_summary_is_kept_in_minor_units_and_verified() {
    let statement = parse(StatementFormat::WechatPayTradeBill, WECHAT.as_bytes()).unwrap();
    let totals = statement.totals.expect("WeChat bills have a summary");
    assert_eq!(totals.items.len(), 7);
    assert!(totals.items.iter().all(|t| t.line == 9 && t.verified), "{totals:?}");
    assert_eq!(totals.get("总交易单数").unwrap().value, TotalValue::Count(5));
    assert_eq!(
        totals.get("应结订单总金额").unwrap().value,
        TotalValue::AmountMinor(Decimal::from(3551))
    );
    assert_eq!(
        totals.get("手续费总金额").unwrap().value,
        TotalValue::AmountMinor("13.626".parse().unwrap())
    );
}

#[test]
fn wechat_summary_sum_that_disagrees_is_an_error_on_the_summary_line() {
    let bill = edit_field(WECHAT, 9, 1, "`35.52");
    assert_error(
        StatementFormat::WechatPayTradeBill,
        bill.as_bytes(),
        9,
        "应结订单总金额",
    );
}

#[test]
fn wechat_summary_fee_total_is_checked_to_the_last_decimal() {
    let bill = edit_field(WECHAT, 9, 4, "`0.13627");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 9, "手续费总金额");
}

#[test]
fn wechat_summary_row_count_that_disagrees_is_an_error() {
    let bill = edit_field(WECHAT, 9, 0, "`6");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 9, "总交易单数");
}

#[test]
fn wechat_amount_with_three_decimals_is_refused_on_its_line() {
    let bill = edit_field(WECHAT, 3, WX_ORDER_AMOUNT, "`1.234");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 3, "订单金额");
}

#[test]
fn wechat_amount_with_thousands_separator_is_refused() {
    let bill = edit_field(WECHAT, 3, WX_ORDER_AMOUNT, "\"`1,234.50\"");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 3, "thousands");
}

#[test]
fn wechat_truncated_row_is_refused_with_its_field_count() {
    let bill = edit_line(WECHAT, 4, |l| l.split(',').take(20).collect::<Vec<_>>().join(","));
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 4, "found 20");
}

#[test]
fn wechat_bill_cut_before_the_summary_is_refused_as_truncated() {
    let cut: String = WECHAT.lines().take(6).map(|l| format!("{l}\n")).collect();
    assert_error(StatementFormat::WechatPayTradeBill, cut.as_bytes(), 7, "summary");
    let cut: String = WECHAT.lines().take(8).map(|l| format!("{l}\n")).collect();
    assert_error(StatementFormat::WechatPayTradeBill, cut.as_bytes(), 9, "values row");
}

#[test]
fn wechat_rows_after_the_summary_are_refused() {
    let bill = format!("{WECHAT}{}\n", WECHAT.lines().nth(1).unwrap());
    assert_error(
        StatementFormat::WechatPayTradeBill,
        bill.as_bytes(),
        10,
        "after the summary",
    );
}

#[test]
fn wechat_header_without_out_trade_no_is_refused_on_line_1() {
    let bill = edit_field(WECHAT, 1, WX_OUT_TRADE_NO, "商户单号");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 1, "商户订单号");
}

#[test]
fn wechat_unknown_trade_status_is_refused_not_skipped() {
    let bill = edit_field(WECHAT, 5, WX_STATUS, "`REVOKED");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 5, "REVOKED");
}

#[test]
fn wechat_bad_trade_time_is_refused() {
    let bill = edit_field(WECHAT, 2, 0, "`2024/03/01 09:15:02");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 2, "交易时间");
}

#[test]
fn wechat_zero_order_amount_is_refused() {
    let bill = edit_field(WECHAT, 2, WX_ORDER_AMOUNT, "`0.00");
    assert_error(StatementFormat::WechatPayTradeBill, bill.as_bytes(), 2, "positive");
}

#[test]
fn wechat_bill_in_gbk_is_refused_as_not_utf8() {
    assert_error(StatementFormat::WechatPayTradeBill, &gbk(WECHAT), 1, "UTF-8");
}

#[test]
fn wechat_bom_crlf_and_backticked_header_are_accepted() {
    let header = WECHAT
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(|n| format!("`{n}"))
        .collect::<Vec<_>>();
    let bill = format!(
        "\u{feff}{}",
        edit_line(WECHAT, 1, |_| header.join(",")).replace('\n', "\r\n")
    );
    let statement = parse(StatementFormat::WechatPayTradeBill, bill.as_bytes()).unwrap();
    let plain = parse(StatementFormat::WechatPayTradeBill, WECHAT.as_bytes()).unwrap();
    assert_eq!(statement, plain);
}

#[test]
fn wechat_pre_2018_header_names_are_understood() {
    // The layout before 2018-11: 总金额 instead of 应结订单金额, no 订单金额/申请退款金额 columns,
    // fees printed to 5 decimals, the old summary labels.
    let bill = "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,企业红包金额,微信退款单号,商户退款单号,退款金额,企业红包退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率\n\
`2020-01-04 17:43:52,`wx0e25d797adcdc399,`1314217101,`0,`,`4200000480202001043149128488,`aas,`od-im5M,`JSAPI,`SUCCESS,`BOSH_CREDIT,`CNY,`0.12,`0.00,`0,`0,`0.00,`0.00,`,`,`商品,`,`0.00000,`1.00%\n\
`2020-01-04 18:00:00,`wx0e25d797adcdc399,`1314217101,`0,`,`4200000480202001043149128488,`aas,`od-im5M,`JSAPI,`REFUND,`BOSH_CREDIT,`CNY,`0.00,`0.00,`50300,`rf-1,`0.05,`0.00,`ORIGINAL,`SUCCESS,`商品,`,`0.00000,`1.00%\n\
总交易单数,总交易额,总退款金额,总企业红包退款金额,手续费总金额\n\
`2,`0.12,`0.05,`0.00,`0.00000\n";
    let statement = parse(StatementFormat::WechatPayTradeBill, bill.as_bytes()).unwrap();
    assert_eq!(statement.lines.len(), 2);
    assert_eq!(statement.lines[0].amount, cny(12));
    assert_eq!(statement.lines[0].fee, fee("0"));
    assert_eq!(statement.lines[1].kind, LineKind::Refund);
    assert_eq!(statement.lines[1].amount, cny(5));
    assert!(statement.totals.unwrap().items.iter().all(|t| t.verified));
}

#[test]
fn wechat_settlement_column_still_sums_even_when_order_amount_is_the_line_amount() {
    // 应结订单金额 below 订单金额 (a free coupon): the line keeps the order amount, the summary
    // still checks the settlement sum.
    let bill = edit_field(WECHAT, 2, WX_SETTLEMENT, "`9.00");
    let e = error(StatementFormat::WechatPayTradeBill, bill.as_bytes());
    assert_eq!((e.line, e.message.contains("应结订单总金额")), (9, true), "{e}");
    let fixed = edit_field(&bill, 9, 1, "`34.51");
    let statement = parse(StatementFormat::WechatPayTradeBill, fixed.as_bytes()).unwrap();
    assert_eq!(statement.lines[0].amount, cny(1000));
}

// ---- Alipay 业务明细 -------------------------------------------------------------------------

const ALI_AMOUNT: usize = 11;
const ALI_TYPE: usize = 2;

#[test]
fn alipay_statement_in_gbk_gives_exact_lines() {
    let statement = parse(StatementFormat::AlipayTradeStatement, &alipay()).unwrap();
    assert_eq!(statement.format, StatementFormat::AlipayTradeStatement);
    let expected = vec![
        StatementLine {
            line: 6,
            kind: LineKind::Payment,
            out_trade_no: "order-2001".into(),
            channel_trade_no: Some("2024030122001458860500000001".into()),
            out_refund_no: None,
            channel_refund_no: None,
            amount: cny(1230),
            fee: fee("7"),
            status: "交易".into(),
            occurred_at: utc("2024-03-01T02:00:05Z"),
        },
        StatementLine {
            line: 7,
            kind: LineKind::Payment,
            out_trade_no: "order-2002".into(),
            channel_trade_no: Some("2024030122001458860500000002".into()),
            out_refund_no: None,
            channel_refund_no: None,
            amount: cny(10_000),
            fee: fee("57"),
            status: "交易".into(),
            occurred_at: utc("2024-03-01T04:31:10Z"),
        },
        StatementLine {
            line: 8,
            kind: LineKind::Refund,
            out_trade_no: "order-2001".into(),
            channel_trade_no: Some("2024030122001458860500000001".into()),
            out_refund_no: Some("refund-2001-1".into()),
            channel_refund_no: None,
            amount: cny(230),
            fee: fee("-1"),
            status: "退款".into(),
            occurred_at: utc("2024-03-01T07:30:00Z"),
        },
    ];
    assert_eq!(statement.lines, expected);
}

#[test]
fn alipay_totals_lines_are_kept_and_verified() {
    let statement = parse(StatementFormat::AlipayTradeStatement, &alipay()).unwrap();
    let totals = statement.totals.unwrap();
    let labels: Vec<(&str, usize, bool)> = totals
        .items
        .iter()
        .map(|t| (t.label.as_str(), t.line, t.verified))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("交易合计:笔", 10, true),
            ("交易合计:商家实收", 10, true),
            ("交易合计:商家优惠", 10, true),
            ("退款合计:笔", 11, true),
            ("退款合计:商家实收退款", 11, true),
            ("退款合计:商家优惠退款", 11, true),
        ]
    );
    assert_eq!(
        totals.get("交易合计:商家实收").unwrap().value,
        TotalValue::AmountMinor(Decimal::from(10_730))
    );
    assert_eq!(
        totals.get("退款合计:商家实收退款").unwrap().value,
        TotalValue::AmountMinor(Decimal::from(-230))
    );
}

#[test]
fn alipay_total_that_disagrees_is_an_error_on_its_line() {
    let text = ALIPAY_UTF8.replace("商家实收共107.30元", "商家实收共107.31元");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 10, "商家实收");
    let text = ALIPAY_UTF8.replace("#退款合计：1笔", "#退款合计：2笔");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 11, "2笔");
}

#[test]
fn alipay_statement_saved_as_utf8_is_refused() {
    assert_error(
        StatementFormat::AlipayTradeStatement,
        ALIPAY_UTF8.as_bytes(),
        1,
        "UTF-8",
    );
}

#[test]
fn alipay_bytes_that_are_not_gbk_are_refused_on_their_line() {
    let mut bytes = alipay();
    let line_7 = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(5).unwrap().0 + 1;
    // 0x81 starts a two-byte GBK character; 0x20 can never be its second byte.
    bytes.splice(line_7..line_7, [0x81, 0x20]);
    assert_error(StatementFormat::AlipayTradeStatement, &bytes, 7, "GBK");
}

#[test]
fn alipay_amount_with_three_decimals_is_refused() {
    let text = edit_field(ALIPAY_UTF8, 7, ALI_AMOUNT, "100.001");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 7, "订单金额");
}

#[test]
fn alipay_refund_with_a_positive_amount_is_refused() {
    let text = edit_field(ALIPAY_UTF8, 8, ALI_AMOUNT, "2.30");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 8, "negative");
}

#[test]
fn alipay_unknown_business_type_is_refused() {
    let text = edit_field(ALIPAY_UTF8, 6, ALI_TYPE, "转账\t");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 6, "转账");
}

#[test]
fn alipay_truncated_row_is_refused() {
    let text = edit_line(ALIPAY_UTF8, 7, |l| l.split(',').take(12).collect::<Vec<_>>().join(","));
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 7, "found 12");
}

#[test]
fn alipay_statement_without_end_marker_is_refused_as_truncated() {
    let cut: String = ALIPAY_UTF8.lines().take(7).map(|l| format!("{l}\n")).collect();
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&cut), 8, "end marker");
}

#[test]
fn alipay_header_without_order_amount_is_refused() {
    let text = edit_field(ALIPAY_UTF8, 5, ALI_AMOUNT, "金额");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 5, "订单金额(元)");
}

#[test]
fn alipay_summary_file_is_refused_by_name() {
    let text = ALIPAY_UTF8.replace("#支付宝业务明细查询", "#支付宝业务汇总查询");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 1, "汇总");
}

#[test]
fn alipay_rows_after_the_end_marker_are_refused() {
    let row = ALIPAY_UTF8.lines().nth(5).unwrap();
    let text = format!("{ALIPAY_UTF8}{row}\n");
    assert_error(StatementFormat::AlipayTradeStatement, &gbk(&text), 13, "end marker");
}

// ---- generic ----------------------------------------------------------------------------------

#[test]
fn generic_csv_gives_exact_lines() {
    let statement = parse(StatementFormat::Generic, GENERIC.as_bytes()).unwrap();
    assert_eq!(statement.totals, None);
    let expected = vec![
        StatementLine {
            line: 2,
            kind: LineKind::Payment,
            out_trade_no: "order-3001".into(),
            channel_trade_no: Some("ch_pay_1".into()),
            out_refund_no: None,
            channel_refund_no: None,
            amount: cny(1230),
            fee: fee("7"),
            status: "SUCCESS".into(),
            occurred_at: utc("2024-03-01T02:00:01Z"),
        },
        StatementLine {
            line: 3,
            kind: LineKind::Payment,
            out_trade_no: "order-3002".into(),
            channel_trade_no: None,
            out_refund_no: None,
            channel_refund_no: None,
            amount: Money::new(500, Currency::USD).unwrap(),
            fee: None,
            status: "SUCCESS".into(),
            occurred_at: None,
        },
        StatementLine {
            line: 4,
            kind: LineKind::Refund,
            out_trade_no: "order-3001".into(),
            channel_trade_no: Some("ch_pay_1".into()),
            out_refund_no: Some("refund-3001-1".into()),
            channel_refund_no: Some("ch_ref_1".into()),
            amount: cny(230),
            fee: fee("-1"),
            status: "SUCCESS".into(),
            occurred_at: utc("2024-03-01T04:00:00Z"),
        },
    ];
    assert_eq!(statement.lines, expected);
}

#[test]
fn generic_columns_may_come_in_any_order() {
    let reordered: String = GENERIC
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.reverse();
            format!("{}\n", f.join(","))
        })
        .collect();
    let a = parse(StatementFormat::Generic, reordered.as_bytes()).unwrap();
    let b = parse(StatementFormat::Generic, GENERIC.as_bytes()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn generic_unknown_column_is_refused() {
    let text: String = GENERIC
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l},memo\n")
            } else {
                format!("{l},x\n")
            }
        })
        .collect();
    assert_error(StatementFormat::Generic, text.as_bytes(), 1, "unknown column \"memo\"");
}

#[test]
fn generic_missing_column_is_refused() {
    let text: String = GENERIC
        .lines()
        .map(|l| format!("{}\n", l.rsplit_once(',').unwrap().0))
        .collect();
    assert_error(StatementFormat::Generic, text.as_bytes(), 1, "occurred_at");
}

#[test]
fn generic_row_with_a_missing_field_is_refused_on_its_line() {
    let text = edit_line(GENERIC, 3, |l| l.rsplit_once(',').unwrap().0.to_string());
    assert_error(StatementFormat::Generic, text.as_bytes(), 3, "found 9");
}

#[test]
fn generic_amount_must_be_positive_integer_minor_units() {
    for (bad, needle) in [
        ("12.30", "positive integer"),
        ("0", "positive"),
        ("-5", "positive integer"),
        ("9007199254740992", "exceeds"),
    ] {
        let text = edit_field(GENERIC, 2, 5, bad);
        assert_error(StatementFormat::Generic, text.as_bytes(), 2, needle);
    }
}

#[test]
fn generic_bad_type_currency_and_time_are_refused() {
    let text = edit_field(GENERIC, 4, 0, "chargeback");
    assert_error(StatementFormat::Generic, text.as_bytes(), 4, "chargeback");
    let text = edit_field(GENERIC, 4, 6, "cny");
    assert_error(StatementFormat::Generic, text.as_bytes(), 4, "currency");
    let text = edit_field(GENERIC, 2, 9, "2024-03-01 10:00:01");
    assert_error(StatementFormat::Generic, text.as_bytes(), 2, "RFC 3339");
}

#[test]
fn generic_header_only_is_an_empty_statement() {
    let header = GENERIC.lines().next().unwrap();
    let statement = parse(StatementFormat::Generic, header.as_bytes()).unwrap();
    assert!(statement.lines.is_empty());
}

// ---- every format -----------------------------------------------------------------------------

const ALL_FORMATS: [StatementFormat; 3] = [
    StatementFormat::Generic,
    StatementFormat::WechatPayTradeBill,
    StatementFormat::AlipayTradeStatement,
];

#[test]
fn empty_input_is_refused_on_line_1_by_every_parser() {
    for format in ALL_FORMATS {
        for bytes in [&b""[..], b"\n\n", b"   "] {
            assert_error(format, bytes, 1, "empty");
        }
    }
}

#[test]
fn compressed_downloads_are_refused_with_a_hint() {
    for format in ALL_FORMATS {
        assert_error(format, &[0x1F, 0x8B, 8, 0, 0, 0], 1, "gzip");
        assert_error(format, b"PK\x03\x04rest", 1, "zip");
    }
}

#[test]
fn random_garbage_is_refused_by_every_parser() {
    let garbage: Vec<u8> = (0..4096_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for format in ALL_FORMATS {
        let e = error(format, &garbage);
        assert!(e.line >= 1, "{e}");
    }
}

#[test]
fn a_statement_of_the_wrong_format_is_refused() {
    assert_error(StatementFormat::Generic, WECHAT.as_bytes(), 1, "missing column type");
    assert_error(
        StatementFormat::WechatPayTradeBill,
        GENERIC.as_bytes(),
        1,
        "missing column 交易时间",
    );
    assert_error(
        StatementFormat::AlipayTradeStatement,
        GENERIC.as_bytes(),
        1,
        "#支付宝业务明细查询",
    );
}

#[test]
fn errors_display_their_line() {
    let e = error(
        StatementFormat::WechatPayTradeBill,
        edit_field(WECHAT, 3, WX_ORDER_AMOUNT, "`x").as_bytes(),
    );
    assert!(e.to_string().starts_with("line 3: 订单金额"), "{e}");
}

#[test]
fn detect_recognises_each_format_and_nothing_else() {
    assert_eq!(detect(WECHAT.as_bytes()), Some(StatementFormat::WechatPayTradeBill));
    assert_eq!(detect(&alipay()), Some(StatementFormat::AlipayTradeStatement));
    // A re-saved UTF-8 Alipay file is still recognised, so parse can say what is wrong with it.
    assert_eq!(
        detect(ALIPAY_UTF8.as_bytes()),
        Some(StatementFormat::AlipayTradeStatement)
    );
    assert_eq!(detect(GENERIC.as_bytes()), Some(StatementFormat::Generic));
    assert_eq!(detect(b""), None);
    assert_eq!(detect(b"a,b,c\n1,2,3\n"), None);
    assert_eq!(detect(&[0xFF, 0xFE, 0x00, 0x81]), None);
}

#[test]
fn format_for_channel_and_name() {
    assert_eq!(
        StatementFormat::for_channel("wechatpay"),
        StatementFormat::WechatPayTradeBill
    );
    assert_eq!(
        StatementFormat::for_channel("alipay"),
        StatementFormat::AlipayTradeStatement
    );
    assert_eq!(StatementFormat::for_channel("sandbox"), StatementFormat::Generic);
    assert_eq!(StatementFormat::WechatPayTradeBill.to_string(), "wechatpay-tradebill");
}

fn parse_all(bytes: &[u8]) -> Vec<Result<Statement, StatementError>> {
    let _ = detect(bytes);
    ALL_FORMATS.iter().map(|&f| parse(f, bytes)).collect()
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for result in parse_all(&bytes) {
                if let Err(e) = result {
                    prop_assert!(e.line >= 1);
                }
            }
        }

        #[test]
        fn on_damaged_statements(
            which in 0..3_usize,
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        ) {
            let mut bytes = match which {
                0 => WECHAT.as_bytes().to_vec(),
                1 => alipay(),
                _ => GENERIC.as_bytes().to_vec(),
            };
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            parse_all(&bytes);
        }
    }
}
