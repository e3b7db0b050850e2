//! The alarm lifecycle on synthetic conditions: condition delays, clear
//! hysteresis, latching, escalation, pause, acknowledgement, the wake-up
//! time, persistence and restore.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dosetrack_core::alerts::lifecycle::Command;
use dosetrack_core::alerts::{
    AlertBook, AlertConfig, AlertMessage, CommandError, Condition, Phase, Priority, Rule,
    RuleDetails, RuleSettings, Scope,
};
use dosetrack_core::vocab::TimeMs;
use serde_json::json;

const S: TimeMs = 1_000;
const MIN: TimeMs = 60_000;
/// An arbitrary epoch so ids and times are not tiny numbers.
const T0: TimeMs = 1_795_000_000_000;

fn p1() -> Scope {
    Scope::Patient("P-1".to_owned())
}

fn cond(rule: Rule, subject: &str, priority: Priority) -> Condition {
    Condition {
        rule,
        subject: subject.to_owned(),
        priority,
        message: format!("{rule} on {subject}"),
        details: RuleDetails::Other(serde_json::Map::new()),
        key_time_ms: None,
        fingerprint: String::new(),
        condition_delay_ms: None,
        model: Some("ketamine/domino".to_owned()),
        assumptions: Vec::new(),
    }
}

/// A config whose `rule` has exactly these settings.
/// The shipped settings, with `redose_due`'s clear delay at 120 s (the
/// timings below are written for it; the shipped 600 s only makes every
/// wait longer).
fn base_cfg() -> AlertConfig {
    let mut cfg = AlertConfig::default();
    cfg.rules
        .insert(Rule::RedoseDue, settings(0, 120, false, None));
    // Every change is an update here; the rate limit has its own test.
    cfg.update_min_interval_min = 0.0;
    cfg
}

fn cfg_with(rule: Rule, settings: RuleSettings) -> AlertConfig {
    let mut cfg = base_cfg();
    cfg.rules.insert(rule, settings);
    cfg
}

fn settings(
    condition_delay_s: u64,
    clear_delay_s: u64,
    latch: bool,
    escalate_after_min: Option<f64>,
) -> RuleSettings {
    RuleSettings {
        enabled: true,
        condition_delay_s,
        clear_delay_s,
        latch,
        escalate_after_min,
    }
}

fn phases(msgs: &[AlertMessage]) -> Vec<Phase> {
    msgs.iter().map(|m| m.phase).collect()
}

/// Run `update` every `step` from `from` to `to` (exclusive) with the
/// conditions `at(t)` gives; every message produced.
fn run(
    book: &mut AlertBook,
    from: TimeMs,
    to: TimeMs,
    step: TimeMs,
    at: impl Fn(TimeMs) -> Vec<Condition>,
) -> Vec<AlertMessage> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.extend(book.update(&p1(), at(t), t));
        t += step;
    }
    out
}

fn count(msgs: &[AlertMessage], phase: Phase) -> usize {
    msgs.iter().filter(|m| m.phase == phase).count()
}

#[test]
fn a_condition_shorter_than_its_delay_raises_nothing() {
    // subtherapeutic: 300 s delay by default.
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::Subtherapeutic, "ce", Priority::Medium)];
    let out = run(&mut book, T0, T0 + 299 * S, 15 * S, |_| c());
    assert!(out.is_empty(), "{out:?}");
    // It goes away at 299 s (before the 300 s delay is reached).
    let out = book.update(&p1(), vec![], T0 + 299 * S);
    assert!(out.is_empty());
    assert!(book.active(&p1(), T0 + 299 * S).is_empty());
    assert_eq!(book.next_at(&p1()), None, "nothing pending any more");
    // Back again: the delay starts over.
    let out = run(&mut book, T0 + 300 * S, T0 + 599 * S, 15 * S, |_| c());
    assert!(out.is_empty(), "the delay restarted: {out:?}");
    assert!(book.take_changes().is_empty(), "nothing to persist");
}

#[test]
fn a_condition_longer_than_its_delay_raises_exactly_once() {
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::Subtherapeutic, "ce", Priority::Medium)];
    assert!(book.update(&p1(), c(), T0).is_empty());
    assert_eq!(
        book.next_at(&p1()),
        Some(T0 + 300 * S),
        "due when the delay ends"
    );
    assert!(book.update(&p1(), c(), T0 + 299 * S).is_empty());
    let out = book.update(&p1(), c(), T0 + 300 * S);
    assert_eq!(phases(&out), vec![Phase::Raised]);
    let m = &out[0];
    assert_eq!(m.rule, Rule::Subtherapeutic);
    assert_eq!(m.priority, Priority::Medium);
    assert_eq!(m.subject, "ce");
    assert_eq!(m.patient_id.as_deref(), Some("P-1"));
    assert!(m.condition_present);
    assert!(!m.technical);
    // Holding on for another 10 min (before its 15 min escalation): silence.
    let out = run(
        &mut book,
        T0 + 315 * S,
        T0 + 300 * S + 10 * MIN,
        15 * S,
        |_| c(),
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(book.active(&p1(), T0 + 20 * MIN).len(), 1);
}

#[test]
fn a_per_condition_delay_overrides_the_rule() {
    let mut book = AlertBook::new(base_cfg());
    let mut c = cond(Rule::ConcentrationHigh, "cp", Priority::High);
    c.condition_delay_ms = Some(15 * MIN);
    let out = run(&mut book, T0, T0 + 15 * MIN, 15 * S, |_| vec![c.clone()]);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(book.next_at(&p1()), Some(T0 + 15 * MIN));
    let out = book.update(&p1(), vec![c.clone()], T0 + 15 * MIN);
    assert_eq!(phases(&out), vec![Phase::Raised]);
}

#[test]
fn clear_hysteresis_absent_shorter_than_clear_delay_neither_clears_nor_re_raises() {
    // redose_due: no delay, 120 s clear delay.
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::RedoseDue, "floor", Priority::Low)];
    let out = book.update(&p1(), c(), T0);
    assert_eq!(phases(&out), vec![Phase::Raised]);
    let id = out[0].alert_id.clone();
    // Absent for 105 s, back, absent again 105 s, back: no message at all.
    let out = run(&mut book, T0 + 15 * S, T0 + 600 * S, 15 * S, |t| {
        let k = (t - T0) / S;
        if (15..120).contains(&k) || (300..405).contains(&k) {
            vec![]
        } else {
            c()
        }
    });
    assert!(out.is_empty(), "flapped: {out:?}");
    let active = book.active(&p1(), T0 + 600 * S);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].alert_id, id, "the same alert throughout");
    assert!(active[0].condition_present);
}

#[test]
fn non_latching_alert_clears_after_the_clear_delay() {
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::RedoseDue, "floor", Priority::Low)];
    book.update(&p1(), c(), T0);
    let gone = T0 + MIN;
    assert!(book.update(&p1(), vec![], gone).is_empty());
    assert_eq!(book.next_at(&p1()), Some(gone + 120 * S));
    assert!(book.update(&p1(), vec![], gone + 119 * S).is_empty());
    let out = book.update(&p1(), vec![], gone + 120 * S);
    assert_eq!(phases(&out), vec![Phase::Cleared]);
    assert_eq!(out[0].details.to_json()["reason"], json!("condition_ended"));
    assert!(!out[0].condition_present);
    assert!(book.active(&p1(), gone + 120 * S).is_empty());
    assert_eq!(book.next_at(&p1()), None);
}

#[test]
fn high_priority_latches_until_acknowledged() {
    // concentration_high: 30 s delay, 120 s clear delay, latching.
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::ConcentrationHigh, "ce", Priority::High)];
    book.update(&p1(), c(), T0);
    let out = book.update(&p1(), c(), T0 + 30 * S);
    assert_eq!(phases(&out), vec![Phase::Raised]);
    let id = out[0].alert_id.clone();
    // The condition ends at +60 s; after the clear delay: one `updated`,
    // latched.
    let out = run(&mut book, T0 + 60 * S, T0 + 240 * S, 15 * S, |_| vec![]);
    assert_eq!(phases(&out), vec![Phase::Updated], "{out:?}");
    assert!(out[0].latched);
    assert!(!out[0].condition_present);
    assert_eq!(
        out[0].details.to_json()["reason"],
        json!("condition_ended_latched")
    );
    assert_eq!(out[0].priority, Priority::High);
    // It stays, and stays silent apart from its escalations.
    let out = run(&mut book, T0 + 240 * S, T0 + 60 * MIN, 15 * S, |_| vec![]);
    assert!(out.iter().all(|m| m.phase == Phase::Escalated), "{out:?}");
    assert_eq!(count(&out, Phase::Cleared), 0);
    let active = book.active(&p1(), T0 + 60 * MIN);
    assert_eq!(active.len(), 1);
    assert!(active[0].latched);
    // Acknowledge: `acknowledged`, then `cleared`.
    let out = book
        .command(&id, &Command::Acknowledge, "rn-1", "cmd-1", T0 + 60 * MIN)
        .unwrap();
    assert_eq!(phases(&out), vec![Phase::Acknowledged, Phase::Cleared]);
    assert_eq!(out[0].acknowledged.as_ref().unwrap().by, "rn-1");
    assert_eq!(
        out[1].details.to_json()["reason"],
        json!("acknowledged_after_condition_ended")
    );
    assert!(book.active(&p1(), T0 + 60 * MIN).is_empty());
    assert_eq!(book.next_at(&p1()), None);
}

#[test]
fn a_latched_alert_whose_condition_returns_is_unlatched_not_re_raised() {
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::ConcentrationHigh, "ce", Priority::High)];
    book.update(&p1(), c(), T0);
    book.update(&p1(), c(), T0 + 30 * S);
    book.update(&p1(), vec![], T0 + 60 * S);
    let out = book.update(&p1(), vec![], T0 + 180 * S);
    assert!(out[0].latched);
    let out = book.update(&p1(), c(), T0 + 200 * S);
    assert_eq!(phases(&out), vec![Phase::Updated]);
    assert!(!out[0].latched);
    assert!(out[0].condition_present);
}

#[test]
fn acknowledged_high_alert_clears_when_its_condition_ends() {
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::ConcentrationHigh, "ce", Priority::High)];
    book.update(&p1(), c(), T0);
    let id = book.update(&p1(), c(), T0 + 30 * S)[0].alert_id.clone();
    let out = book
        .command(&id, &Command::Acknowledge, "rn-1", "cmd-1", T0 + MIN)
        .unwrap();
    assert_eq!(
        phases(&out),
        vec![Phase::Acknowledged],
        "the condition holds"
    );
    assert!(book.update(&p1(), vec![], T0 + 2 * MIN).is_empty());
    let out = book.update(&p1(), vec![], T0 + 4 * MIN);
    assert_eq!(phases(&out), vec![Phase::Cleared]);
}

#[test]
fn escalation_steps_priority_up_on_a_timer_until_acknowledged() {
    let mut book = AlertBook::new(cfg_with(
        Rule::RedoseDue,
        settings(0, 120, false, Some(10.0)),
    ));
    let c = || vec![cond(Rule::RedoseDue, "floor", Priority::Low)];
    let id = book.update(&p1(), c(), T0)[0].alert_id.clone();
    assert_eq!(book.next_at(&p1()), Some(T0 + 10 * MIN));
    let out = run(&mut book, T0 + 15 * S, T0 + 35 * MIN, 15 * S, |_| c());
    assert_eq!(phases(&out), vec![Phase::Escalated; 3], "{out:?}");
    let times: Vec<TimeMs> = out.iter().map(|m| m.time_ms).collect();
    assert_eq!(times, vec![T0 + 10 * MIN, T0 + 20 * MIN, T0 + 30 * MIN]);
    let prios: Vec<Priority> = out.iter().map(|m| m.priority).collect();
    assert_eq!(
        prios,
        vec![Priority::Medium, Priority::High, Priority::High]
    );
    let n: Vec<_> = out
        .iter()
        .map(|m| m.details.to_json()["escalations"].clone())
        .collect();
    assert_eq!(n, vec![json!(1), json!(2), json!(3)]);
    // Acknowledged: no more repeats, and nothing due.
    let out = book
        .command(&id, &Command::Acknowledge, "rn-1", "c1", T0 + 35 * MIN)
        .unwrap();
    assert_eq!(phases(&out), vec![Phase::Acknowledged]);
    assert_eq!(book.next_at(&p1()), None);
    let out = run(&mut book, T0 + 35 * MIN, T0 + 120 * MIN, 15 * S, |_| c());
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn escalation_only_on_the_configured_rule_timer() {
    // With the default config, the escalation times are each rule's.
    let cfg = base_cfg();
    for rule in Rule::ALL {
        let mut book = AlertBook::new(cfg.clone());
        let mut c = cond(rule, "x", Priority::Low);
        c.condition_delay_ms = Some(0);
        let out = book.update(&p1(), vec![c.clone()], T0);
        assert_eq!(phases(&out), vec![Phase::Raised], "{rule}");
        let out = run(&mut book, T0 + 15 * S, T0 + 61 * MIN, 15 * S, |_| {
            vec![c.clone()]
        });
        let expected = cfg
            .rule(rule)
            .escalate_after_min
            .map_or(0, |e| (60.0 / e).floor() as usize);
        assert_eq!(count(&out, Phase::Escalated), expected, "{rule}: {out:?}");
    }
}

#[test]
fn pause_silences_escalation_until_it_ends_and_is_capped() {
    let mut book = AlertBook::new(cfg_with(
        Rule::RedoseDue,
        settings(0, 120, false, Some(10.0)),
    ));
    let c = || vec![cond(Rule::RedoseDue, "floor", Priority::Low)];
    let id = book.update(&p1(), c(), T0)[0].alert_id.clone();
    // Ask for 60 min; the cap is 30 min.
    let at = T0 + 5 * MIN;
    let out = book
        .command(&id, &Command::Pause { minutes: 60.0 }, "rn-1", "c1", at)
        .unwrap();
    assert_eq!(phases(&out), vec![Phase::Paused]);
    assert_eq!(out[0].details.to_json()["granted_min"], json!(30.0));
    assert_eq!(out[0].details.to_json()["requested_min"], json!(60.0));
    assert_eq!(out[0].details.to_json()["max_pause_min"], json!(30.0));
    assert!(out[0].paused_until.is_some());
    assert_eq!(book.get(&id).unwrap().paused_until_ms, Some(at + 30 * MIN));
    assert_eq!(book.next_at(&p1()), Some(at + 30 * MIN), "the pause end");
    // Nothing while paused (the escalation at +10 and +20 min is silenced).
    let out = run(&mut book, at, at + 30 * MIN, 15 * S, |_| c());
    assert!(out.is_empty(), "{out:?}");
    // Pause ends: re-notified as `updated`, reason pause_ended.
    let out = book.update(&p1(), c(), at + 30 * MIN);
    assert_eq!(phases(&out), vec![Phase::Updated]);
    assert_eq!(out[0].details.to_json()["reason"], json!("pause_ended"));
    assert!(
        out[0].condition_present,
        "a pause does not end the condition"
    );
    // The escalation timer restarts from the re-notification.
    assert_eq!(book.next_at(&p1()), Some(at + 40 * MIN));
    let out = run(
        &mut book,
        at + 30 * MIN + 15 * S,
        at + 41 * MIN,
        15 * S,
        |_| c(),
    );
    assert_eq!(phases(&out), vec![Phase::Escalated]);
    assert_eq!(out[0].time_ms, at + 40 * MIN);
}

#[test]
fn pause_does_not_clear_and_acknowledged_pause_end_is_silent() {
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::DeviceFault, "pump-1:occlusion", Priority::High)];
    let id = book.update(&p1(), c(), T0)[0].alert_id.clone();
    book.command(&id, &Command::Pause { minutes: 5.0 }, "rn", "c1", T0)
        .unwrap();
    book.command(&id, &Command::Acknowledge, "rn", "c2", T0 + MIN)
        .unwrap();
    let out = run(&mut book, T0 + MIN, T0 + 30 * MIN, 15 * S, |_| c());
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(book.active(&p1(), T0 + 30 * MIN).len(), 1);
}

#[test]
fn repeated_acknowledge_is_a_no_op_and_unknown_ids_are_errors() {
    let mut book = AlertBook::new(base_cfg());
    let c = || {
        vec![cond(
            Rule::DeviceFault,
            "pump-1:door_open",
            Priority::Medium,
        )]
    };
    let id = book.update(&p1(), c(), T0)[0].alert_id.clone();
    let out = book
        .command(&id, &Command::Acknowledge, "rn-1", "c1", T0 + MIN)
        .unwrap();
    assert_eq!(out.len(), 1);
    book.take_changes();
    let out = book
        .command(&id, &Command::Acknowledge, "rn-2", "c2", T0 + 2 * MIN)
        .unwrap();
    assert!(out.is_empty());
    assert!(book.take_changes().is_empty(), "nothing changed");
    assert_eq!(
        book.get(&id).unwrap().acknowledged.as_ref().unwrap().by,
        "rn-1"
    );
    assert_eq!(
        book.command("al-999-0", &Command::Acknowledge, "rn", "c3", T0),
        Err(CommandError::UnknownAlert("al-999-0".to_owned()))
    );
    // A cleared alert is unknown too.
    book.update(&p1(), vec![], T0 + 3 * MIN);
    book.update(&p1(), vec![], T0 + 5 * MIN);
    assert!(book.get(&id).is_none());
    assert!(matches!(
        book.command(
            &id,
            &Command::Pause { minutes: 5.0 },
            "rn",
            "c4",
            T0 + 6 * MIN
        ),
        Err(CommandError::UnknownAlert(_))
    ));
}

#[test]
fn updated_only_when_the_key_time_moves_enough_or_the_fingerprint_changes() {
    let mut book = AlertBook::new(base_cfg()); // update_shift_min 5
    let at = |key: TimeMs, fp: &str| {
        let mut c = cond(Rule::RedoseDue, "floor", Priority::Low);
        c.key_time_ms = Some(key);
        c.fingerprint = fp.to_owned();
        c
    };
    let k0 = T0 + 30 * MIN;
    book.update(&p1(), vec![at(k0, "a")], T0);
    // Drift by 1 min steps: the 5th minute of drift is an update.
    let mut updates = Vec::new();
    for i in 1..=12 {
        let out = book.update(&p1(), vec![at(k0 + i * MIN, "a")], T0 + i * S);
        if !out.is_empty() {
            assert_eq!(phases(&out), vec![Phase::Updated]);
            updates.push(i);
        }
    }
    assert_eq!(
        updates,
        vec![5, 10],
        "drift is measured from the last notified time"
    );
    assert_eq!(
        book.get(&book.active(&p1(), T0)[0].alert_id)
            .unwrap()
            .key_time_ms,
        Some(k0 + 10 * MIN)
    );
    // A shift just under 5 min: nothing; a new fingerprint: updated.
    assert!(book
        .update(
            &p1(),
            vec![at(k0 + 10 * MIN - 4 * MIN - 59 * S, "a")],
            T0 + 20 * S
        )
        .is_empty());
    let out = book.update(&p1(), vec![at(k0 + 10 * MIN, "b")], T0 + 21 * S);
    assert_eq!(phases(&out), vec![Phase::Updated]);
    // A key time appearing or vanishing is a change.
    let mut c = at(k0, "b");
    c.key_time_ms = None;
    assert_eq!(
        phases(&book.update(&p1(), vec![c], T0 + 22 * S)),
        vec![Phase::Updated]
    );
}

#[test]
fn updates_are_rate_limited_per_alert_but_priority_changes_go_at_once() {
    let mut cfg = base_cfg();
    cfg.update_min_interval_min = 15.0;
    let mut book = AlertBook::new(cfg);
    let with = |fp: &str, p: Priority| {
        let mut c = cond(Rule::RedoseDue, "floor", p);
        c.fingerprint = fp.to_owned();
        c
    };
    book.update(&p1(), vec![with("a", Priority::Low)], T0);
    // A change every minute for an hour: one update per 15 min.
    let mut updates = Vec::new();
    for i in 1..=60 {
        let fp = if i % 2 == 0 { "a" } else { "b" };
        let out = book.update(&p1(), vec![with(fp, Priority::Low)], T0 + i * MIN);
        if !out.is_empty() {
            updates.push(i);
        }
    }
    assert_eq!(updates, vec![1, 16, 31, 46]);
    // A priority change is not held back.
    let out = book.update(&p1(), vec![with("b", Priority::Medium)], T0 + 61 * MIN);
    assert_eq!(phases(&out), vec![Phase::Updated]);
    assert_eq!(out[0].priority, Priority::Medium);
}

#[test]
fn next_at_is_the_exact_next_due_moment() {
    let cfg = base_cfg();
    let mut book = AlertBook::new(cfg);
    assert_eq!(book.next_at(&p1()), None);
    // Pending subtherapeutic (300 s) and a raised redose (no escalation).
    let sub = cond(Rule::Subtherapeutic, "ce", Priority::Medium);
    let red = cond(Rule::RedoseDue, "floor", Priority::Low);
    book.update(&p1(), vec![sub.clone(), red.clone()], T0);
    assert_eq!(book.next_at(&p1()), Some(T0 + 300 * S));
    // Nothing is due before then: stepping to just before changes nothing.
    assert!(book
        .update(&p1(), vec![sub.clone(), red.clone()], T0 + 300 * S - 1)
        .is_empty());
    let out = book.update(&p1(), vec![sub.clone(), red.clone()], T0 + 300 * S);
    assert_eq!(phases(&out), vec![Phase::Raised]);
    // Now the subtherapeutic escalation (15 min) is next.
    assert_eq!(book.next_at(&p1()), Some(T0 + 300 * S + 15 * MIN));
    // Redose absent: its clear in 120 s comes first.
    let t = T0 + 400 * S;
    book.update(&p1(), vec![sub.clone()], t);
    assert_eq!(book.next_at(&p1()), Some(t + 120 * S));
    assert!(book
        .update(&p1(), vec![sub.clone()], t + 120 * S - 1)
        .is_empty());
    assert_eq!(
        phases(&book.update(&p1(), vec![sub.clone()], t + 120 * S)),
        vec![Phase::Cleared]
    );
    assert_eq!(book.next_at(&p1()), Some(T0 + 300 * S + 15 * MIN));
    // Paused: the pause end replaces the escalation.
    let id = book.active(&p1(), t)[0].alert_id.clone();
    let pt = t + 200 * S;
    book.command(&id, &Command::Pause { minutes: 20.0 }, "rn", "c", pt)
        .unwrap();
    assert_eq!(book.next_at(&p1()), Some(pt + 20 * MIN));
    // Other scopes are not mixed in.
    assert_eq!(book.next_at(&Scope::Patient("P-2".to_owned())), None);
}

#[test]
fn stepping_only_at_next_at_gives_the_same_messages_as_a_dense_scan() {
    // A condition present for 40 min, then gone: dense 1 s scan vs. jumping
    // from one next_at to the next (plus the input change times).
    let cfg = cfg_with(Rule::Subtherapeutic, settings(300, 120, false, Some(15.0)));
    let c = |t: TimeMs| {
        if t < T0 + 40 * MIN {
            vec![cond(Rule::Subtherapeutic, "ce", Priority::Medium)]
        } else {
            vec![]
        }
    };
    let mut dense = AlertBook::new(cfg.clone());
    let a = run(&mut dense, T0, T0 + 60 * MIN, S, c);
    let mut sparse = AlertBook::new(cfg);
    let mut b = Vec::new();
    let mut t = T0;
    let changes = [T0 + 40 * MIN];
    while t < T0 + 60 * MIN {
        b.extend(sparse.update(&p1(), c(t), t));
        let next_input = changes.iter().copied().find(|&x| x > t);
        t = match (sparse.next_at(&p1()), next_input) {
            (Some(n), Some(i)) => n.min(i),
            (Some(n), None) => n,
            (None, Some(i)) => i,
            (None, None) => break,
        };
    }
    let key = |m: &AlertMessage| (m.phase, m.time_ms, m.priority);
    assert_eq!(
        a.iter().map(key).collect::<Vec<_>>(),
        b.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(
        phases(&a),
        vec![
            Phase::Raised,
            Phase::Escalated,
            Phase::Escalated,
            Phase::Cleared
        ]
    );
}

#[test]
fn take_changes_returns_the_records_to_persist_including_cleared() {
    let mut book = AlertBook::new(base_cfg());
    let c = || vec![cond(Rule::RedoseDue, "floor", Priority::Low)];
    let id = book.update(&p1(), c(), T0)[0].alert_id.clone();
    let ch = book.take_changes();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].alert_id, id);
    assert_eq!(ch[0].last_phase, Phase::Raised);
    assert_eq!(ch[0].cleared_at_ms, None);
    assert!(book.take_changes().is_empty(), "taken");
    // No change, nothing to persist.
    book.update(&p1(), c(), T0 + MIN);
    assert!(book.take_changes().is_empty());
    // Absent: the record changes (present=false).
    book.update(&p1(), vec![], T0 + 2 * MIN);
    let ch = book.take_changes();
    assert_eq!(ch.len(), 1);
    assert!(!ch[0].present);
    assert_eq!(ch[0].absent_since_ms, Some(T0 + 2 * MIN));
    // Cleared: closed record with its clear time.
    book.update(&p1(), vec![], T0 + 4 * MIN);
    let ch = book.take_changes();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].cleared_at_ms, Some(T0 + 4 * MIN));
    assert_eq!(ch[0].last_phase, Phase::Cleared);
}

#[test]
fn restore_continues_numbering_and_keeps_operator_state() {
    let mut book = AlertBook::new(base_cfg());
    let c = || {
        vec![
            cond(Rule::RedoseDue, "floor", Priority::Low),
            cond(Rule::DeviceFault, "pump-1:occlusion", Priority::High),
        ]
    };
    let out = book.update(&p1(), c(), T0);
    assert_eq!(out.len(), 2);
    let fault = out.iter().find(|m| m.rule == Rule::DeviceFault).unwrap();
    let fault_id = fault.alert_id.clone();
    book.command(&fault_id, &Command::Acknowledge, "rn-1", "c1", T0 + MIN)
        .unwrap();
    let redose_id = out
        .iter()
        .find(|m| m.rule == Rule::RedoseDue)
        .unwrap()
        .alert_id
        .clone();
    book.command(
        &redose_id,
        &Command::Pause { minutes: 10.0 },
        "rn-1",
        "c2",
        T0 + MIN,
    )
    .unwrap();
    let records = book.take_changes();
    let n = book.next_number();
    assert_eq!(n, 3);

    let mut restored = AlertBook::restore(base_cfg(), records, n);
    assert_eq!(restored.next_number(), 3);
    let r = restored.get(&fault_id).unwrap();
    assert_eq!(r.acknowledged.as_ref().unwrap().by, "rn-1");
    assert_eq!(
        restored.get(&redose_id).unwrap().paused_until_ms,
        Some(T0 + 11 * MIN)
    );
    // The same conditions: no re-raise, and the ack still holds (no repeats).
    let out = restored.update(&p1(), c(), T0 + 2 * MIN);
    assert!(out.is_empty(), "{out:?}");
    let out = restored.update(&p1(), c(), T0 + 11 * MIN);
    assert_eq!(phases(&out), vec![Phase::Updated], "the pause ends");
    // A new alert continues the numbering.
    let out = restored.update(
        &p1(),
        [
            c(),
            vec![cond(Rule::Interaction, "clarithromycin", Priority::Medium)],
        ]
        .concat(),
        T0 + 12 * MIN,
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].alert_id.starts_with("al-3-"), "{}", out[0].alert_id);
    // Repeated ack after the restore is still a no-op.
    assert!(restored
        .command(
            &fault_id,
            &Command::Acknowledge,
            "rn-2",
            "c3",
            T0 + 13 * MIN
        )
        .unwrap()
        .is_empty());
}

#[test]
fn restore_with_a_stale_counter_does_not_reuse_ids() {
    let mut book = AlertBook::new(base_cfg());
    book.update(
        &p1(),
        vec![cond(Rule::RedoseDue, "floor", Priority::Low)],
        T0,
    );
    book.update(
        &p1(),
        vec![
            cond(Rule::RedoseDue, "floor", Priority::Low),
            cond(Rule::Interaction, "x", Priority::Medium),
        ],
        T0,
    );
    let records = book.take_changes();
    // The caller passes a counter that is behind the open records.
    let mut restored = AlertBook::restore(base_cfg(), records.clone(), 1);
    let out = restored.update(
        &p1(),
        vec![
            cond(Rule::RedoseDue, "floor", Priority::Low),
            cond(Rule::Interaction, "x", Priority::Medium),
            cond(Rule::ModelDomain, "covariates", Priority::Low),
        ],
        T0,
    );
    assert_eq!(out.len(), 1);
    assert!(
        records.iter().all(|r| r.alert_id != out[0].alert_id),
        "id {} reused",
        out[0].alert_id
    );
    assert_eq!(restored.active(&p1(), T0).len(), 3);
}

#[test]
fn close_scope_clears_everything_including_latched_and_pending() {
    let mut book = AlertBook::new(base_cfg());
    let high = cond(Rule::ConcentrationHigh, "ce", Priority::High);
    book.update(&p1(), vec![high.clone()], T0);
    book.update(&p1(), vec![high.clone()], T0 + 30 * S);
    book.update(&p1(), vec![], T0 + MIN);
    let out = book.update(&p1(), vec![], T0 + 4 * MIN);
    assert!(out[0].latched);
    // Another patient's alert is untouched.
    let p2 = Scope::Patient("P-2".to_owned());
    book.update(&p2, vec![cond(Rule::RedoseDue, "floor", Priority::Low)], T0);
    // A raised redose and a pending subtherapeutic.
    book.update(
        &p1(),
        vec![
            cond(Rule::RedoseDue, "floor", Priority::Low),
            cond(Rule::Subtherapeutic, "ce", Priority::Medium),
        ],
        T0 + 5 * MIN,
    );
    book.take_changes();
    let out = book.close_scope(&p1(), T0 + 6 * MIN, "discharged");
    assert_eq!(phases(&out), vec![Phase::Cleared, Phase::Cleared]);
    assert!(out
        .iter()
        .all(|m| m.details.to_json()["reason"] == json!("discharged")));
    assert!(book.active(&p1(), T0 + 6 * MIN).is_empty());
    assert_eq!(book.next_at(&p1()), None, "the pending one is gone too");
    assert!(!book.scopes().contains(&p1()));
    let ch = book.take_changes();
    assert_eq!(ch.len(), 2);
    assert!(ch.iter().all(|r| r.cleared_at_ms == Some(T0 + 6 * MIN)));
    assert_eq!(book.active(&p2, T0 + 6 * MIN).len(), 1);
}

#[test]
fn device_scope_alerts_have_no_patient() {
    let mut book = AlertBook::new(base_cfg());
    let d = Scope::Device("pump-9".to_owned());
    let c = cond(Rule::UnassignedInput, "device:pump-9", Priority::Medium);
    assert!(
        book.update(&d, vec![c.clone()], T0).is_empty(),
        "60 s delay"
    );
    let out = book.update(&d, vec![c], T0 + MIN);
    assert_eq!(phases(&out), vec![Phase::Raised]);
    assert_eq!(out[0].patient_id, None);
    assert_eq!(out[0].device_id.as_deref(), Some("pump-9"));
    assert!(out[0].technical);
    let v = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(v["patient_id"], serde_json::Value::Null);
    assert_eq!(v["phase"], json!("raised"));
}

#[test]
fn one_alert_per_scope_rule_and_subject() {
    let mut book = AlertBook::new(base_cfg());
    let a = cond(Rule::DeviceFault, "pump-1:occlusion", Priority::High);
    let b = cond(Rule::DeviceFault, "pump-2:occlusion", Priority::High);
    let out = book.update(&p1(), vec![a.clone(), a.clone(), b.clone()], T0);
    assert_eq!(phases(&out), vec![Phase::Raised, Phase::Raised]);
    let ids: std::collections::BTreeSet<_> = out.iter().map(|m| m.alert_id.clone()).collect();
    assert_eq!(ids.len(), 2);
}

/// Scale (issue #6 soak): per-scope work is a range over that scope's
/// entries, not a scan of the whole book. 20,000 patients, each with one
/// open alert and one condition inside its delay: updating every scope
/// twice and asking each one's next wake-up takes ~0.1 s; with a scan per
/// scope it was ~10^9 key comparisons (the soak at 10,000 patients fell to
/// ~50 inputs/s). Scopes must also stay apart: each sees its own entries
/// only.
#[test]
fn per_scope_work_does_not_scan_other_scopes() {
    let mut cfg = cfg_with(Rule::Subtherapeutic, settings(600, 120, false, None));
    cfg.rules
        .insert(Rule::RedoseDue, settings(0, 120, false, None));
    let mut book = AlertBook::new(cfg);
    let scopes: Vec<Scope> = (0..20_000)
        .map(|i| Scope::Patient(format!("P-{i:05}")))
        .collect();
    let both = || {
        vec![
            cond(Rule::RedoseDue, "redose", Priority::Medium),
            cond(Rule::Subtherapeutic, "ce", Priority::Medium),
        ]
    };
    let start = std::time::Instant::now();
    for s in &scopes {
        let msgs = book.update(s, both(), T0);
        assert_eq!(phases(&msgs), vec![Phase::Raised], "{s:?}");
    }
    for s in &scopes {
        assert_eq!(book.next_at(s), Some(T0 + 600 * S), "{s:?}");
        assert_eq!(book.active(s, T0).len(), 1, "{s:?}");
    }
    // The pending condition goes away: nothing left to wake for.
    for s in &scopes {
        book.update(
            s,
            vec![cond(Rule::RedoseDue, "redose", Priority::Medium)],
            T0 + MIN,
        );
        assert_eq!(book.next_at(s), None, "{s:?}");
    }
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "20,000 scopes took {took:?}: per-scope work scans the book"
    );
}

#[test]
fn the_pauses_of_one_occurrence_are_capped_in_total() {
    // Issue #13 item 13: three back-to-back 30-min pauses were all granted.
    let mut cfg = cfg_with(Rule::RedoseDue, settings(0, 120, false, Some(10.0)));
    cfg.max_pause_min = 30.0;
    cfg.max_pause_per_occurrence_min = 70.0;
    let mut book = AlertBook::new(cfg);
    let c = || vec![cond(Rule::RedoseDue, "floor", Priority::Low)];
    let id = book.update(&p1(), c(), T0)[0].alert_id.clone();
    let pause = |book: &mut AlertBook, at: TimeMs, min: f64| {
        book.command(&id, &Command::Pause { minutes: min }, "rn-1", "c", at)
    };
    let granted = |out: &[AlertMessage]| out[0].details.to_json()["granted_min"].clone();
    let out = pause(&mut book, T0, 30.0).unwrap();
    assert_eq!(granted(&out), json!(30.0));
    // A renewal before the first pause ended counts in full.
    let out = pause(&mut book, T0 + 10 * MIN, 30.0).unwrap();
    assert_eq!(granted(&out), json!(30.0));
    // 10 min left of the 70: granted 10, not 30, and said so.
    let out = pause(&mut book, T0 + 20 * MIN, 30.0).unwrap();
    assert_eq!(granted(&out), json!(10.0));
    assert_eq!(out[0].details.to_json()["requested_min"], json!(30.0));
    assert_eq!(book.get(&id).unwrap().paused_until_ms, Some(T0 + 30 * MIN));
    // Nothing left: refused, the alert unchanged.
    let before = book.get(&id).unwrap().clone();
    let err = pause(&mut book, T0 + 25 * MIN, 5.0).unwrap_err();
    assert!(
        matches!(err, CommandError::PauseLimit { cap_min, .. } if cap_min == 70.0),
        "{err:?}"
    );
    assert_eq!(book.get(&id).unwrap(), &before);
    // An acknowledge is still accepted.
    let out = book
        .command(&id, &Command::Acknowledge, "rn-1", "c-ack", T0 + 26 * MIN)
        .unwrap();
    assert_eq!(phases(&out), vec![Phase::Acknowledged]);
    // A new occurrence has its own total.
    let out = book.update(&p1(), vec![], T0 + 40 * MIN);
    let out2 = book.update(&p1(), vec![], T0 + 43 * MIN);
    assert!(
        phases(&out).contains(&Phase::Cleared) || phases(&out2).contains(&Phase::Cleared),
        "{out:?} {out2:?}"
    );
    let id2 = book.update(&p1(), c(), T0 + 50 * MIN)[0].alert_id.clone();
    assert_ne!(id2, id);
    let out = book
        .command(
            &id2,
            &Command::Pause { minutes: 30.0 },
            "rn-1",
            "c2",
            T0 + 51 * MIN,
        )
        .unwrap();
    assert_eq!(out[0].details.to_json()["granted_min"], json!(30.0));
}
