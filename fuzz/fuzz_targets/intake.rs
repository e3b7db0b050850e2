//! Fuzz target: arbitrary (topic, payload) bytes through the pure intake
//! and the tracker; see `fuzz/check.rs` for the checks and the case format.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../check.rs"]
#[allow(dead_code)]
mod check;

fuzz_target!(|data: &[u8]| {
    let _ = check::check_case(data);
});
