//! The console's two languages: English and Simplified Chinese. Templates ask [`Tr::t`] for a
//! label by key; every key has both texts ([`LABELS`]), and a test checks that every key a
//! template uses is here.

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

impl Lang {
    /// The BCP 47 tag (`en`, `zh-CN`), as in `<html lang>` and the language cookie.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// The language of a tag; `None` for one we do not speak.
    pub fn parse(tag: &str) -> Option<Self> {
        match tag {
            "en" => Some(Lang::En),
            "zh-CN" => Some(Lang::ZhCn),
            _ => None,
        }
    }
}

/// Labels of one language, for templates.
#[derive(Debug, Clone, Copy)]
pub struct Tr(pub Lang);

impl Tr {
    /// The label of `key`; the key itself when there is none (a test keeps that from happening).
    pub fn t<'a>(&self, key: &'a str) -> &'a str {
        match LABELS.iter().find(|(k, _, _)| *k == key) {
            Some((_, en, zh)) => match self.0 {
                Lang::En => en,
                Lang::ZhCn => zh,
            },
            None => key,
        }
    }

    /// The language's tag.
    pub fn tag(&self) -> &'static str {
        self.0.tag()
    }
}

/// Every label: key, English, 简体中文.
pub const LABELS: &[(&str, &str, &str)] = &[
    ("console", "payledger console", "payledger 控制台"),
    ("overview", "Overview", "概览"),
    ("orders", "Orders", "订单"),
    ("audit_log", "Audit log", "审计日志"),
    ("logout", "Log out", "退出登录"),
    ("logout_everywhere", "Log out everywhere", "退出所有设备"),
    ("mode", "Mode", "模式"),
    ("live", "Live", "正式"),
    ("test", "Test", "测试"),
    (
        "test_banner",
        "Test mode: sandbox data, no real money.",
        "测试模式：沙箱数据，不涉及真实资金。",
    ),
    ("language", "Language", "语言"),
    ("sign_in", "Sign in", "登录"),
    ("email", "E-mail address", "邮箱地址"),
    ("password", "Password", "密码"),
    ("new_password", "New password", "新密码"),
    ("repeat_password", "New password again", "再次输入新密码"),
    ("change_password", "Choose your password", "设置密码"),
    (
        "one_time_notice",
        "The password you were given works only once: choose your own (at least 12 characters).",
        "初始密码只能使用一次：请设置您自己的密码（至少 12 个字符）。",
    ),
    ("totp_title", "Two-factor authentication", "双重验证"),
    (
        "totp_code",
        "6-digit code from your authenticator app",
        "身份验证器应用中的 6 位验证码",
    ),
    ("verify", "Verify", "验证"),
    ("enrol_title", "Set up two-factor authentication", "设置双重验证"),
    (
        "enrol_notice",
        "Operators must use a second factor. Add this key to your authenticator app, then enter the code it shows.",
        "运营人员必须使用双重验证。请将此密钥添加到您的身份验证器应用，然后输入其显示的验证码。",
    ),
    ("secret_key", "Key", "密钥"),
    ("status", "Status", "状态"),
    ("channel", "Channel", "渠道"),
    ("merchant", "Merchant", "商户"),
    ("all_merchants", "All merchants", "全部商户"),
    ("out_trade_no", "Merchant order no.", "商户订单号"),
    ("amount", "Amount", "金额"),
    ("amount_min", "Amount from", "最低金额"),
    ("amount_max", "Amount to", "最高金额"),
    ("created", "Created", "创建时间"),
    ("from", "From", "开始日期"),
    ("to", "To", "结束日期"),
    ("filter", "Filter", "筛选"),
    ("next_page", "Next page", "下一页"),
    ("any", "Any", "全部"),
    ("order", "Order", "订单"),
    ("refunds", "Refunds", "退款"),
    ("refund", "Refund", "退款"),
    ("refund_action", "Refund part or all", "部分或全额退款"),
    ("notifications", "Notifications", "通知"),
    ("timeline", "Event timeline", "事件时间线"),
    ("event", "Event", "事件"),
    ("time", "Time", "时间"),
    ("actor", "Actor", "操作人"),
    ("payload", "Details", "详情"),
    ("paid_amount", "Paid", "已付金额"),
    ("refunded_amount", "Refunded", "已退金额"),
    ("channel_trade_no", "Channel trade no.", "渠道交易号"),
    ("close_order", "Close order", "关闭订单"),
    ("resend", "Resend", "重新发送"),
    ("reason", "Reason", "原因"),
    ("out_refund_no", "Merchant refund no.", "商户退款单号"),
    ("optional", "optional", "可选"),
    ("attempts", "Attempts", "尝试次数"),
    ("outcome", "Outcome", "结果"),
    ("action", "Action", "操作"),
    ("target", "Target", "对象"),
    ("address", "Address", "地址"),
    ("today", "Today", "今天"),
    ("last_7_days", "Last 7 days", "近 7 天"),
    ("last_30_days", "Last 30 days", "近 30 天"),
    ("volume", "Volume", "交易额"),
    ("orders_created", "Orders", "订单数"),
    ("orders_paid", "Paid orders", "已支付订单"),
    ("success_rate", "Success rate", "成功率"),
    ("refunds_succeeded", "Refunds", "退款笔数"),
    ("refunded", "Refunded", "退款金额"),
    ("failing_notifications", "Failing notifications", "失败的通知"),
    ("currency", "Currency", "币种"),
    ("no_data", "Nothing yet.", "暂无数据。"),
    ("forbidden", "You may not do this.", "您无权执行此操作。"),
    ("not_found", "Not found.", "未找到。"),
    ("role", "Role", "角色"),
    ("subject", "Subject", "商品描述"),
    ("method", "Method", "支付方式"),
    ("done_refund", "Refund requested.", "退款已提交。"),
    ("done_close", "Order closed.", "订单已关闭。"),
    ("done_resend", "Notification queued again.", "通知已重新排队发送。"),
    (
        "invalid_login",
        "E-mail address or password is wrong.",
        "邮箱地址或密码错误。",
    ),
    (
        "throttled",
        "Too many failed attempts: try again later.",
        "失败次数过多，请稍后再试。",
    ),
    (
        "wrong_code",
        "The code is wrong or was used already.",
        "验证码错误或已被使用。",
    ),
    (
        "password_rules",
        "At least 12 characters, and both entries the same.",
        "至少 12 个字符，且两次输入一致。",
    ),
    ("refused", "Refused", "已拒绝"),
    ("event_type", "Event type", "事件类型"),
    ("detail", "Detail", "说明"),
    ("notification", "Notification", "通知"),
    ("signed_in_as", "Signed in as", "当前用户"),
    ("status_code", "HTTP status", "HTTP 状态码"),
    ("error", "Error", "错误"),
    ("back", "Back", "返回"),
    ("ledger", "Ledger", "账本"),
    ("reference", "Reference or order id", "参考号或订单号"),
    ("journal_entries", "Journal entries", "会计分录"),
    ("balances", "Balances", "余额"),
    ("account", "Account", "账户"),
    ("debit", "Debit", "借方"),
    ("credit", "Credit", "贷方"),
    ("balance", "Balance (credit − debit)", "余额（贷方 − 借方）"),
    ("needs_attention", "Needs attention", "需要处理"),
    ("recent", "Most recent", "最近"),
    ("export_csv", "Export CSV", "导出 CSV"),
    ("orders_per_day", "Orders per day", "每日订单"),
    ("volume_per_day", "Volume per day", "每日交易额"),
    ("paid_per_channel", "Paid orders per channel", "各渠道每日已支付订单"),
    ("all_channels", "All channels", "全部渠道"),
    ("channels", "Channels", "渠道"),
    ("accounts", "Accounts", "账户"),
    ("account_id", "Account", "账户"),
    ("takes_new_orders", "Takes new orders", "接收新订单"),
    ("methods", "Methods", "支付方式"),
    ("recent_calls", "Recent calls", "最近调用"),
    ("operation", "Operation", "操作"),
    ("latency", "Latency", "延迟"),
    ("calls", "Calls", "调用次数"),
    ("ok_share", "Succeeded", "成功率"),
    ("yes", "yes", "是"),
    ("merchants", "Merchants", "商户"),
    ("add_merchant", "Add a merchant", "添加商户"),
    (
        "shown_once",
        "Shown this once: store them now; only their hashes or sealed copies are kept.",
        "仅显示这一次：请立即保存；系统只保存其哈希或加密副本。",
    ),
    ("rotate", "Rotate credentials", "轮换凭据"),
    ("rotate_api_key", "New API key", "更换 API 密钥"),
    ("rotate_webhook_secret", "New webhook secret", "更换通知签名密钥"),
    (
        "overlap_hours",
        "Old secret keeps signing for (hours)",
        "旧密钥继续签名时长（小时）",
    ),
    ("enable", "Enable", "启用"),
    ("users", "Users", "用户"),
    ("add_user", "Add a user", "添加用户"),
    (
        "user_added",
        "Added; give them this one-time password (shown once):",
        "已添加；请将此一次性密码交给对方（仅显示一次）：",
    ),
    ("merchant_roles_only", "merchant roles only", "仅商户角色"),
    ("second_factor", "Second factor", "双重验证"),
    ("disabled", "disabled", "已停用"),
    ("active", "active", "正常"),
    ("disable", "Disable", "停用"),
    ("reconciliation", "Reconciliation", "对账"),
    ("open_differences", "Open differences", "未处理差异"),
    ("upload_statement", "Upload a statement", "上传对账单"),
    ("statement_day", "Statement day", "对账日期"),
    ("statement_file", "Statement file", "对账单文件"),
    ("reconcile", "Reconcile", "对账"),
    ("runs", "Runs", "对账记录"),
    ("matched", "Matched", "已匹配"),
    ("differences", "Differences", "差异"),
    ("kind", "Kind", "类型"),
    ("statement_amount", "Statement amount", "对账单金额"),
    ("ledger_amount", "Ledger amount", "账本金额"),
    ("resolution", "Resolution", "处理结果"),
    ("note", "Note", "备注"),
    ("resolve", "Resolve", "处理"),
    ("open", "Open", "未处理"),
    ("no", "no", "否"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_unique_and_has_both_texts() {
        for (i, (key, en, zh)) in LABELS.iter().enumerate() {
            assert!(!en.is_empty() && !zh.is_empty(), "{key}");
            assert!(LABELS[i + 1..].iter().all(|(k, _, _)| k != key), "{key} twice");
        }
        assert_eq!(Tr(Lang::ZhCn).t("orders"), "订单");
        assert_eq!(Tr(Lang::En).t("orders"), "Orders");
        assert_eq!(Lang::parse("zh-CN"), Some(Lang::ZhCn));
    }

    /// Every `t.t("…")` in the templates names a key of [`LABELS`].
    #[test]
    fn every_label_a_template_asks_for_exists() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/console");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split("t.t(\"").skip(1) {
                let key = &part[..part.find('"').unwrap()];
                assert!(LABELS.iter().any(|(k, _, _)| *k == key), "{}: {key}", path.display());
                seen += 1;
            }
        }
        assert!(seen > 50, "templates use the labels ({seen})");
    }
}
