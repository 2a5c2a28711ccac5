//! `POST /v1/callbacks/sandbox`: the sandbox channel's `verify_callback` on arbitrary headers and
//! bodies, and on arbitrary bodies that carry a valid signature (so the JSON after the signature
//! check is reached).
#![no_main]

use arbitrary::Arbitrary;
use chrono::Utc;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use payledger_channel_adapters::sandbox::{SandboxChannel, SIGNATURE_HEADER};
use payledger_channel_adapters::Channel;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// Sign the body with the channel's secret (else send `signature` as it is).
    sign: bool,
    signature: &'a str,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let channel = SandboxChannel::new("http://127.0.0.1:1", b"fuzz-secret");
    let signature = if input.sign {
        format!("v1={}", channel.sign(input.body))
    } else {
        input.signature.to_string()
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&signature) {
        headers.insert(SIGNATURE_HEADER, v);
    }
    let result = channel.verify_callback(&headers, input.body, Utc::now());
    if !input.sign {
        // Only our own signature opens the door.
        assert!(result.is_err() || signature == format!("v1={}", channel.sign(input.body)));
    }
    let _ = channel.answer_callback(result.map(|_| ()).map_err(|e| e.to_string()));
});
