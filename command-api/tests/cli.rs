//! The real `payledger` binary, as a new user runs it: the embedded default (no DATABASE_URL)
//! in an empty directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn payledger(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_payledger"));
    c.current_dir(dir).env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    c
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn merchants_add_prints_credentials_and_refuses_duplicates_and_bad_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = payledger(dir.path())
        .args(["merchants", "add", "shop_1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(creds["merchant_id"], "shop_1");
    assert!(creds["test_api_key"].as_str().unwrap().starts_with("plk_test_"));
    assert!(creds["live_api_key"].as_str().unwrap().starts_with("plk_live_"));
    assert!(creds["webhook_secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(
        dir.path().join("payledger.db").exists(),
        "the embedded default is ./payledger.db"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = std::fs::metadata(dir.path().join("payledger.key")).expect("./payledger.key, created");
        assert_eq!(key.permissions().mode() & 0o777, 0o600, "the secrets key is private");
    }
    // From another directory, on the same (now sealed) database: refused, and no new key made.
    let elsewhere = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("payledger.db").display());
    let stray = payledger(elsewhere.path())
        .args(["--database-url", &url, "merchants", "add", "shop_2"])
        .output()
        .unwrap();
    assert!(!stray.status.success());
    let stderr = String::from_utf8_lossy(&stray.stderr);
    assert!(stderr.contains("already sealed"), "{stderr}");
    assert!(
        !elsewhere.path().join("payledger.key").exists(),
        "no stray key is created"
    );

    let dup = payledger(dir.path())
        .args(["merchants", "add", "shop_1"])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // A new test key replaces the old one; an unknown merchant is a clear error.
    let rotated = payledger(dir.path())
        .args(["merchants", "test-key", "shop_1"])
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let rotated: Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert!(rotated["test_api_key"].as_str().unwrap().starts_with("plk_test_"));
    assert_ne!(rotated["test_api_key"], creds["test_api_key"]);
    let unknown = payledger(dir.path())
        .args(["merchants", "test-key", "nobody"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no merchant \"nobody\""));

    let bad = payledger(dir.path())
        .args(["merchants", "add", "bad id"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("merchant_id"));

    let migrate = payledger(dir.path()).arg("migrate").output().unwrap();
    assert!(migrate.status.success(), "migrations are idempotent");
}

#[tokio::test]
async fn serve_answers_an_authenticated_merchant() {
    let dir = tempfile::tempdir().unwrap();
    let out = payledger(dir.path())
        .args(["merchants", "add", "shop"])
        .output()
        .unwrap();
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut child = payledger(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let base = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.ok()?;
            if let Some(rest) = line.strip_prefix("payledger listening on ") {
                return rest.split_whitespace().next().map(str::to_string);
            }
        }
        None
    });
    let base = tokio::time::timeout(Duration::from_secs(30), base)
        .await
        .expect("server announced its address")
        .unwrap()
        .expect("listening line");

    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let created = http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(creds["test_api_key"].as_str().unwrap())
        .json(&serde_json::json!({"out_trade_no": "T1", "amount": 100, "currency": "CNY", "channel": "sandbox", "subject": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let unauthorized = http.get(format!("{base}/v1/orders")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    drop(server);
}

#[test]
fn replay_and_reconcile_run_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let replay = payledger(dir.path())
        .args(["replay", "--format", "json"])
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let reports: Value = serde_json::from_slice(&replay.stdout).unwrap();
    let names: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["projection"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["order_view", "journal"]);

    let unknown = payledger(dir.path())
        .args(["replay", "--projection", "nope"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("known: order_view, journal"));

    let verify = payledger(dir.path()).args(["reconcile", "--verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("clean"));

    // A statement with a bad amount: a clear error naming the line, exit code non-zero.
    let file = dir.path().join("statement.csv");
    std::fs::write(
        &file,
        "type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at\n\
         payment,o1,t1,,,12.5,CNY,,SUCCESS,2026-11-20T10:00:00Z\n",
    )
    .unwrap();
    let bad = payledger(dir.path())
        .args([
            "reconcile",
            "--statement",
            file.to_str().unwrap(),
            "--channel",
            "sandbox",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");

    // A statement naming a payment the ledger never saw: reported, exit code 1.
    std::fs::write(
        &file,
        "type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at\n\
         payment,o1,t1,,,1250,CNY,,SUCCESS,2026-11-20T10:00:00Z\n",
    )
    .unwrap();
    let missing = payledger(dir.path())
        .args([
            "reconcile",
            "--statement",
            file.to_str().unwrap(),
            "--channel",
            "sandbox",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        missing.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let report: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(report["date"], "2026-11-20");
    assert_eq!(report["discrepancies"][0]["kind"], "missing_in_ledger");
    assert_eq!(report["discrepancies"][0]["statement_amount_minor"], 1250);
}

/// Runs `payledger args…` in `dir` with backtraces asked for, as many developer machines have
/// them; returns (exit code, stderr).
fn run_with_backtrace(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = payledger(dir)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn user_errors_print_their_cause_without_a_backtrace_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let statement = dir.path().join("bad.csv");
    std::fs::write(
        &statement,
        "type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at\n\
         payment,o1,t1,,,12.5,CNY,,SUCCESS,2026-11-20T10:00:00Z\n",
    )
    .unwrap();
    let config = dir.path().join("payledger.toml");
    std::fs::write(&config, "[wechatpay\nmch_id = 1\n").unwrap();
    let statement = statement.to_str().unwrap();
    let config = config.to_str().unwrap();
    let open_key = dir.path().join("open.key");
    std::fs::write(&open_key, "k1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let open_key = open_key.to_str().unwrap();

    let cases: [(&str, Vec<&str>, i32, &str); 6] = [
        (
            "a world-readable secrets key file",
            vec!["--secrets-key-file", open_key, "merchants", "add", "shop_9"],
            1,
            "chmod 600",
        ),
        (
            "a malformed statement",
            vec!["reconcile", "--statement", statement, "--channel", "sandbox"],
            1,
            "line 2",
        ),
        (
            "a statement that does not exist",
            vec!["reconcile", "--statement", "no-such.csv", "--channel", "sandbox"],
            1,
            "no-such.csv",
        ),
        (
            "a configuration file that does not parse",
            vec!["serve", "--listen", "127.0.0.1:0", "--config", config],
            1,
            "payledger.toml",
        ),
        (
            "an unreachable database",
            vec![
                "--database-url",
                "postgres://postgres@127.0.0.1:1/none?sslmode=disable",
                "migrate",
            ],
            1,
            "connecting to the database",
        ),
        // clap's own usage error: exit code 2.
        (
            "a bad flag value",
            vec!["serve", "--listen", "not-an-address"],
            2,
            "--listen",
        ),
    ];
    for (what, args, code, says) in cases {
        let (got, stderr) = run_with_backtrace(dir.path(), &args);
        assert_eq!(got, Some(code), "{what}: exit code; stderr:\n{stderr}");
        assert!(stderr.contains(says), "{what}: the message names {says:?}:\n{stderr}");
        assert!(
            !stderr.to_lowercase().contains("backtrace"),
            "{what}: a user error is not a crash, no backtrace:\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "{what}: a user error does not panic:\n{stderr}"
        );
    }
}

/// The flag and its default reach the serving pools' configuration.
#[test]
fn the_flag_sets_the_serving_pools_statement_timeout() {
    use clap::Parser;
    let config = |args: &[&str]| {
        let cli =
            payledger_command_api::cli::Cli::try_parse_from(["payledger", "serve"].iter().chain(args)).expect("parses");
        let payledger_command_api::cli::Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        serve.into_config(None).expect("config").pools.statement_timeout_ms
    };
    assert_eq!(config(&[]), payledger_store::db::STATEMENT_TIMEOUT_MS_DEFAULT);
    assert_eq!(payledger_store::db::STATEMENT_TIMEOUT_MS_DEFAULT, 30_000);
    assert_eq!(config(&["--db-statement-timeout", "250ms"]), 250);
    assert_eq!(config(&["--db-statement-timeout", "0s"]), 0);
}
