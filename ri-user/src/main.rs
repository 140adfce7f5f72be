//! The `ri` binary: parse the command line, run the library, map errors to
//! one line on stderr and exit status 2.

use std::process::ExitCode;

use clap::Parser as _;
use ri::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ri: error: {} (see ri --help)", ri::cli::fault(&e));
            return ExitCode::from(2);
        }
    };
    let result = ri::dispatch::run(cli.command);
    // A `-c` command started early whose probes never got attached.
    ri::session::early::abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ri::Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ri: error: {e}");
            ExitCode::from(2)
        }
    }
}
