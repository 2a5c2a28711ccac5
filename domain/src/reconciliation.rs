//! Reconciliation runs: a channel's settlement statement compared with the ledger, and what
//! people decided about each difference. One [`ReconciliationRun`] aggregate per statement
//! (channel, account, day and the file's SHA-256: the same file uploaded again is the same run),
//! so that a difference stays open until someone resolves it, and every resolution is an event
//! with its kind, note, author and time.
//!
//! Pure, like [`crate::PaymentOrder`]: the comparison itself happens outside (the differences
//! arrive in the command); this decides only what may be recorded.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of reconciliation run ids. Never change it: every stored run id depends on it.
pub const RECONCILIATION_RUN_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_59b4_3c0e_4f52_9a57_8d3e_2c1a_0b11);

/// The run of `channel`'s statement of `account` (empty: every account) for `date`
/// (`YYYY-MM-DD`) whose file hashes to `file_sha256` (hex).
pub fn run_id(channel: &str, account: &str, date: &str, file_sha256: &str) -> Uuid {
    Uuid::new_v5(
        &RECONCILIATION_RUN_NAMESPACE,
        format!("{channel}\n{account}\n{date}\n{file_sha256}").as_bytes(),
    )
}

/// One difference between a statement and the ledger. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// `missing_in_ledger`, `missing_at_channel`, `amount_differs`, `status_differs`.
    pub kind: String,
    /// `payment` or `refund`.
    pub item: String,
    /// The statement's line (1-based), when the statement has the item.
    pub line: Option<usize>,
    pub order_id: Option<String>,
    /// `channel_trade_no` or refund id.
    pub reference: Option<String>,
    pub statement_amount_minor: Option<i64>,
    pub ledger_amount_minor: Option<i64>,
    pub currency: String,
    pub statement_status: Option<String>,
}

/// How a difference was settled by a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionKind {
    /// The two sides will agree later (a payment near midnight, a refund still processing).
    Timing,
    /// The channel's statement is wrong; raised with the channel.
    ChannelError,
    /// The money was refunded outside payledger.
    RefundedOffline,
    /// The amount is written off.
    WrittenOff,
    /// Anything else; the note says what.
    Other,
}

impl ResolutionKind {
    /// Every kind, in the order forms list them.
    pub const ALL: [ResolutionKind; 5] = [
        ResolutionKind::Timing,
        ResolutionKind::ChannelError,
        ResolutionKind::RefundedOffline,
        ResolutionKind::WrittenOff,
        ResolutionKind::Other,
    ];

    /// The wire name (`timing`, `channel_error`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionKind::Timing => "timing",
            ResolutionKind::ChannelError => "channel_error",
            ResolutionKind::RefundedOffline => "refunded_offline",
            ResolutionKind::WrittenOff => "written_off",
            ResolutionKind::Other => "other",
        }
    }

    /// The kind of a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// What a run's commands ask.
// One command per statement upload or resolution, never in a hot path: boxing the large
// variant would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReconciliationCommand {
    /// Record a statement's comparison. The same statement again records nothing.
    Record {
        channel: String,
        /// The channel account; empty: every account of the channel.
        account: String,
        /// `YYYY-MM-DD` in the channel's time zone.
        date: String,
        /// The statement's format (`wechatpay`, `alipay`, `generic`).
        format: String,
        file_name: String,
        file_sha256: String,
        /// Lines matched and equal.
        matched: usize,
        differences: Vec<Difference>,
        /// Per currency, each side's counts and sums (minor units), as the comparison gave them.
        totals: serde_json::Value,
        by: String,
        at: DateTime<Utc>,
    },
    /// Settle difference `index` (0-based) with `kind` and a note saying why.
    Resolve {
        index: usize,
        kind: ResolutionKind,
        note: String,
        by: String,
        at: DateTime<Utc>,
    },
}

/// Facts about a run. Never changed, never deleted.
#[allow(clippy::large_enum_variant)] // as ReconciliationCommand
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ReconciliationEvent {
    StatementReconciled {
        channel: String,
        account: String,
        date: String,
        format: String,
        file_name: String,
        file_sha256: String,
        matched: usize,
        differences: Vec<Difference>,
        totals: serde_json::Value,
        by: String,
        at: DateTime<Utc>,
    },
    DifferenceResolved {
        index: usize,
        kind: ResolutionKind,
        note: String,
        by: String,
        at: DateTime<Utc>,
    },
}

impl ReconciliationEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            ReconciliationEvent::StatementReconciled { .. } => "StatementReconciled",
            ReconciliationEvent::DifferenceResolved { .. } => "DifferenceResolved",
        }
    }

    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            ReconciliationEvent::StatementReconciled { at, .. }
            | ReconciliationEvent::DifferenceResolved { at, .. } => *at,
        }
    }

    /// Who did it.
    pub fn by(&self) -> &str {
        match self {
            ReconciliationEvent::StatementReconciled { by, .. }
            | ReconciliationEvent::DifferenceResolved { by, .. } => by,
        }
    }
}

/// Why a run's command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconciliationError {
    #[error("no such reconciliation run")]
    RunNotFound,
    #[error("the run has no difference {0}")]
    NoSuchDifference(usize),
    #[error("difference {0} is resolved already")]
    AlreadyResolved(usize),
    #[error("a resolution needs a note saying why")]
    NoteRequired,
}

/// A resolution as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub kind: ResolutionKind,
    pub note: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// A run as its events left it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub channel: String,
    pub account: String,
    pub date: String,
    pub format: String,
    pub file_name: String,
    pub matched: usize,
    pub differences: Vec<Difference>,
    /// One per difference: `None` while open.
    pub resolutions: Vec<Option<Resolution>>,
    pub totals: serde_json::Value,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl RunState {
    /// Differences nobody resolved yet.
    pub fn open(&self) -> usize {
        self.resolutions.iter().filter(|r| r.is_none()).count()
    }
}

/// One reconciliation run: `None` state until its statement is recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconciliationRun {
    state: Option<RunState>,
}

impl ReconciliationRun {
    /// The aggregate type stored beside each event.
    pub const TYPE: &'static str = "ReconciliationRun";

    /// The run's state; `None` before its statement was recorded.
    pub fn state(&self) -> Option<&RunState> {
        self.state.as_ref()
    }

    /// Decides `command`: the events to append (none for a statement recorded already), or why
    /// not.
    ///
    /// # Errors
    /// [`ReconciliationError`], one variant per rule.
    pub fn decide(&self, command: ReconciliationCommand) -> Result<Vec<ReconciliationEvent>, ReconciliationError> {
        match command {
            ReconciliationCommand::Record {
                channel,
                account,
                date,
                format,
                file_name,
                file_sha256,
                matched,
                differences,
                totals,
                by,
                at,
            } => {
                if self.state.is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![ReconciliationEvent::StatementReconciled {
                    channel,
                    account,
                    date,
                    format,
                    file_name,
                    file_sha256,
                    matched,
                    differences,
                    totals,
                    by,
                    at,
                }])
            }
            ReconciliationCommand::Resolve {
                index,
                kind,
                note,
                by,
                at,
            } => {
                let state = self.state.as_ref().ok_or(ReconciliationError::RunNotFound)?;
                match state.resolutions.get(index) {
                    None => return Err(ReconciliationError::NoSuchDifference(index)),
                    Some(Some(_)) => return Err(ReconciliationError::AlreadyResolved(index)),
                    Some(None) => {}
                }
                let note = note.trim().to_string();
                if note.is_empty() {
                    return Err(ReconciliationError::NoteRequired);
                }
                Ok(vec![ReconciliationEvent::DifferenceResolved {
                    index,
                    kind,
                    note,
                    by,
                    at,
                }])
            }
        }
    }

    /// Folds `event` in.
    ///
    /// # Panics
    /// On an event that cannot follow the state (a resolution before the statement, of a
    /// difference it does not have, or twice): a bug or a corrupt store, not input.
    pub fn apply(&mut self, event: &ReconciliationEvent) {
        match event {
            ReconciliationEvent::StatementReconciled {
                channel,
                account,
                date,
                format,
                file_name,
                matched,
                differences,
                totals,
                by,
                at,
                ..
            } => {
                assert!(self.state.is_none(), "a run's statement recorded twice");
                self.state = Some(RunState {
                    channel: channel.clone(),
                    account: account.clone(),
                    date: date.clone(),
                    format: format.clone(),
                    file_name: file_name.clone(),
                    matched: *matched,
                    resolutions: vec![None; differences.len()],
                    differences: differences.clone(),
                    totals: totals.clone(),
                    by: by.clone(),
                    at: *at,
                });
            }
            ReconciliationEvent::DifferenceResolved {
                index,
                kind,
                note,
                by,
                at,
            } => {
                let state = self.state.as_mut().expect("a resolution before the statement");
                let slot = state
                    .resolutions
                    .get_mut(*index)
                    .expect("a resolution of a difference the run has");
                assert!(slot.is_none(), "difference {index} resolved twice");
                *slot = Some(Resolution {
                    kind: *kind,
                    note: note.clone(),
                    by: by.clone(),
                    at: *at,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn difference(kind: &str) -> Difference {
        Difference {
            kind: kind.into(),
            item: "payment".into(),
            line: Some(2),
            order_id: None,
            reference: Some("T1".into()),
            statement_amount_minor: Some(100),
            ledger_amount_minor: None,
            currency: "CNY".into(),
            statement_status: None,
        }
    }

    fn recorded() -> ReconciliationRun {
        let mut run = ReconciliationRun::default();
        let record = ReconciliationCommand::Record {
            channel: "sandbox".into(),
            account: String::new(),
            date: "2026-12-03".into(),
            format: "generic".into(),
            file_name: "s.csv".into(),
            file_sha256: "ab".into(),
            matched: 3,
            differences: vec![difference("missing_in_ledger"), difference("amount_differs")],
            totals: serde_json::json!({}),
            by: "console:fin@example.com".into(),
            at: at(),
        };
        for e in run.decide(record.clone()).unwrap() {
            run.apply(&e);
        }
        assert!(
            run.decide(record).unwrap().is_empty(),
            "the same statement again records nothing"
        );
        run
    }

    fn resolve(index: usize, note: &str) -> ReconciliationCommand {
        ReconciliationCommand::Resolve {
            index,
            kind: ResolutionKind::Timing,
            note: note.into(),
            by: "console:fin@example.com".into(),
            at: at(),
        }
    }

    #[test]
    fn a_difference_is_resolved_once_with_a_note() {
        let mut run = recorded();
        assert_eq!(run.state().unwrap().open(), 2);
        assert_eq!(run.decide(resolve(0, "  ")), Err(ReconciliationError::NoteRequired));
        assert_eq!(
            run.decide(resolve(2, "x")),
            Err(ReconciliationError::NoSuchDifference(2))
        );
        for e in run.decide(resolve(1, "settles tomorrow")).unwrap() {
            run.apply(&e);
        }
        assert_eq!(run.state().unwrap().open(), 1);
        assert_eq!(
            run.decide(resolve(1, "again")),
            Err(ReconciliationError::AlreadyResolved(1))
        );
        let resolution = run.state().unwrap().resolutions[1].clone().unwrap();
        assert_eq!(resolution.note, "settles tomorrow");
        assert_eq!(resolution.kind, ResolutionKind::Timing);
    }

    #[test]
    fn nothing_is_resolved_in_a_run_that_was_never_recorded() {
        assert_eq!(
            ReconciliationRun::default().decide(resolve(0, "x")),
            Err(ReconciliationError::RunNotFound)
        );
        assert_ne!(
            run_id("sandbox", "", "2026-12-03", "ab"),
            run_id("sandbox", "", "2026-12-03", "ac")
        );
        for k in ResolutionKind::ALL {
            assert_eq!(ResolutionKind::parse(k.as_str()), Some(k));
        }
    }
}
