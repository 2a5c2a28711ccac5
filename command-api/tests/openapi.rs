//! The OpenAPI document: the checked-in `schemas/openapi.json` is what the code generates (and
//! what `payledger openapi` prints), the server serves it at `/openapi.json` with a docs page at
//! `/docs`, and every operation it lists is a real route.
//!
//! `PAYLEDGER_UPDATE_OPENAPI=1 cargo test -p payledger-command-api --test openapi` rewrites the
//! checked-in file after a deliberate API change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use payledger_command_api::app::{self, ServeConfig};
use payledger_command_api::openapi;
use serde_json::Value;

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json")
}

/// The first line where `a` and `b` differ, for a message a person can act on.
fn first_difference(a: &str, b: &str) -> String {
    for (n, (la, lb)) in a.lines().zip(b.lines()).enumerate() {
        if la != lb {
            return format!("line {}:\n  checked in: {la}\n  generated:  {lb}", n + 1);
        }
    }
    format!(
        "one is longer: {} lines checked in, {} generated",
        a.lines().count(),
        b.lines().count()
    )
}

#[test]
fn checked_in_document_matches_the_code() {
    let generated = openapi::to_pretty_json().unwrap();
    let path = checked_in_path();
    if std::env::var_os("PAYLEDGER_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schemas/openapi.json differs from the document the code generates ({}).\n\
         If the API change is deliberate, regenerate it:\n  \
         cargo run -p payledger-command-api -- openapi > schemas/openapi.json\n\
         or PAYLEDGER_UPDATE_OPENAPI=1 cargo test -p payledger-command-api --test openapi",
        first_difference(&checked_in, &generated)
    );
}

#[test]
fn openapi_subcommand_prints_the_generated_document() {
    let out = Command::new(env!("CARGO_BIN_EXE_payledger"))
        .arg("openapi")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        openapi::to_pretty_json().unwrap()
    );
}

#[test]
fn document_names_the_bearer_scheme_and_problem_json_for_every_error() {
    let doc = serde_json::to_value(openapi::document()).unwrap();
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let merchant = path.starts_with("/v1/") && !path.starts_with("/v1/callbacks/");
            assert_eq!(
                op.get("security").is_some(),
                merchant,
                "{method} {path}: merchant endpoints, and only they, need the API key"
            );
            if merchant {
                assert!(op["responses"].get("401").is_some(), "{method} {path} lacks 401");
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(name) = response["$ref"].as_str() else {
                    continue;
                };
                let name = name.trim_start_matches("#/components/responses/");
                let content = &doc["components"]["responses"][name]["content"];
                assert!(
                    content.get("application/problem+json").is_some(),
                    "{method} {path} {status}: reusable error responses are problem+json"
                );
            }
            if path.starts_with("/v1/") && !path.starts_with("/v1/callbacks/") {
                assert!(
                    op["responses"].get("500").is_some(),
                    "{method} {path}: every database read can fail"
                );
            }
        }
    }
    assert_eq!(
        operations, 23,
        "every handler of command-api/src/http plus /openapi.json, /docs and its script"
    );
}

async fn start() -> (app::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("payledger.db").display());
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = ServeConfig::new(listen, Some(url));
    config.secrets_key = payledger_store::sealed::KeySource::File(dir.path().join("payledger.key"));
    (app::start(config).await.unwrap(), dir)
}

#[tokio::test]
async fn server_serves_the_document_and_a_docs_page() {
    let (server, _dir) = start().await;
    let base = format!("http://{}", server.addr);
    let served: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, serde_json::to_value(openapi::document()).unwrap());

    let docs = reqwest::get(format!("{base}/docs")).await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = docs.text().await.unwrap();
    assert!(html.contains(r#"id="app""#), "the viewer's mount point");
    assert!(html.contains(r#""/v1/orders""#), "the document is embedded in the page");
    assert!(
        html.contains(&format!(r#"src="{}""#, openapi::DOCS_SCRIPT_PATH)),
        "the viewer script comes from this server"
    );
    for outside in [r#"src="http"#, r#"href="http"#, "cdn."] {
        assert!(
            !html.contains(outside),
            "the page loads nothing from outside this server ({outside})"
        );
    }

    let script = reqwest::get(format!("{base}{}", openapi::DOCS_SCRIPT_PATH))
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let script = script.text().await.unwrap();
    assert!(script.len() > 1_000_000, "the whole viewer, {} bytes", script.len());
    assert!(script.contains("createApiReference"), "Scalar's entry point");
    server.shutdown().await;
}

/// Each documented operation reaches a handler: axum's own answers for a route that does not
/// exist are an empty 404 or 405, ours always have a body (or are 204).
#[tokio::test]
async fn every_documented_operation_is_a_route() {
    let (server, _dir) = start().await;
    let base = format!("http://{}", server.addr);
    let doc = serde_json::to_value(openapi::document()).unwrap();
    let client = reqwest::Client::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = format!("{base}{}", path.replace("{channel}", "sandbox").replace(['{', '}'], ""));
        for method in item.as_object().unwrap().keys() {
            let response = client
                .request(method.to_uppercase().parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != 405 && !(status == 404 && body.is_empty()),
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
    server.shutdown().await;
}

/// Where a headless browser is (see [`payledger_testkit::chromium`]).
fn chromium() -> Option<PathBuf> {
    payledger_testkit::chromium("the /docs browser test").map(|(browser, _)| browser)
}

/// Runs headless Chromium on `url` with every host but loopback unresolvable (as on a machine
/// with no internet) and `extra` arguments; returns stdout.
fn chromium_offline(browser: &std::path::Path, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `/docs` renders with no network: the viewer is served by the binary, not a CDN. The rendered
/// page lists the operations; a screenshot goes to `target/ci-artifacts/docs.png`.
#[tokio::test]
async fn docs_page_renders_the_operations_with_no_network() {
    let Some(browser) = chromium() else { return };
    let (server, _dir) = start().await;
    let url = format!("http://{}/docs", server.addr);

    let dom = {
        let (browser, url) = (browser.clone(), url.clone());
        tokio::task::spawn_blocking(move || chromium_offline(&browser, &url, &["--dump-dom"]))
            .await
            .unwrap()
    };
    for rendered in ["Create", "/v1/orders/{order_id}/refunds", "/v1/channels", "payledger"] {
        assert!(
            dom.contains(rendered),
            "the rendered /docs shows {rendered:?}; got {} bytes of DOM:\n{}",
            dom.len(),
            &dom[..dom.len().min(2000)]
        );
    }

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("docs.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || chromium_offline(&browser, &url, &[&arg]))
        .await
        .unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot at {}", shot.display());
    server.shutdown().await;
}
