//! Channel accounts pointing at the simulators, as tests configure them.

use payledger_channel_adapters::simulator::alipay::{AlipaySimulator, SIM_SELLER_ID};
use payledger_channel_adapters::simulator::wechatpay::{
    test_merchant_key, test_platform_keys, WechatPaySimulator, TEST_API_V3_KEY, TEST_APP_ID, TEST_MCH_ID,
    TEST_MERCHANT_SERIAL, TEST_PLATFORM_SERIAL,
};
use payledger_command_api::config::ChannelAccounts;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

/// The `[channels.wechatpay.<id>]` table of an account whose API is the simulator `sim`, with
/// `mch_id` and `app_id` (the simulator's, [`SimulatorConfig`]'s) and the simulator's test keys
/// inline; `extra` lines (e.g. `new_orders = false`) are added to the table.
///
/// [`SimulatorConfig`]: payledger_channel_adapters::simulator::wechatpay::SimulatorConfig
pub fn wechatpay_account_toml(id: &str, sim: &WechatPaySimulator, mch_id: &str, app_id: &str, extra: &str) -> String {
    format!(
        "\n[channels.wechatpay.{id}]\n{}",
        wechatpay_account_value(sim, mch_id, app_id, extra)
    )
}

/// The keys of [`wechatpay_account_toml`]'s table without its header: the value of the account's
/// key in the NATS KV bucket.
pub fn wechatpay_account_value(sim: &WechatPaySimulator, mch_id: &str, app_id: &str, extra: &str) -> String {
    format!(
        r#"app_id = "{app_id}"
mch_id = "{mch_id}"
merchant_serial_no = "{TEST_MERCHANT_SERIAL}"
merchant_private_key_pem = """
{merchant_key}"""
platform_serial_no = "{TEST_PLATFORM_SERIAL}"
platform_public_key_pem = """
{platform_key}"""
api_v3_key = "{api_v3_key}"
base_url = "{base}"
{extra}
"#,
        merchant_key = *test_merchant_key().to_pkcs8_pem(LineEnding::LF).expect("pem"),
        platform_key = test_platform_keys()
            .public_key
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
        api_v3_key = std::str::from_utf8(TEST_API_V3_KEY).expect("ascii"),
        base = sim.base_url(),
    )
}

/// The channel accounts of a `payledger.toml` (written into `dir`) with one WeChat Pay account,
/// `main`, whose API is the simulator `sim` and whose keys are the simulator's test keys.
pub fn wechatpay_accounts(sim: &WechatPaySimulator, dir: &std::path::Path) -> ChannelAccounts {
    let toml = wechatpay_account_toml("main", sim, TEST_MCH_ID, TEST_APP_ID, "");
    let file = dir.join("payledger.toml");
    std::fs::write(&file, toml).expect("config file");
    ChannelAccounts::load(&file).expect("the configuration loads")
}

/// The application id of the test Alipay account.
pub const ALIPAY_APP_ID: &str = "2021000000000001";

/// Starts an Alipay simulator that knows the test application's public key (the channel
/// adapters' fixture), for [`alipay_accounts`].
///
/// # Panics
/// When the fixture is missing or the simulator cannot start.
pub async fn start_alipay_simulator() -> AlipaySimulator {
    start_alipay_simulator_for(ALIPAY_APP_ID).await
}

/// As [`start_alipay_simulator`], for the application `app_id` (with the same key).
///
/// # Panics
/// When the fixture is missing or the simulator cannot start.
pub async fn start_alipay_simulator_for(app_id: &str) -> AlipaySimulator {
    let app_public = payledger_channel_adapters::alipay::account::parse_public_key(
        &std::fs::read_to_string(fixtures().join("app_public_spki.pem")).expect("fixture"),
    )
    .expect("app public key");
    AlipaySimulator::start(app_id, app_public)
        .await
        .expect("Alipay simulator")
}

/// The `[channels.alipay.<id>]` table of an account of application `app_id` (the simulator
/// `sim`'s) whose gateway is `gateway_url` (the simulator's, or a proxy in front of it), its keys
/// inline (the application key is the channel adapters' test fixture, Alipay's public key the
/// simulator's); `extra` lines are added to the table.
pub fn alipay_account_toml(id: &str, sim: &AlipaySimulator, app_id: &str, gateway_url: &str, extra: &str) -> String {
    let app_private = std::fs::read_to_string(fixtures().join("app_private_pkcs8.pem")).expect("fixture");
    let alipay_public = sim.alipay_public_key().to_public_key_pem(LineEnding::LF).expect("pem");
    format!(
        "\n[channels.alipay.{id}]\napp_id = \"{app_id}\"\napp_private_key_pem = '''{app_private}'''\n\
         alipay_public_key_pem = '''{alipay_public}'''\ngateway_url = \"{gateway_url}\"\nseller_id = \"{SIM_SELLER_ID}\"\n{extra}\n"
    )
}

/// The channel accounts with one Alipay account, `main`, of the test application
/// ([`alipay_account_toml`]).
pub fn alipay_accounts(sim: &AlipaySimulator, gateway_url: &str) -> ChannelAccounts {
    let toml = alipay_account_toml("main", sim, ALIPAY_APP_ID, gateway_url, "");
    ChannelAccounts::parse(&toml, "test.toml", &fixtures()).expect("the account parses")
}

/// The channel adapters' Alipay key fixtures.
fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../channel-adapters/tests/fixtures/alipay")
}
