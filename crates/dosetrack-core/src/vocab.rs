//! Shared vocabulary: the small closed sets of names the contract and the drug
//! file agree on (routes, care settings, sex) and the one time representation
//! used inside the functional core.
//!
//! Inside the core every instant is a [`TimeMs`]: integer milliseconds since
//! the Unix epoch, UTC. Integer milliseconds make event ordering exact and let
//! the PK engine reuse precomputed transition matrices for any interval
//! (see `pk::system`). RFC 3339 text is parsed and formatted only here.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type TimeMs = i64;

/// Milliseconds in one minute; the engine's rate constants are per minute.
pub const MS_PER_MIN: f64 = 60_000.0;

/// Parse an RFC 3339 time with offset into [`TimeMs`].
///
/// Sub-millisecond digits are rounded to the nearest millisecond (half away
/// from zero); the core keeps millisecond resolution, far finer than any
/// pump or medication record reports.
pub fn parse_rfc3339_ms(text: &str) -> Result<TimeMs, TimeParseError> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|e| TimeParseError {
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    let utc = parsed.with_timezone(&Utc);
    let secs = utc.timestamp();
    let nanos = i64::from(utc.timestamp_subsec_nanos());
    let millis = (nanos + 500_000) / 1_000_000;
    secs.checked_mul(1000)
        .and_then(|ms| ms.checked_add(millis))
        .ok_or_else(|| TimeParseError {
            text: text.to_owned(),
            reason: "time out of range".to_owned(),
        })
}

/// Rounded to 0.001: how concentrations, doses per kg and forecasts are
/// reported (the state message, alert details, the API's forecast, relief).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Format a [`TimeMs`] as RFC 3339 UTC (`2026-11-27T10:00:00Z`, with
/// milliseconds only when they are not zero).
pub fn format_rfc3339(t: TimeMs) -> String {
    match Utc.timestamp_millis_opt(t).single() {
        Some(dt) => {
            if t.rem_euclid(1000) == 0 {
                dt.to_rfc3339_opts(SecondsFormat::Secs, true)
            } else {
                dt.to_rfc3339_opts(SecondsFormat::Millis, true)
            }
        }
        None => format!("@{t}ms"),
    }
}

/// A time that could not be parsed as RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not an RFC 3339 time with offset ({reason})")]
pub struct TimeParseError {
    pub text: String,
    pub reason: String,
}

/// Route of administration, as named in the contract (`route` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    IvBolus,
    IvInfusion,
    Im,
    Sc,
    Intranasal,
    Oral,
    Sublingual,
    Rectal,
    Transdermal,
}

impl Route {
    /// Every route, in contract order.
    pub const ALL: [Route; 9] = [
        Route::IvBolus,
        Route::IvInfusion,
        Route::Im,
        Route::Sc,
        Route::Intranasal,
        Route::Oral,
        Route::Sublingual,
        Route::Rectal,
        Route::Transdermal,
    ];

    /// Routes absorbed first-order from a depot after a single amount.
    pub const EXTRAVASCULAR_BOLUS: [Route; 6] = [
        Route::Im,
        Route::Sc,
        Route::Intranasal,
        Route::Oral,
        Route::Sublingual,
        Route::Rectal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::IvBolus => "iv_bolus",
            Route::IvInfusion => "iv_infusion",
            Route::Im => "im",
            Route::Sc => "sc",
            Route::Intranasal => "intranasal",
            Route::Oral => "oral",
            Route::Sublingual => "sublingual",
            Route::Rectal => "rectal",
            Route::Transdermal => "transdermal",
        }
    }

    /// Position of the route in [`Route::ALL`] (tables indexed by route).
    pub fn index(self) -> usize {
        match self {
            Route::IvBolus => 0,
            Route::IvInfusion => 1,
            Route::Im => 2,
            Route::Sc => 3,
            Route::Intranasal => 4,
            Route::Oral => 5,
            Route::Sublingual => 6,
            Route::Rectal => 7,
            Route::Transdermal => 8,
        }
    }

    /// True for routes that go straight into the central compartment.
    pub fn is_intravenous(self) -> bool {
        matches!(self, Route::IvBolus | Route::IvInfusion)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Route {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Route::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "route",
                name: s.to_owned(),
            })
    }
}

/// Care setting; selects which dose limits apply.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// General ward, no intensive monitoring (the contract's default).
    #[default]
    Ward,
    /// Intensive monitoring (ICU, PACU, monitored bay).
    Monitored,
}

impl Setting {
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::Ward => "ward",
            Setting::Monitored => "monitored",
        }
    }
}

impl FromStr for Setting {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ward" => Ok(Setting::Ward),
            "monitored" => Ok(Setting::Monitored),
            _ => Err(UnknownName {
                what: "setting",
                name: s.to_owned(),
            }),
        }
    }
}

/// Sex as a covariate (contract: `female` / `male`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

impl FromStr for Sex {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "female" => Ok(Sex::Female),
            "male" => Ok(Sex::Male),
            _ => Err(UnknownName {
                what: "sex",
                name: s.to_owned(),
            }),
        }
    }
}

/// A name outside one of the closed sets above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{name}'")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let a = parse_rfc3339_ms("2026-11-27T10:00:00Z").unwrap();
        let b = parse_rfc3339_ms("2026-11-27T11:00:00.250+01:00").unwrap();
        assert_eq!(b - a, 250);
        assert_eq!(format_rfc3339(a), "2026-11-27T10:00:00Z");
        assert_eq!(format_rfc3339(b), "2026-11-27T10:00:00.250Z");
    }

    #[test]
    fn rfc3339_rejects_missing_offset() {
        assert!(parse_rfc3339_ms("2026-11-27T10:00:00").is_err());
        assert!(parse_rfc3339_ms("yesterday").is_err());
    }

    #[test]
    fn sub_millisecond_rounds_to_nearest() {
        let a = parse_rfc3339_ms("2026-11-27T10:00:00.0004Z").unwrap();
        let b = parse_rfc3339_ms("2026-11-27T10:00:00.0006Z").unwrap();
        assert_eq!(b - a, 1);
    }

    #[test]
    fn route_names_round_trip() {
        for r in Route::ALL {
            assert_eq!(r.as_str().parse::<Route>().unwrap(), r);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert!("iv".parse::<Route>().is_err());
    }
}
