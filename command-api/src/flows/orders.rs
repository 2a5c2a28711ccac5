//! Placing an order at its channel, and closing it.

use chrono::{DateTime, Utc};
use payledger_channel_adapters::{ChannelError, CreateChannelOrder};
use payledger_domain::aggregate::OrderState;
use payledger_domain::{
    ids, ChannelAccountRef, ChannelOrderOutcome, CloseReason, Mode, OrderError, OrderStatus, OrderTerms, PaymentOrder,
    PaymentOrderCommand, PaymentOrderEvent,
};
use payledger_store::{ExecuteError, Executed, OrderOwner, Start};
use uuid::Uuid;

use super::{FlowError, Flows};

/// What [`Flows::place_order`] did.
#[derive(Debug)]
pub struct Placed {
    /// The order's id (from the merchant and `out_trade_no`).
    pub order_id: Uuid,
    /// `false` when the same request had already created the order (a retry).
    pub is_new: bool,
    /// Sequence of the order's last event after the flow.
    pub sequence: usize,
    /// The order after the flow.
    pub order: OrderState,
    /// The channel's error when placing the order failed in this call; the order is then
    /// recorded as failed (`ChannelOrderFailed`) with [`Placed::failure_reason`].
    pub channel_error: Option<ChannelError>,
    /// The order's whole history, `(sequence, event)` from 1, when this call appended it from
    /// the first event: the answer can be folded from it without reading the log.
    pub history: Option<Vec<(i64, PaymentOrderEvent)>>,
}

impl Placed {
    /// The channel's error when this call created the order and the channel refused or could
    /// not be reached: the caller answers with the failure, not with the order.
    pub fn failed_at_channel(&self) -> Option<&ChannelError> {
        let failed_now = self.is_new && self.order.status == OrderStatus::Failed && self.order.paid_amount_minor == 0;
        failed_now.then_some(self.channel_error.as_ref()).flatten()
    }

    /// The channel's failure as the order records it, `<code>: <message>`.
    pub fn failure_reason(&self) -> Option<String> {
        match failed_outcome(self.channel_error.as_ref()?) {
            ChannelOrderOutcome::Failed { code, message, .. } => Some(format!("{code}: {message}")),
            ChannelOrderOutcome::Opened(_) => None,
        }
    }
}

/// What the order records when the channel could not open it: the channel's code (or ours for
/// an unreachable, timed-out or unsupported channel), its message, and whether a retry may work.
fn failed_outcome(e: &ChannelError) -> ChannelOrderOutcome {
    let code = match e {
        ChannelError::Unavailable(_) => "channel_unavailable".to_string(),
        ChannelError::Timeout(_) => "channel_timeout".to_string(),
        ChannelError::Rejected { code, .. } => code.clone(),
        ChannelError::Unsupported { .. } => "unsupported".to_string(),
    };
    // The channel's text goes into an event: NUL cannot be stored in PostgreSQL's jsonb.
    let clean = |text: String| text.replace('\0', "\u{fffd}");
    ChannelOrderOutcome::Failed {
        code: clean(code),
        message: clean(e.to_string()),
        retryable: e.is_retryable(),
    }
}

impl Flows {
    /// Creates the order of `terms` and places it at its channel, in one append when the order
    /// is new: the channel's `create` first (keyed by our order id, which channels use as their
    /// `out_trade_no`), then `PlaceOrder` with the order and the channel's answer (opened, or
    /// failed with its code and whether a retry may work).
    ///
    /// Nothing is lost if the process dies between the channel call and the append: nothing was
    /// recorded and no pay URL was handed out, so no one can pay; the merchant's retry asks the
    /// channel again with the same id, which the channel answers for the same order.
    ///
    /// Idempotent: the order id comes from the merchant and `out_trade_no`, so the same request
    /// again finds the order and returns it without asking the channel. An order recorded
    /// without a channel answer (cut off between the two appends of earlier versions) is placed
    /// by the retry.
    ///
    /// # Errors
    /// The aggregate's refusal (`out_trade_no` taken with other terms, an invalid amount),
    /// store failures; [`FlowError::Internal`] if the order's channel is gone. A channel failure
    /// is not an error: it is recorded and reported in [`Placed::channel_error`].
    pub async fn place_order(&self, terms: OrderTerms, actor: &str, now: DateTime<Utc>) -> Result<Placed, FlowError> {
        let (order_id, existing) = self.order_of(&terms).await?;
        let answered = existing
            .as_ref()
            .is_some_and(|o| o.channel_order.is_some() || o.status != OrderStatus::AwaitingPayment);
        if answered || existing.as_ref().is_some_and(|o| o.terms != terms) {
            return self.repeat_or_conflict(order_id, terms, actor, now).await;
        }
        if !terms.amount.is_valid() {
            return Err(ExecuteError::Rejected(OrderError::InvalidAmount(format!("{:?}", terms.amount))).into());
        }
        // Before the channel is called: a test order never reaches a real channel, nor a live
        // one the sandbox (the aggregate refuses such an order too, but only after the call).
        if !terms.mode.reaches(&terms.channel) {
            return Err(ExecuteError::Rejected(OrderError::ChannelNotInMode {
                channel: terms.channel.clone(),
                mode: terms.mode,
            })
            .into());
        }
        let created_at = existing.as_ref().map_or(now, |o| o.created_at);
        let (outcome, account, channel_error) = self
            .open_at_channel(order_id, &terms, terms.expire_at(created_at))
            .await?;
        crate::faults::point(crate::faults::AFTER_CHANNEL_CREATE);
        let command = PaymentOrderCommand::PlaceOrder {
            order_id,
            terms,
            created_at: now,
            outcome,
            account: Some(account),
            recorded_at: Utc::now(),
        };
        // The order was just seen not to exist: the append need not load it again (a
        // concurrent create makes it conflict, and the retry loads).
        let start = if existing.is_none() { Start::New } else { Start::Load };
        let placed = self
            .db
            .execute_with(order_id, actor, start, |_| Ok::<_, ExecuteError>(command.clone()))
            .await?;
        let is_new = placed
            .events
            .iter()
            .any(|e| matches!(e.payload, PaymentOrderEvent::OrderCreated { .. }));
        let order = placed
            .order
            .order
            .ok_or_else(|| FlowError::Internal(format!("order {order_id} missing after placing it")))?;
        // A concurrent identical request may have recorded its answer first: ours is then not
        // the order's, and neither is its failure.
        let ours = !placed.events.is_empty();
        let history = (placed.events.first().map(|e| e.sequence) == Some(1)).then(|| {
            placed
                .events
                .iter()
                .map(|e| (e.sequence as i64, e.payload.clone()))
                .collect()
        });
        Ok(Placed {
            order_id,
            is_new,
            sequence: placed.sequence,
            order,
            channel_error: channel_error.filter(|_| ours),
            history,
        })
    }

    /// The id of the order `terms` create, and the order if it exists: [`ids::order_id`]. In a
    /// database with test orders from before modes existed, whose ids are live ids now: a test
    /// order looks under its old id too (so a retry of such an order still finds it), and a live
    /// order whose id holds such a test order takes
    /// [`ids::live_order_id_beside_legacy_test`] (so test data never blocks a live order number,
    /// nor shows through a conflict).
    async fn order_of(&self, terms: &OrderTerms) -> Result<(Uuid, Option<OrderState>), FlowError> {
        let order_id = ids::order_id(&terms.merchant_id, terms.mode, &terms.out_trade_no);
        let existing = self.order(order_id).await?;
        if !self.legacy_test_ids {
            return Ok((order_id, existing));
        }
        match terms.mode {
            Mode::Test if existing.is_none() => {
                let legacy_id = ids::legacy_test_order_id(&terms.merchant_id, &terms.out_trade_no);
                match self.order(legacy_id).await? {
                    Some(legacy) if legacy.terms.mode == Mode::Test => Ok((legacy_id, Some(legacy))),
                    _ => Ok((order_id, None)),
                }
            }
            Mode::Live if existing.as_ref().is_some_and(|o| o.terms.mode == Mode::Test) => {
                let beside = ids::live_order_id_beside_legacy_test(&terms.merchant_id, &terms.out_trade_no);
                Ok((beside, self.order(beside).await?))
            }
            _ => Ok((order_id, existing)),
        }
    }

    /// The order exists with an answer from its channel, or with other terms: `CreateOrder`
    /// finds the repeat (no events) or refuses the conflict. The channel is not asked.
    async fn repeat_or_conflict(
        &self,
        order_id: Uuid,
        terms: OrderTerms,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Placed, FlowError> {
        let command = PaymentOrderCommand::CreateOrder {
            order_id,
            terms,
            created_at: now,
        };
        let repeated = self.db.execute(order_id, command, actor).await?;
        let order = repeated
            .order
            .order
            .ok_or_else(|| FlowError::Internal(format!("order {order_id} missing after create")))?;
        Ok(Placed {
            order_id,
            is_new: false,
            sequence: repeated.sequence,
            order,
            channel_error: None,
            history: None,
        })
    }

    /// Asks the order's channel to open it, with the account that takes new orders; the outcome
    /// to record, the account asked, and the channel's error.
    async fn open_at_channel(
        &self,
        order_id: Uuid,
        terms: &OrderTerms,
        expire_at: DateTime<Utc>,
    ) -> Result<(ChannelOrderOutcome, ChannelAccountRef, Option<ChannelError>), FlowError> {
        let channel_name = &terms.channel;
        let channel = self
            .channels
            .for_new_order(channel_name)
            .ok_or_else(|| FlowError::Internal(format!("channel {channel_name} vanished")))?;
        let account = channel.channel_account();
        let request = CreateChannelOrder {
            order_id,
            amount: terms.amount,
            method: terms.method.clone(),
            subject: terms.subject.clone(),
            expire_at,
            return_url: terms.return_url.clone(),
            payer_id: terms.user_id.clone(),
            payer_ip: None,
        };
        match crate::metrics::timed_channel_call(
            &self.calls,
            channel_name,
            &channel.channel_account().id,
            "create",
            channel.create(&request),
        )
        .await
        {
            Ok(channel_order) => Ok((ChannelOrderOutcome::Opened(channel_order), account, None)),
            Err(e) => {
                tracing::warn!(%order_id, error = %e, "channel order failed");
                Ok((failed_outcome(&e), account, Some(e)))
            }
        }
    }

    /// Closes an unpaid order of `owner` at the merchant's request (`CloseOrder`, reason
    /// `cancelled`); closing a closed order again changes nothing.
    ///
    /// # Errors
    /// [`FlowError::OrderNotFound`]; the aggregate's refusal (the order was paid); store
    /// failures.
    pub async fn close_order(&self, owner: &OrderOwner, order_id: Uuid, actor: &str) -> Result<Executed, FlowError> {
        let closed_at = Utc::now();
        self.db
            .execute_with(order_id, actor, Start::Load, |order: &PaymentOrder| {
                order
                    .order
                    .as_ref()
                    .filter(|o| owner.owns(&o.terms))
                    .ok_or(FlowError::OrderNotFound)?;
                Ok(PaymentOrderCommand::CloseOrder {
                    reason: CloseReason::Cancelled,
                    closed_at,
                })
            })
            .await
    }
}
