//! Releasing ended stays from stage B's memory, and bringing a released
//! patient back from the store when a late input or a readmission concerns
//! them (so that the tracker always equals a full replay).

use super::*;

/// How often, at most, a batch looks for ended stays to release (a scan of
/// the patients held). The history tick looks too, for an idle daemon.
pub(super) const RELEASE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// `state.release_after_discharge_min`, in ms.
pub(in crate::service) fn release_after_ms(cfg: &crate::service::settings::Config) -> TimeMs {
    (cfg.state.release_after_discharge_min * 60_000.0) as TimeMs
}

/// Release from memory every patient whose last stay ended at least
/// `release_after_ms` before `now` (their inputs stay in the store), and
/// give the freed heap back to the system.
pub(super) fn release_ended_stays(b: &mut StageB, now: TimeMs) {
    let due = b.tracker.releasable(now - b.release_after_ms);
    if due.is_empty() {
        return;
    }
    for pid in &due {
        b.tracker.release(pid);
        b.models.remove(pid);
    }
    info!(
        released = due.len(),
        released_total = b.tracker.released_count(),
        "patients whose stay ended released from memory"
    );
    b.metrics
        .set_core_sizes(b.tracker.retained_inputs(), b.alerts.book().entries());
    crate::service::memstats::trim();
}

/// Before `input` is applied: bring back from the store every released
/// patient it concerns (a late input for an ended stay, a readmission), so
/// that the tracker equals a full replay. The input itself is already
/// stored; only the inputs stored before it are read.
pub(super) fn reload_released(b: &mut StageB, input: &TrackedInput) {
    for pid in b.tracker.needs_reload(input) {
        let read = match b.reader.lock() {
            Ok(r) => r.inputs_for_patient(&pid),
            Err(poisoned) => poisoned.into_inner().inputs_for_patient(&pid),
        };
        let stored = match read {
            Ok(s) => s,
            Err(e) => {
                error!(patient_id = %pid, error = %e, "a released patient's inputs could not be read back; their model misses the inputs before this one");
                b.health.database_failing(&e, b.clock.now_ms());
                continue;
            }
        };
        let inputs: Vec<TrackedInput> = stored
            .iter()
            .filter(|s| s.seq < input.seq)
            .filter_map(|s| intake::replay(s).ok())
            .collect();
        info!(patient_id = %pid, inputs = inputs.len(), "released patient reloaded from the store");
        b.tracker.reload(&pid, inputs);
    }
}
