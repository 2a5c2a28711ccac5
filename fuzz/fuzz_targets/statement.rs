//! Settlement statement files (a channel's download, or an operator's file): every format's
//! parser and the format detection, on arbitrary bytes. A parser may refuse; it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payledger_channel_adapters::statement::{detect, parse, StatementFormat};

const FORMATS: [StatementFormat; 3] = [
    StatementFormat::Generic,
    StatementFormat::WechatPayTradeBill,
    StatementFormat::AlipayTradeStatement,
];

fuzz_target!(|bytes: &[u8]| {
    let _ = detect(bytes);
    for format in FORMATS {
        if let Err(e) = parse(format, bytes) {
            assert!(e.line >= 1, "an error names its line");
        }
    }
});
