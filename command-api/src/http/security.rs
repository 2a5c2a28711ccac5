//! Response headers that tell browsers what a page may do (OWASP Secure Headers).
//!
//! Every response carries [`layer`]'s headers unless its handler set its own:
//! `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'` (JSON needs nothing
//! else, and no page of ours may be framed), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` (the sandbox pay page's URL carries its token) and
//! `X-Frame-Options: DENY` (for browsers without `frame-ancestors`).
//!
//! The HTML pages set a policy of their own: the sandbox pay page allows only its own inline
//! script and style, by a per-response nonce ([`pay_page_csp`]); the API reference at `/docs`
//! allows its viewer script from this server and its inline scripts by hash ([`docs_csp`]).

use axum::http::{header, HeaderValue};
use axum::Router;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy of every response that sets none: nothing may load, nothing may frame it.
pub const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Adds the default headers to every response of `router` that lacks them.
pub fn layer<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEFAULT_CSP),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
}

/// A fresh nonce for one response's `script-src`/`style-src`: 128 random bits, base64.
pub fn nonce() -> String {
    let mut bytes = [0_u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The sandbox pay page's policy: its inline script and style by `nonce`, requests only to this
/// server (the POST of the buttons), no forms, no base, no framing.
pub fn pay_page_csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The `/docs` policy for `html`: scripts from this server and the page's inline scripts by
/// their SHA-256 (the page is built once, so its hashes are fixed); styles inline (the viewer
/// injects its own); data: images and fonts; requests only to this server; no framing.
pub fn docs_csp(html: &str) -> String {
    let hashes: Vec<String> = inline_scripts(html)
        .map(|body| {
            let digest = Sha256::digest(body.as_bytes());
            format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
        })
        .collect();
    format!(
        "default-src 'none'; script-src 'self' {}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        hashes.join(" ")
    )
}

/// The text of each `<script …>…</script>` of `html` that has no `src`.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    let mut rest = html;
    std::iter::from_fn(move || loop {
        let start = rest.find("<script")?;
        let open_end = start + rest[start..].find('>')?;
        let tag = &rest[start..open_end];
        let body_start = open_end + 1;
        let body_end = body_start + rest[body_start..].find("</script>")?;
        let body = &rest[body_start..body_end];
        rest = &rest[body_end + "</script>".len()..];
        if !tag.contains("src=") {
            return Some(body);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_hashed_and_sourced_ones_are_not() {
        let html =
            r#"<script src="/docs/scalar.js"></script><p>x</p><script id="c">let a = 1;</script><script>b()</script>"#;
        let found: Vec<&str> = inline_scripts(html).collect();
        assert_eq!(found, vec!["let a = 1;", "b()"]);
        let csp = docs_csp(html);
        // SHA-256 of "b()", base64.
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"b()"));
        assert!(csp.contains(&format!("'sha256-{expected}'")), "{csp}");
        assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
    }

    #[test]
    fn nonces_differ_and_fill_the_pay_page_policy() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        let csp = pay_page_csp(&a);
        assert!(csp.contains(&format!("script-src 'nonce-{a}'")), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }
}
