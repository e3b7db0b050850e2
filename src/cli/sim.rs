//! The simulated ward on a broker: `simulate-devices` (publish a ward's
//! traffic to a broker until done or stopped) and the live `demo` (the
//! service, an embedded broker and a simulated ward in this process, the
//! table on stdout). Both log as text to stderr and stop on Ctrl-C or
//! SIGTERM.

use super::args::{DemoArgs, SimulateDevicesArgs};
use super::input_error;
use super::runtime::{self, Ending, Signals};
use dosetrack::simulate;
use std::path::Path;

/// How long what is left of the live demo's runtime (the signal task,
/// anything else) may hold the exit.
const DEMO_SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Logs as text to stderr; `RUST_LOG` overrides `default_filter` (the
/// service's own setup, without its journal or JSON choice).
fn init_logging_with(default_filter: &str) {
    let _ = dosetrack::service::logging::init(
        dosetrack::service::settings::LogFormat::Text,
        default_filter,
    );
}

/// `dosetrack demo` (live): the service, an embedded broker and a simulated
/// ward in this process, the table on stdout.
pub(crate) fn demo_live(
    a: &DemoArgs,
    drug_file: Option<&Path>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use dosetrack::sim::demo::{DemoError, DemoOptions};
    use std::io::IsTerminal as _;
    let duration_ms = simulate::parse_duration_ms(&a.duration)
        .map_err(|m| input_error(format!("--duration: {m}")))?;
    let broker = a
        .broker
        .as_deref()
        .map(dosetrack::service::settings::parse_broker_url)
        .transpose()
        .map_err(input_error)?;
    let opts = DemoOptions {
        duration: std::time::Duration::from_millis(duration_ms.max(0) as u64),
        patients: a.patients,
        speedup: a.speedup,
        seed: a.seed,
        database: a.database.clone(),
        broker,
        drug_file: drug_file.map(Path::to_path_buf),
        ansi: std::io::stdout().is_terminal(),
    };
    // Only warnings: the table is the output (RUST_LOG=info for more).
    // rumqttd logs ordinary disconnects as errors: silent unless asked for.
    init_logging_with("warn,rumqttd=off");
    let result = runtime::block_on(
        Signals::Interrupt,
        Ending::Within(DEMO_SHUTDOWN_LIMIT),
        |stop| dosetrack::sim::demo::run(opts, stop.shutdown, out),
    )?;
    match result {
        Ok(_) => Ok(()),
        Err(e @ (DemoError::Invalid(_) | DemoError::NoBroker)) => Err(input_error(e)),
        Err(e) => Err(anyhow::Error::from(e)),
    }
}

/// `dosetrack simulate-devices`: a simulated ward's pump, patch and
/// medication-record traffic, published to a broker.
pub(crate) fn simulate_devices(a: &SimulateDevicesArgs) -> anyhow::Result<()> {
    use dosetrack::sim::ward as devsim;
    let (host, port) =
        dosetrack::service::settings::parse_broker_url(&a.broker).map_err(input_error)?;
    let duration_ms = simulate::parse_duration_ms(&a.duration)
        .map_err(|m| input_error(format!("--duration: {m}")))?;
    if !(a.speedup.is_finite() && a.speedup >= 1.0) {
        return Err(input_error("--speedup must be a number ≥ 1"));
    }
    init_logging_with("info");
    let now = dosetrack::sim::clock::wall_clock_ms().map_err(input_error)?;
    let mut spec = devsim::WardSpec::new(
        a.patients,
        a.seed,
        devsim::catch_up_start_ms(now, duration_ms, a.speedup),
    );
    spec.prefix = a.topic_prefix.clone();
    let mut ward = devsim::Ward::new(spec);
    let publish = dosetrack::sim::publisher::PublishSpec {
        host,
        port,
        client_id: a.client_id.clone(),
        speedup: a.speedup,
        duration_ms,
        rate_limit_per_s: a.rate_limit,
    };
    let stats = runtime::block_on(Signals::Interrupt, Ending::Wait, |stop| async move {
        dosetrack::sim::publisher::publish_ward(&mut ward, &publish, stop.shutdown).await
    })??;
    eprintln!(
        "published {} messages ({} acknowledged) in {:.1} s",
        stats.sent,
        stats.acked,
        stats.elapsed.as_secs_f64()
    );
    Ok(())
}
