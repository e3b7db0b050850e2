//! The drug file's two complete tables: a [`RouteSpec`] for every route and
//! [`DoseLimits`] for both care settings.
//!
//! Validation refuses a file that lacks a route or a setting, and these
//! types cannot hold one that does: a lookup always has an answer, so no
//! caller handles (or panics on) a missing entry. Both serialise as the
//! maps they replace (`{"iv_bolus": …, …}`, `{"ward": …, "monitored": …}`).

use super::{DoseLimits, RouteSpec};
use crate::vocab::{Route, Setting};
use serde::{Serialize, Serializer};

/// One [`RouteSpec`] per route, in [`Route::ALL`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    specs: [RouteSpec; 9],
}

impl RouteTable {
    /// The table from one spec per route in [`Route::ALL`] order; `None`
    /// unless there are exactly nine.
    pub(super) fn from_ordered(specs: Vec<RouteSpec>) -> Option<RouteTable> {
        specs.try_into().ok().map(|specs| RouteTable { specs })
    }

    /// The general entry of `route` (no model's overrides).
    pub fn get(&self, route: Route) -> &RouteSpec {
        &self.specs[route.index()]
    }

    /// Every route with its entry, in [`Route::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Route, &RouteSpec)> {
        Route::ALL.into_iter().zip(self.specs.iter())
    }

    /// The number of routes (always all of them).
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Never: the table has every route.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

impl std::ops::Index<&Route> for RouteTable {
    type Output = RouteSpec;
    fn index(&self, route: &Route) -> &RouteSpec {
        self.get(*route)
    }
}

impl Serialize for RouteTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// The dose limits of both care settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingLimits {
    ward: DoseLimits,
    monitored: DoseLimits,
}

impl SettingLimits {
    pub(super) fn new(ward: DoseLimits, monitored: DoseLimits) -> SettingLimits {
        SettingLimits { ward, monitored }
    }

    /// The limits of `setting`.
    pub fn get(&self, setting: Setting) -> &DoseLimits {
        match setting {
            Setting::Ward => &self.ward,
            Setting::Monitored => &self.monitored,
        }
    }

    /// Both settings with their limits (ward, then monitored).
    pub fn iter(&self) -> impl Iterator<Item = (Setting, &DoseLimits)> {
        [
            (Setting::Ward, &self.ward),
            (Setting::Monitored, &self.monitored),
        ]
        .into_iter()
    }

    /// Both settings' limits (ward, then monitored).
    pub fn values(&self) -> impl Iterator<Item = &DoseLimits> {
        self.iter().map(|(_, l)| l)
    }
}

impl std::ops::Index<&Setting> for SettingLimits {
    type Output = DoseLimits;
    fn index(&self, setting: &Setting) -> &DoseLimits {
        self.get(*setting)
    }
}
