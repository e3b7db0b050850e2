//! Stage B's alert step: the scopes an input names, evaluating them and
//! applying operator commands in one write, and the `rejected` notice of a
//! refused command.

use super::*;

/// The alert scopes an input names, and the operator command it carries.
pub(in crate::service) fn alert_scopes_of(
    input: &TrackedInput,
    scopes: &mut BTreeSet<Scope>,
    commands: &mut Vec<PendingCommand>,
) {
    match (&input.topic, &input.input) {
        (InputTopic::AlertCommand { alert_id }, Input::AlertCommand(c)) => {
            commands.push((input.seq, alert_id.clone(), c.clone()))
        }
        (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
            scopes.insert(Scope::Device(device_id.clone()));
            if let Some(pid) = &e.patient_id {
                scopes.insert(Scope::Patient(pid.clone()));
            }
        }
        (
            InputTopic::Admit { patient_id }
            | InputTopic::Discharge { patient_id }
            | InputTopic::Dose { patient_id },
            _,
        ) => {
            scopes.insert(Scope::Patient(patient_id.clone()));
        }
        _ => {}
    }
}

/// Evaluate alert `scopes` and apply operator `commands` at `now`; commit
/// the resulting alert records, lifecycle messages and outbox rows in one
/// write, then wake the outbox publisher. The causes (inputs) are already
/// committed: if this write is lost in a crash, the next start derives the
/// same alerts again from them.
pub(super) async fn evaluate_alerts(
    b: &mut StageB,
    scopes: &BTreeSet<Scope>,
    commands: Vec<PendingCommand>,
    now: TimeMs,
) {
    let mut w = b.alerts.evaluate(&mut b.tracker, scopes, now);
    // Commands refused with a code (pause_limit): published on `rejected`
    // once their outcome is committed.
    let mut refused = Vec::new();
    for (seq, alert_id, cmd) in commands {
        let c = b.alerts.command(seq, &alert_id, &cmd, now);
        for o in &c.commands {
            if let Some(r) = &o.refused {
                refused.push(refused_command_notice(b, &alert_id, &cmd, r.clone(), now));
            }
        }
        for o in &c.commands {
            if o.applied {
                info!(alert_id = %o.alert_id, action = %o.action, by = %o.by, outcome = %o.outcome, "alert command applied");
            } else {
                warn!(alert_id = %o.alert_id, action = %o.action, by = %o.by, reason = %o.outcome, "alert command not applied");
            }
        }
        w.extend(c);
    }
    // The core does not log: what it could not serialise is logged here.
    for problem in std::mem::take(&mut w.unserialisable) {
        error!(error = %problem, "alert message not serialised");
    }
    if w.is_empty() {
        return;
    }
    for m in &w.messages {
        info!(alert_id = %m.alert_id, patient_id = m.patient_id.as_deref(), rule = %m.rule, phase = m.phase.as_str(), priority = m.priority.as_str(), "alert");
    }
    if !w.outbox.is_empty() {
        b.failpoints.hit(Failpoint::AlertsBeforeCommit);
    }
    let counted: Vec<(&'static str, &'static str)> = w
        .messages
        .iter()
        .map(|m| (m.rule.as_str(), m.phase.as_str()))
        .collect();
    // The outbox rows' topics are named here, with the one builder.
    let op = WriteOp::Alerts(Box::new(AlertCommit::new(w, &b.topics)));
    // Retried like an input: alert state must not silently go missing.
    let first = b.writer.enqueue(op.clone()).await;
    if committed(&b.writer, &b.health, &b.clock, first, &op)
        .await
        .is_ok()
    {
        for (rule, phase) in counted {
            b.metrics.alert_message(rule, phase);
        }
        b.outbox.wake();
        for notice in refused {
            b.summary.rejected += 1;
            b.metrics.rejected(notice.error.code);
            publish_rejected(b, &notice).await;
        }
    }
}

/// The `rejected` notice of a stored command the alert lifecycle refused
/// (`pause_limit`). The command itself is a stored input (its outcome, not
/// applied, is in `alert_commands`); the notice quotes it as parsed, and
/// `received_at` is when it was refused.
fn refused_command_notice(
    b: &StageB,
    alert_id: &str,
    cmd: &AlertCommand,
    r: crate::contract::Rejection,
    now: TimeMs,
) -> RejectedNotice {
    let mut quoted = serde_json::json!({
        "id": cmd.id,
        "time": crate::vocab::format_rfc3339(cmd.time_ms),
        "by": cmd.by,
    });
    match cmd.action {
        crate::contract::CommandAction::Acknowledge => quoted["action"] = "acknowledge".into(),
        crate::contract::CommandAction::Pause { minutes } => {
            quoted["action"] = "pause".into();
            quoted["minutes"] = minutes.into();
        }
    }
    RejectedNotice {
        topic: b.topics.alert_commands(alert_id),
        received_at: crate::vocab::format_rfc3339(now),
        error: intake::RejectedError {
            code: r.code,
            field: r.field,
            message: r.message,
        },
        payload_excerpt: intake::excerpt(quoted.to_string().as_bytes()),
    }
}
