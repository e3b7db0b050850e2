//! One atomic alerts write: what the alert engine hands the store (records,
//! lifecycle messages, outbox rows by scope, command outcomes). Plain data;
//! [`crate::records`] re-exports it beside the other store records.

use super::{AlertMessage, AlertRecord, Scope};

/// A message for the outbox, by scope: the shell names its topic
/// ([`crate::contract::Topics::alerts`] or
/// [`crate::contract::Topics::alerts_active`], by `kind`) when it commits
/// the row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Whose alert topics the message goes to.
    pub scope: Scope,
    pub kind: OutboxKind,
    /// The message (JSON).
    pub payload: String,
    /// Published retained (the active list) or not (a lifecycle message).
    pub retained: bool,
}

/// What an outbox row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// One alert lifecycle message, on the scope's `…/alerts` topic.
    Message,
    /// The scope's list of active alerts, retained, on `…/alerts/active`.
    ActiveList,
}

/// What an operator command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    pub input_seq: i64,
    pub alert_id: String,
    pub action: String,
    pub by: String,
    pub applied: bool,
    pub outcome: String,
    pub time_ms: i64,
    /// A command refused with a rejection code (`pause_limit`): the shell
    /// publishes it on `rejected` once the outcome is committed. `None` for
    /// an applied command and for one that found no open alert.
    pub refused: Option<crate::contract::Rejection>,
}

/// One atomic alerts write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertWrite {
    pub records: Vec<AlertRecord>,
    pub messages: Vec<AlertMessage>,
    pub outbox: Vec<OutboxRow>,
    pub commands: Vec<CommandOutcome>,
    pub created_at_ms: i64,
    /// What the engine could not serialise (never expected: every alert
    /// type serialises); not stored. The shell logs each at error.
    pub unserialisable: Vec<String>,
}

impl AlertWrite {
    /// Append another write's contents (one transaction for both).
    pub fn extend(&mut self, other: AlertWrite) {
        self.records.extend(other.records);
        self.messages.extend(other.messages);
        self.outbox.extend(other.outbox);
        self.commands.extend(other.commands);
        self.unserialisable.extend(other.unserialisable);
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.messages.is_empty()
            && self.outbox.is_empty()
            && self.commands.is_empty()
    }
}
