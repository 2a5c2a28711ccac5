//! The process's one reader of the log's tail.
//!
//! Every subscriber in a process (the read models, the notify enqueuer, the refund worker, the
//! relay) reads the log through one [`LogTail`]. The tail keeps the most recent events it read,
//! decoded, as one contiguous run: a subscriber whose position falls inside the run is answered
//! from memory; one standing at the run's end makes the tail read the next batch from the
//! database (one reader at a time, so when an append wakes five subscribers the log is read and
//! decoded once, and the other four take the same batch from memory).
//!
//! Why a contiguous run is safe to serve: [`GlobalLog::read_after`] returns only events whose
//! commit order is final, so the events after position `p` up to the last one it returned are
//! exactly the events any later read after `p` would return first. Appending each read to the
//! run's end keeps that property for the whole run. A subscriber behind the run (a laggard, or
//! one that just started) reads from the database without touching the run.

use std::collections::VecDeque;

use tokio::sync::Mutex;

use crate::backend::DbError;
use crate::log::{GlobalLog, LogEvent, LogPosition};

/// Events the tail keeps in memory (oldest dropped first): about four full subscriber batches,
/// so subscribers a few batches apart still share reads.
pub const TAIL_EVENTS_MAX: usize = 2_000;

/// A contiguous run of the log: every event after `from` up to the last one held.
struct Run {
    from: LogPosition,
    events: VecDeque<LogEvent>,
}

impl Run {
    fn end(&self) -> LogPosition {
        self.events.back().map_or(self.from, |e| e.position)
    }

    /// Up to `limit` events after `after`, if `after` lies inside the run and the run holds
    /// events after it.
    fn after(&self, after: LogPosition, limit: usize) -> Option<Vec<LogEvent>> {
        if after < self.from || after >= self.end() {
            return None;
        }
        let start = self.events.partition_point(|e| e.position <= after);
        Some(self.events.range(start..).take(limit).cloned().collect())
    }

    fn extend(&mut self, read: &[LogEvent]) {
        self.events.extend(read.iter().cloned());
        while self.events.len() > TAIL_EVENTS_MAX {
            if let Some(dropped) = self.events.pop_front() {
                self.from = dropped.position;
            }
        }
    }
}

/// Shared reads of the log's tail (see the module docs). One per [`crate::Database`].
pub struct LogTail {
    log: GlobalLog,
    run: Mutex<Option<Run>>,
}

impl LogTail {
    pub(crate) fn new(log: GlobalLog) -> Self {
        Self {
            log,
            run: Mutex::new(None),
        }
    }

    /// Up to `limit` events after `after`, in commit order, only ones whose commit order is
    /// final: the same answer as [`GlobalLog::read_after`], from memory when another subscriber
    /// of this process already read them.
    ///
    /// # Errors
    /// As [`GlobalLog::read_after`].
    pub async fn read_after(&self, after: LogPosition, limit: i64) -> Result<Vec<LogEvent>, DbError> {
        let limit_n = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let mut run = self.run.lock().await;
        if let Some(events) = run.as_ref().and_then(|r| r.after(after, limit_n)) {
            return Ok(events);
        }
        let (end, from) = match run.as_ref() {
            Some(r) => (Some(r.end()), r.from),
            None => (None, LogPosition::default()),
        };
        if end.is_some() && after < from {
            // Behind the run: read without holding up the subscribers at the tail.
            drop(run);
            return self.log.read_after(after, limit).await;
        }
        // At the run's end (the usual case), ahead of it (another process moved a checkpoint
        // past what this one read) or no run yet: read while holding the lock, so subscribers
        // woken together wait for this read instead of repeating it.
        let read = self.log.read_after(after, limit).await?;
        match run.as_mut() {
            Some(r) if end == Some(after) => r.extend(&read),
            _ => {
                let mut fresh = Run {
                    from: after,
                    events: VecDeque::new(),
                };
                fresh.extend(&read);
                *run = Some(fresh);
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use payledger_domain::{CloseReason, PaymentOrderEvent};
    use uuid::Uuid;

    fn at(p: i64) -> LogPosition {
        LogPosition {
            transaction_id: 0,
            global_position: p,
        }
    }

    fn event(p: i64) -> LogEvent {
        LogEvent {
            position: at(p),
            event_id: Uuid::nil(),
            order_id: Uuid::from_u128(p as u128),
            sequence: 1,
            event_type: "OrderClosed".into(),
            event_version: "1.0".into(),
            event: PaymentOrderEvent::OrderClosed {
                reason: CloseReason::Cancelled,
                closed_at: Utc::now(),
            },
            metadata: serde_json::json!({}),
            recorded_at: Utc::now(),
        }
    }

    fn positions(events: &[LogEvent]) -> Vec<i64> {
        events.iter().map(|e| e.position.global_position).collect()
    }

    #[test]
    fn a_position_inside_the_run_gets_the_events_after_it() {
        let mut run = Run {
            from: at(10),
            events: VecDeque::new(),
        };
        run.extend(&[event(11), event(12), event(15)]);
        assert_eq!(positions(&run.after(at(10), 10).unwrap()), [11, 12, 15]);
        assert_eq!(positions(&run.after(at(12), 10).unwrap()), [15]);
        assert_eq!(positions(&run.after(at(13), 10).unwrap()), [15], "between two events");
        assert_eq!(positions(&run.after(at(10), 2).unwrap()), [11, 12], "limit");
    }

    #[test]
    fn the_run_answers_nothing_before_its_start_or_at_its_end() {
        let mut run = Run {
            from: at(10),
            events: VecDeque::new(),
        };
        run.extend(&[event(11)]);
        assert!(run.after(at(9), 10).is_none(), "before the run: events may be missing");
        assert!(
            run.after(at(11), 10).is_none(),
            "at the end: the database may hold more"
        );
        assert!(run.after(at(20), 10).is_none());
    }

    #[test]
    fn the_run_drops_its_oldest_events_past_its_bound_and_starts_after_them() {
        let mut run = Run {
            from: at(0),
            events: VecDeque::new(),
        };
        let many: Vec<_> = (1..=(TAIL_EVENTS_MAX as i64 + 5)).map(event).collect();
        run.extend(&many);
        assert_eq!(run.events.len(), TAIL_EVENTS_MAX);
        assert_eq!(run.from, at(5));
        assert!(run.after(at(4), 1).is_none());
        assert_eq!(positions(&run.after(at(5), 1).unwrap()), [6]);
    }
}
