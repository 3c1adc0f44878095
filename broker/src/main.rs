//! `strand`: the broker and the command-line client in one binary.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One readable line: the stable reason (if any) and the message.
            eprintln!("error: {}", cli::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}
