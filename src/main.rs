//! The `pequod` binary: the operator, the offline renderer, and the evaluation worker.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pequod::cli::Cli::parse();
    pequod::cli::init_logging(&cli);
    match pequod::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(detail) = error.detail() {
                eprintln!();
                eprintln!("{}", detail.trim_end());
            }
            ExitCode::from(error.exit_code())
        }
    }
}
