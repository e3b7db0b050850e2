//! The JSON Lines input of the offline `simulate` command: one dose or
//! device event per line (no topic, so a device event names its device).

use super::device::{parse_device_event, DeviceEvent};
use super::fields::{name, required};
use super::json::{check_size, parse_object};
use super::patient::{parse_dose, Dose};
use super::rejection::{missing, Rejection};
use serde::Serialize;

/// One line of a `simulate` JSON Lines file. There is no topic, so a device
/// event carries its `device_id` in the payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulationInput {
    Dose(Dose),
    DeviceEvent {
        device_id: String,
        event: DeviceEvent,
    },
}

/// Parse one line of a `simulate` JSON Lines file. An object with `kind` is
/// a device event and needs a `device_id`; otherwise an object with `route`
/// is a dose; anything else is `missing_field` "route or kind".
pub fn parse_simulation_line(line: &str) -> Result<SimulationInput, Rejection> {
    check_size(line.len())?;
    let obj = parse_object(line)?;
    if obj.contains_key("kind") {
        let device_id = required(&obj, "device_id", name)?;
        let event = parse_device_event(&obj)?;
        Ok(SimulationInput::DeviceEvent { device_id, event })
    } else if obj.contains_key("route") {
        parse_dose(&obj).map(SimulationInput::Dose)
    } else {
        Err(missing(
            "route or kind",
            "a simulation line needs route (a dose) or kind (a device event, with device_id)",
        ))
    }
}
