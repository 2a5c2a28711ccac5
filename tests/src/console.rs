//! Console users for the console's tests (HTTP and browser).

use chrono::Utc;
use payledger_command_api::console::auth;
use payledger_domain::console::{console_user_id, ConsoleRole, ConsoleUserCommand};

use crate::TestServer;

/// The password every test user chooses at its first login (at least 12 characters).
pub const NEW_PASSWORD: &str = "a long new passphrase";

/// Adds a console user directly (what `payledger users add` does); returns its one-time password.
pub async fn add_user(s: &TestServer, email: &str, role: ConsoleRole, merchant: Option<&str>) -> String {
    let password = auth::one_time_password();
    payledger_store::console::execute(
        s.database().pool(),
        console_user_id(email),
        ConsoleUserCommand::AddUser {
            email: email.into(),
            role,
            merchant_id: merchant.map(str::to_string),
            password_hash: auth::hash_password(&password).expect("hash"),
            added_by: "test".into(),
            at: Utc::now(),
        },
    )
    .await
    .expect("add a console user");
    password
}
