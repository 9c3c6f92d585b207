//! `agentic-operator`: parse and validate the configuration once, then run. `agentic-operator
//! session-trigger` (what the platform's scheduled-session CronJobs run) is configured by
//! environment only and runs once.

use std::ffi::OsString;
use std::process::ExitCode;

use agentic_operator::app;
use agentic_operator::config::{Args, Config, EXIT_BAD_CONFIG};
use agentic_operator::observability::logging;
use agentic_operator::trigger::{self, TriggerConfig};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv = std::env::args_os().skip(1);
    if argv
        .next()
        .is_some_and(|first| first == trigger::SUBCOMMAND)
    {
        return session_trigger(argv.collect()).await;
    }
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
    logging::init_logging(config.args.dev_mode);
    match app::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

/// `session-trigger`: no arguments besides `--help`; one line on stdout saying what it did, or
/// the error on stderr.
async fn session_trigger(args: Vec<OsString>) -> ExitCode {
    if let Some(arg) = args.first() {
        if arg == "--help" || arg == "-h" {
            print!("{}", trigger::USAGE);
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "error: session-trigger takes no arguments, only environment variables\n\n{}",
            trigger::USAGE
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let config = match TriggerConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match trigger::run(&config).await {
        Ok(outcome) => {
            println!("session-trigger: {outcome}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            // Every variant's message carries its cause.
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
