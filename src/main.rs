//! The `dosetrack` command: parses the arguments, loads the drug file,
//! dispatches to the command's module in [`cli`] and maps errors to exit
//! codes. The commands live in `cli/`; everything else in the library.
//!
//! Exit codes: 0 success (also when stdout's reader went away: `| head`
//! ends the command quietly); 2 bad input (arguments, events file, drug file,
//! patient); 1 anything else (for example a plot that could not be written).

mod cli;

use clap::Parser as _;
use cli::args::{AlertsCommand, Cli, Command, DbCommand, ModelCommand};
use cli::{alerts, offline, read, rejected, service, sim};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Cli::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`dosetrack … | head`): end quietly, as
        // the command's output was wanted no further.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dosetrack: {}", describe(&e));
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

fn run(args: Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if let Command::Generate(g) = &args.command {
        return service::generate(g, &mut stdout);
    }
    let drug_file = args.drug_file.as_deref();
    let f = cli::formulary(drug_file)?;
    let out = &mut stdout;
    match args.command {
        Command::Simulate(a) => offline::simulate(&f, &a, out),
        Command::Forecast(a) => offline::forecast(&f, &a, out),
        Command::Relief(a) => offline::relief(&f, &a, out),
        Command::Model(ModelCommand::Show(a)) => offline::model_show(&f, &a, out),
        Command::Model(ModelCommand::List) => offline::model_list(&f, out),
        Command::Demo(a) if a.offline => offline::demo_offline(&f, &a, out),
        Command::Demo(a) => sim::demo_live(&a, drug_file, out),
        Command::Run(a) => service::run(&a.service),
        Command::CheckConfig(a) => service::check_config(&a, out),
        Command::Db(DbCommand::Backup(a)) => service::db_backup(&a, out),
        Command::Patients(a) => read::patients(&a, out),
        Command::History(a) => read::history(&f, &a, out),
        Command::Events(a) => read::events(&a, out),
        Command::Rejected(a) => rejected::rejected(&a, out),
        Command::SimulateDevices(a) => sim::simulate_devices(&a),
        Command::Alerts(AlertsCommand::Report(a)) => alerts::report(&a, out),
        Command::Alerts(AlertsCommand::List(a)) => alerts::list(&a, out),
        Command::Alerts(AlertsCommand::WardDay(a)) => alerts::ward_day(&a, drug_file, out),
        Command::Generate(g) => service::generate(&g, out),
    }
}

/// Whether `e` comes from writing to a closed pipe (stdout's reader ended).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes, `: `-separated, each said once: a cause whose
/// text its wrapper already shows (`database: {0}` over the store error over
/// SQLite's) is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
