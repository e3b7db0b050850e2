//! The contract's limits: every accepted numeric range and text length,
//! declared once. Each says where its number comes from: "contract" when
//! the MQTT contract states it, otherwise "dosetrack's plausibility bound"
//! (a bound wide enough for any real use, narrow enough to catch unit and
//! typing errors).

use serde::Serialize;

/// Largest accepted payload, in bytes. Contract: "at most 64 KiB".
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Longest `id`, in characters. Contract: "1 to 128 printable characters".
pub const ID_MAX_CHARS: usize = 128;

/// Longest `patient_id` (contract: "1 to 64 characters of `A-Za-z0-9._-`");
/// dosetrack applies the same rule to `device_id`, `alert_id` and `model`.
pub const NAME_MAX_CHARS: usize = 64;

/// Longest operator identity in a command's `by`. dosetrack's plausibility
/// bound (same as `id`).
pub const BY_MAX_CHARS: usize = 128;

/// Longest comedication name. dosetrack's plausibility bound.
pub const COMEDICATION_MAX_CHARS: usize = 64;

/// Most comedications in one `admit`. dosetrack's plausibility bound.
pub const COMEDICATIONS_MAX_ENTRIES: usize = 64;

/// Longest free text (`message` of an alarm, `site` of a patch).
/// dosetrack's plausibility bound.
pub const TEXT_MAX_CHARS: usize = 1024;

/// When a pump gives both `rate_mg_per_h` and `rate_ml_per_h` ×
/// `concentration_mg_per_ml`, they must agree to within this relative
/// difference. dosetrack's choice: the two forms describe one rate, so
/// anything beyond floating-point rounding is a contradiction.
pub const RATE_AGREEMENT_REL_TOL: f64 = 1e-9;

/// A closed numeric range for one field. The upper end is always inclusive;
/// the lower end is inclusive unless `min_exclusive` (e.g. "greater than 0").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub min: f64,
    pub max: f64,
    pub min_exclusive: bool,
}

impl Range {
    /// `min <= x <= max`.
    pub const fn inclusive(min: f64, max: f64) -> Range {
        Range {
            min,
            max,
            min_exclusive: false,
        }
    }

    /// `min < x <= max`.
    pub const fn above(min: f64, max: f64) -> Range {
        Range {
            min,
            max,
            min_exclusive: true,
        }
    }

    /// True when `x` is finite and inside the range.
    pub fn contains(&self, x: f64) -> bool {
        let above_min = if self.min_exclusive {
            x > self.min
        } else {
            x >= self.min
        };
        x.is_finite() && above_min && x <= self.max
    }

    /// The contract's wording: "`field` must be a finite number from 0 to
    /// 10000" (or "greater than 0 and at most 100" for an exclusive minimum).
    pub fn requirement(&self, field: &str) -> String {
        if self.min_exclusive {
            format!(
                "{field} must be a finite number greater than {} and at most {}",
                self.min, self.max
            )
        } else {
            format!(
                "{field} must be a finite number from {} to {}",
                self.min, self.max
            )
        }
    }
}

/// `weight_kg`, total body weight. Contract: 0.5–400.
pub const WEIGHT_KG: Range = Range::inclusive(0.5, 400.0);
/// `age_years`. dosetrack's plausibility bound.
pub const AGE_YEARS: Range = Range::inclusive(0.0, 130.0);
/// `height_cm`. dosetrack's plausibility bound.
pub const HEIGHT_CM: Range = Range::inclusive(20.0, 280.0);
/// Each value in `targets` (`*_ng_per_ml`). dosetrack's plausibility bound.
pub const TARGET_NG_PER_ML: Range = Range::above(0.0, 100_000.0);
/// `rate_mg_per_h` (pump events, `iv_infusion` doses). Contract: the
/// rejection example ("from 0 to 10000").
pub const RATE_MG_PER_H: Range = Range::inclusive(0.0, 10_000.0);
/// `rate_ml_per_h`. dosetrack's plausibility bound.
pub const RATE_ML_PER_H: Range = Range::inclusive(0.0, 10_000.0);
/// `concentration_mg_per_ml`. dosetrack's plausibility bound.
pub const CONCENTRATION_MG_PER_ML: Range = Range::above(0.0, 1_000.0);
/// `amount_mg` (doses and pump boluses); zero and negative are rejected.
/// dosetrack's plausibility bound.
pub const AMOUNT_MG: Range = Range::above(0.0, 10_000.0);
/// `duration_min` of an `iv_infusion` dose (at most 30 days).
/// dosetrack's plausibility bound.
pub const DURATION_MIN: Range = Range::above(0.0, 43_200.0);
/// `release_rate_mg_per_h` of a patch. dosetrack's plausibility bound.
pub const RELEASE_RATE_MG_PER_H: Range = Range::above(0.0, 100.0);
/// `wear_h` of a patch (at most 14 days). dosetrack's plausibility bound.
pub const WEAR_H: Range = Range::above(0.0, 336.0);
/// `delivered_total_mg` of a pump heartbeat. dosetrack's plausibility bound.
pub const DELIVERED_TOTAL_MG: Range = Range::inclusive(0.0, 10_000_000.0);
/// `skin_temp_c` of a patch heartbeat. dosetrack's plausibility bound.
pub const SKIN_TEMP_C: Range = Range::inclusive(0.0, 50.0);
/// `minutes` of a `pause` command (at most one day; the daemon's configured
/// maximum applies on top). dosetrack's plausibility bound.
pub const PAUSE_MINUTES: Range = Range::above(0.0, 1_440.0);

/// Every numeric field and its range, for documentation and schema checks.
pub const RANGES: [(&str, Range); 16] = [
    ("weight_kg", WEIGHT_KG),
    ("age_years", AGE_YEARS),
    ("height_cm", HEIGHT_CM),
    ("targets.analgesic_floor_ng_per_ml", TARGET_NG_PER_ML),
    (
        "targets.psychotomimetic_caution_ng_per_ml",
        TARGET_NG_PER_ML,
    ),
    ("targets.ceiling_ng_per_ml", TARGET_NG_PER_ML),
    ("rate_mg_per_h", RATE_MG_PER_H),
    ("rate_ml_per_h", RATE_ML_PER_H),
    ("concentration_mg_per_ml", CONCENTRATION_MG_PER_ML),
    ("amount_mg", AMOUNT_MG),
    ("duration_min", DURATION_MIN),
    ("release_rate_mg_per_h", RELEASE_RATE_MG_PER_H),
    ("wear_h", WEAR_H),
    ("delivered_total_mg", DELIVERED_TOTAL_MG),
    ("skin_temp_c", SKIN_TEMP_C),
    ("minutes", PAUSE_MINUTES),
];
