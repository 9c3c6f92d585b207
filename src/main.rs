//! `agentic-operator`: parse and validate the configuration once, then run.

use std::process::ExitCode;

use agentic_operator::config::{Args, Config, EXIT_BAD_CONFIG};
use agentic_operator::{app, telemetry};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version print to stdout and succeed; anything else is a bad flag.
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    telemetry::init_logging(config.args.dev_mode);
    match app::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            ExitCode::FAILURE
        }
    }
}
