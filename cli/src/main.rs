//! `strand`: the command line of Strand. `strand broker` runs a broker (the
//! `strand-broker` library with a config built from flags and a TOML file);
//! every other command is a client of a running cluster (`strand-client`).

mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = commands::Cli::parse();
    commands::init_logging(&args);
    match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One readable line: the stable reason (if any) and the message.
            eprintln!("error: {}", commands::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}
