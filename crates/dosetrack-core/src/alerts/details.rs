//! An alert's numbers (the lifecycle message's `details`), typed: one
//! struct per rule and kind of condition ([`RuleDetails`]), and the notes
//! the lifecycle adds ([`LifecycleNotes`]: why it cleared, how often it
//! escalated, what a pause granted).
//!
//! On the wire and in the database `details` is one JSON object with its
//! keys sorted (what the `serde_json::Map` these types replace wrote), the
//! lifecycle's notes among the rule's numbers; a note wins over a rule's
//! key of the same name (`dose_stacking`'s `reason` on a cleared alert).
//! [`AlertDetails`] writes exactly that object, and reads back what any
//! version stored: a stored object is taken as a typed struct only when the
//! struct writes it back byte for byte; otherwise (a shape this version
//! does not write) it is kept verbatim as [`RuleDetails::Other`].

use crate::vocab::Setting;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The input that drove a condition (`cause`), or the dose before a
/// stacked one (`previous`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    pub input_id: String,
    pub source: String,
    /// RFC 3339.
    pub time: String,
    /// The delivery, for people (`IV 20 mg/h`); absent for a device alarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
}

/// At most this many sequence numbers in an `unassigned_input` alert's
/// `input_seqs` (the newest; a device that is never associated would
/// otherwise list every heartbeat it ever sent, without bound).
pub const INPUT_SEQS_MAX: usize = 50;

/// `unassigned_input` about a device's events with no admitted patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnassignedDevice {
    pub device_id: String,
    /// The newest [`INPUT_SEQS_MAX`] at most, ascending.
    pub input_seqs: Vec<i64>,
    /// Only when `input_seqs` is capped: how many are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_seqs_omitted: Option<usize>,
    /// Only when `input_seqs` is capped: how many there are in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_seqs_total: Option<usize>,
}

/// `unassigned_input` about doses of a patient not admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnassignedPatient {
    /// The newest [`INPUT_SEQS_MAX`] at most, ascending.
    pub input_seqs: Vec<i64>,
    /// Only when `input_seqs` is capped: how many are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_seqs_omitted: Option<usize>,
    /// Only when `input_seqs` is capped: how many there are in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_seqs_total: Option<usize>,
}

/// A list of sequence numbers (ascending) capped to its newest
/// [`INPUT_SEQS_MAX`]: the kept ones, and when capped the numbers left out
/// and in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CappedSeqs {
    pub seqs: Vec<i64>,
    pub omitted: Option<usize>,
    pub total: Option<usize>,
}

impl CappedSeqs {
    pub fn of(seqs: &[i64]) -> CappedSeqs {
        let total = seqs.len();
        if total <= INPUT_SEQS_MAX {
            return CappedSeqs {
                seqs: seqs.to_vec(),
                omitted: None,
                total: None,
            };
        }
        let mut newest = seqs.to_vec();
        newest.sort_unstable();
        let kept = newest.split_off(total - INPUT_SEQS_MAX);
        CappedSeqs {
            seqs: kept,
            omitted: Some(total - INPUT_SEQS_MAX),
            total: Some(total),
        }
    }
}

/// `redose_due` (subject `floor`): Ce falls below the analgesic floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedoseFloor {
    pub assumes: String,
    pub below_floor_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    pub ce_ng_per_ml: f64,
    pub floor_ng_per_ml: f64,
    pub lead_min: f64,
    pub model: String,
}

/// `redose_due` (subject `patch_end:…`): a patch reaches its planned end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedosePatchEnd {
    pub assumes: String,
    pub cause: Cause,
    pub model: String,
    pub patch_source: String,
    pub planned_end: String,
}

/// `subtherapeutic`: Ce below the floor during active therapy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subtherapeutic {
    pub assumes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    pub ce_ng_per_ml: f64,
    pub floor_ng_per_ml: f64,
    pub model: String,
}

/// `concentration_high` (subject `ce`): Ce above the ceiling, or predicted
/// to rise above it within the lead time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighCe {
    /// Only for a predicted crossing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_ceiling_at: Option<String>,
    pub assumes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    pub ce_ng_per_ml: f64,
    pub ceiling_ng_per_ml: f64,
    pub cp_ng_per_ml: f64,
    pub model: String,
    /// Every delivery running now (`{source} {what}`).
    pub running: Vec<String>,
}

/// `concentration_high` (subject `cp`): Cp above the ceiling for a
/// sustained time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighCp {
    pub assumes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    pub ce_ng_per_ml: f64,
    pub ceiling_ng_per_ml: f64,
    pub cp_ng_per_ml: f64,
    pub model: String,
    /// Always written; absent from records stored before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sustained_min: Option<f64>,
}

/// `dose_limit`, by kind (the `kind` key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DoseLimit {
    /// A single dose over the bolus limit.
    Bolus(BolusLimit),
    /// One infusion over the rate limit.
    InfusionRate(RateLimit),
    /// Several infusions together over the rate limit, none alone.
    InfusionRateTotal(TotalRateLimit),
    /// The amount given over the last 24 hours.
    #[serde(rename = "cumulative_24h")]
    Cumulative24h(CumulativeLimit),
}

/// `dose_limit`, kind `bolus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BolusLimit {
    pub amount_mg: f64,
    pub assumes: String,
    pub cause: Cause,
    pub dose_mg_per_kg: f64,
    pub limit_mg_per_kg: f64,
    pub limit_source: String,
    pub model: String,
    pub setting: Setting,
    pub weight_kg: f64,
}

/// `dose_limit`, kind `infusion_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub assumes: String,
    pub cause: Cause,
    pub limit_mg_per_kg_per_h: f64,
    pub limit_source: String,
    pub model: String,
    pub rate_mg_per_h: f64,
    pub rate_mg_per_kg_per_h: f64,
    pub setting: Setting,
    pub weight_kg: f64,
}

/// `dose_limit`, kind `infusion_rate_total`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalRateLimit {
    pub assumes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// The running infusions (`{source} {what}`).
    pub infusions: Vec<String>,
    pub limit_mg_per_kg_per_h: f64,
    pub limit_source: String,
    pub model: String,
    pub rate_mg_per_h: f64,
    pub rate_mg_per_kg_per_h: f64,
    pub setting: Setting,
    pub weight_kg: f64,
}

/// `dose_limit`, kind `cumulative_24h`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CumulativeLimit {
    pub assumes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// What the total counts, for people.
    pub counts: String,
    pub limit_mg_per_kg_per_24h: f64,
    pub limit_source: String,
    pub model: String,
    pub setting: Setting,
    pub total_mg: f64,
    pub total_mg_per_kg: f64,
    pub weight_kg: f64,
}

/// Why a dose counts as stacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StackingReason {
    /// Given while the previous dose's Ce was still rising.
    PreviousCeRising,
    /// Given sooner than the route's minimum interval.
    MinInterval,
}

/// `dose_stacking`: a single dose too soon after the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoseStacking {
    pub assumes: String,
    pub cause: Cause,
    pub interval_min: f64,
    pub model: String,
    pub previous: Cause,
    pub reason: StackingReason,
}

/// `device_silent`: a delivering device not heard from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSilent {
    pub assumes: String,
    /// What the model does meanwhile, for people.
    pub consequence: String,
    pub delivering: String,
    pub device_id: String,
    pub expected_within_min: f64,
    /// RFC 3339; `null` when never heard.
    pub last_heard: Option<String>,
    pub model: String,
}

/// `device_fault`: a device alarm, with the model's consequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFault {
    pub assumes: String,
    /// When Ce falls below the floor as a consequence, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_floor_at: Option<String>,
    pub cause: Cause,
    pub code: String,
    /// What `below_floor_at` assumes, with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consequence_assumes: Option<String>,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_message: Option<String>,
    pub model: String,
    /// RFC 3339.
    pub since: String,
}

/// `interaction`: a comedication that changes the model or warrants a
/// warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interaction {
    pub assumes: String,
    pub clearance_multiplier: Option<f64>,
    pub comedication: String,
    pub mechanism: String,
    pub model: String,
    pub model_adjusted: bool,
    pub pd_warning: Option<String>,
    /// By route name (keys sorted by name, as written).
    pub route_f_multipliers: BTreeMap<String, f64>,
    pub source: String,
    pub summary: String,
}

/// `model_domain`: covariates outside the model's validity domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDomain {
    pub assumes: String,
    pub model: String,
    pub warnings: Vec<String>,
}

/// `association_conflict`: device events refused because they named
/// another patient than the device's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationConflict {
    /// The patient the device is associated with (this alert's patient).
    pub associated_patient_id: String,
    /// How this patient's model treats the device meanwhile.
    pub assumes: String,
    pub device_id: String,
    /// Occurrence time of the latest refused event (RFC 3339).
    pub latest_time: String,
    pub model: String,
    /// The patient the latest refused event named.
    pub named_patient_id: String,
    /// Events refused so far (while the device stays with this patient).
    pub refused_count: u64,
    /// Ids of the latest refused events (at most ten).
    pub refused_input_ids: Vec<String>,
}

/// A condition's numbers: one variant per rule and kind of condition.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleDetails {
    UnassignedDevice(UnassignedDevice),
    UnassignedPatient(UnassignedPatient),
    RedoseFloor(RedoseFloor),
    RedosePatchEnd(RedosePatchEnd),
    Subtherapeutic(Subtherapeutic),
    HighCe(HighCe),
    HighCp(HighCp),
    DoseLimit(DoseLimit),
    DoseStacking(DoseStacking),
    DeviceSilent(DeviceSilent),
    DeviceFault(DeviceFault),
    Interaction(Interaction),
    ModelDomain(ModelDomain),
    AssociationConflict(AssociationConflict),
    /// A stored object no struct above writes back byte for byte (a shape
    /// this version does not write), kept verbatim.
    Other(Map<String, Value>),
}

/// The object a struct writes, keys sorted; `None` if it is no object
/// (never, for the structs above).
fn object<T: Serialize>(v: &T) -> Option<Map<String, Value>> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// `T` from `map` if `T` writes `map` back exactly.
fn exactly<T: Serialize + DeserializeOwned>(map: &Map<String, Value>) -> Option<T> {
    let t: T = serde_json::from_value(Value::Object(map.clone())).ok()?;
    (object(&t).as_ref() == Some(map)).then_some(t)
}

impl RuleDetails {
    /// The JSON object written (keys sorted).
    pub fn to_json(&self) -> Map<String, Value> {
        let m = match self {
            RuleDetails::UnassignedDevice(d) => object(d),
            RuleDetails::UnassignedPatient(d) => object(d),
            RuleDetails::RedoseFloor(d) => object(d),
            RuleDetails::RedosePatchEnd(d) => object(d),
            RuleDetails::Subtherapeutic(d) => object(d),
            RuleDetails::HighCe(d) => object(d),
            RuleDetails::HighCp(d) => object(d),
            RuleDetails::DoseLimit(d) => object(d),
            RuleDetails::DoseStacking(d) => object(d),
            RuleDetails::DeviceSilent(d) => object(d),
            RuleDetails::DeviceFault(d) => object(d),
            RuleDetails::Interaction(d) => object(d),
            RuleDetails::ModelDomain(d) => object(d),
            RuleDetails::AssociationConflict(d) => object(d),
            RuleDetails::Other(m) => Some(m.clone()),
        };
        m.unwrap_or_default()
    }

    /// The typed details that write `map` back exactly, else
    /// [`RuleDetails::Other`].
    pub fn from_json(map: Map<String, Value>) -> RuleDetails {
        let typed = exactly(&map)
            .map(RuleDetails::UnassignedDevice)
            .or_else(|| exactly(&map).map(RuleDetails::UnassignedPatient))
            .or_else(|| exactly(&map).map(RuleDetails::RedoseFloor))
            .or_else(|| exactly(&map).map(RuleDetails::RedosePatchEnd))
            .or_else(|| exactly(&map).map(RuleDetails::Subtherapeutic))
            .or_else(|| exactly(&map).map(RuleDetails::HighCe))
            .or_else(|| exactly(&map).map(RuleDetails::HighCp))
            .or_else(|| exactly(&map).map(RuleDetails::DoseLimit))
            .or_else(|| exactly(&map).map(RuleDetails::DoseStacking))
            .or_else(|| exactly(&map).map(RuleDetails::DeviceSilent))
            .or_else(|| exactly(&map).map(RuleDetails::DeviceFault))
            .or_else(|| exactly(&map).map(RuleDetails::Interaction))
            .or_else(|| exactly(&map).map(RuleDetails::ModelDomain))
            .or_else(|| exactly(&map).map(RuleDetails::AssociationConflict));
        typed.unwrap_or(RuleDetails::Other(map))
    }
}

impl Serialize for RuleDetails {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        sorted(self.to_json()).serialize(s)
    }
}

/// A map with its keys sorted whatever `serde_json`'s features (with
/// `preserve_order` its `Map` keeps insertion order).
fn sorted(m: Map<String, Value>) -> BTreeMap<String, Value> {
    m.into_iter().collect()
}

/// What the lifecycle adds to a rule's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleNotes {
    /// Why the alert cleared or was re-notified (`condition_ended`,
    /// `condition_ended_latched`, `acknowledged_after_condition_ended`,
    /// `pause_ended`, `discharged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An `escalated` message: escalations so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalations: Option<u32>,
    /// A `paused` message: the pause asked for, granted and allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pause_min: Option<f64>,
}

impl LifecycleNotes {
    const KEYS: [&'static str; 5] = [
        "reason",
        "escalations",
        "requested_min",
        "granted_min",
        "max_pause_min",
    ];
}

/// An alert's `details`: the rule's numbers and the lifecycle's notes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertDetails {
    pub rule: RuleDetails,
    pub lifecycle: LifecycleNotes,
}

impl Default for RuleDetails {
    /// No numbers (`{}`).
    fn default() -> Self {
        RuleDetails::Other(Map::new())
    }
}

impl AlertDetails {
    /// A condition's numbers, no notes yet.
    pub fn of(rule: RuleDetails) -> AlertDetails {
        AlertDetails {
            rule,
            lifecycle: LifecycleNotes::default(),
        }
    }

    /// The JSON object written: the rule's keys and the notes', sorted; a
    /// note replaces a rule's key of the same name.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.rule.to_json();
        m.extend(object(&self.lifecycle).unwrap_or_default());
        m
    }

    /// The details from a stored object: the notes taken out (when they
    /// read back exactly) and the rest as [`RuleDetails::from_json`] reads
    /// it. An object that is the rule's alone (a `dose_stacking` `reason`)
    /// keeps its keys in the rule's details.
    pub fn from_json(map: Map<String, Value>) -> AlertDetails {
        let whole = RuleDetails::from_json(map.clone());
        if !matches!(whole, RuleDetails::Other(_)) {
            return AlertDetails::of(whole);
        }
        let (notes, rest): (Map<String, Value>, Map<String, Value>) = map
            .clone()
            .into_iter()
            .partition(|(k, _)| LifecycleNotes::KEYS.contains(&k.as_str()));
        let lifecycle = exactly::<LifecycleNotes>(&notes);
        match lifecycle {
            Some(lifecycle) if !notes.is_empty() => AlertDetails {
                rule: RuleDetails::from_json(rest),
                lifecycle,
            },
            _ => AlertDetails::of(whole),
        }
    }
}

impl Serialize for AlertDetails {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        sorted(self.to_json()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for AlertDetails {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Map::<String, Value>::deserialize(d).map(AlertDetails::from_json)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::alerts::{AlertMessage, AlertRecord};

    /// One of each shape the version before these types wrote (condition
    /// details, lifecycle messages, stored records), captured from the
    /// alert tests and two ward days: `details`/`msg`/`rec`, a tab, the JSON.
    const WRITTEN_BEFORE: &str = include_str!("../../tests/data/alert-records.tsv");

    fn lines(kind: &str) -> impl Iterator<Item = &'static str> + '_ {
        WRITTEN_BEFORE
            .lines()
            .filter_map(move |l| l.strip_prefix(kind)?.strip_prefix('\t'))
    }

    #[test]
    fn every_shape_written_before_reads_back_typed_and_writes_the_same_bytes() {
        let mut n = 0;
        for json in lines("details") {
            let d: AlertDetails = serde_json::from_str(json).unwrap();
            assert!(!matches!(d.rule, RuleDetails::Other(_)), "untyped: {json}");
            assert_eq!(d.lifecycle, LifecycleNotes::default(), "{json}");
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
            assert_eq!(serde_json::to_string(&d.rule).unwrap(), json);
            n += 1;
        }
        for json in lines("rec") {
            let r: AlertRecord = serde_json::from_str(json).unwrap();
            assert!(
                !matches!(r.details.rule, RuleDetails::Other(_)) || r.details.to_json().len() <= 1,
                "untyped: {json}"
            );
            assert_eq!(serde_json::to_string(&r).unwrap(), json);
            n += 1;
        }
        for json in lines("msg") {
            let m: AlertMessage = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&m).unwrap(), json);
            n += 1;
        }
        assert!(n > 80, "{n}");
    }

    #[test]
    fn a_struct_writes_its_keys_sorted_as_the_map_did() {
        // Direct serialisation (no detour through a map) gives the same
        // bytes: the fields are declared in key order.
        for json in lines("details") {
            let d = RuleDetails::from_json(serde_json::from_str(json).unwrap());
            let direct = match &d {
                RuleDetails::RedoseFloor(x) => serde_json::to_string(x),
                RuleDetails::RedosePatchEnd(x) => serde_json::to_string(x),
                RuleDetails::Subtherapeutic(x) => serde_json::to_string(x),
                RuleDetails::HighCe(x) => serde_json::to_string(x),
                RuleDetails::HighCp(x) => serde_json::to_string(x),
                RuleDetails::DoseStacking(x) => serde_json::to_string(x),
                RuleDetails::DeviceSilent(x) => serde_json::to_string(x),
                RuleDetails::DeviceFault(x) => serde_json::to_string(x),
                RuleDetails::Interaction(x) => serde_json::to_string(x),
                RuleDetails::ModelDomain(x) => serde_json::to_string(x),
                RuleDetails::AssociationConflict(x) => serde_json::to_string(x),
                RuleDetails::UnassignedDevice(x) => serde_json::to_string(x),
                RuleDetails::UnassignedPatient(x) => serde_json::to_string(x),
                // Internally tagged: `kind` comes first; the map sorts it.
                RuleDetails::DoseLimit(_) | RuleDetails::Other(_) => continue,
            };
            assert_eq!(direct.unwrap(), json);
        }
    }

    #[test]
    fn a_cp_alert_stored_before_sustained_min_was_written_reads_typed() {
        let json = r#"{"assumes":"a","ce_ng_per_ml":410.2,"ceiling_ng_per_ml":500.0,"cp_ng_per_ml":612.0,"model":"ketamine/domino"}"#;
        let d: AlertDetails = serde_json::from_str(json).unwrap();
        match &d.rule {
            RuleDetails::HighCp(cp) => assert_eq!(cp.sustained_min, None),
            other => panic!("{other:?}"),
        }
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
    }

    #[test]
    fn a_lifecycle_reason_replaces_a_stacking_reason_as_the_map_did() {
        let json = lines("details")
            .find(|j| j.contains("\"previous\""))
            .unwrap();
        let mut d: AlertDetails = serde_json::from_str(json).unwrap();
        assert!(matches!(d.rule, RuleDetails::DoseStacking(_)));
        d.lifecycle.reason = Some("condition_ended".to_owned());
        let mut expected: Map<String, Value> = serde_json::from_str(json).unwrap();
        expected.insert("reason".into(), Value::from("condition_ended"));
        let written = serde_json::to_string(&d).unwrap();
        assert_eq!(written, serde_json::to_string(&expected).unwrap());
        // Read back, the stacking reason is gone (as it was from the map):
        // kept verbatim, the note apart.
        let back: AlertDetails = serde_json::from_str(&written).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), written);
        assert_eq!(back.lifecycle.reason.as_deref(), Some("condition_ended"));
    }

    #[test]
    fn an_unknown_shape_is_kept_verbatim() {
        // (As written by a `serde_json::Map`: keys sorted at every level.)
        let json = r#"{"assumes":"a","model":"m","something_new":[1,2.5,{"a":null,"z":1}]}"#;
        let d: AlertDetails = serde_json::from_str(json).unwrap();
        assert!(matches!(d.rule, RuleDetails::Other(_)));
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
    }
}
