//! The `ri` binary: parse the command line, run the library, map errors to
//! one line on stderr and exit status 2.

use std::process::ExitCode;

use clap::Parser as _;
use ri::cli::Cli;

fn main() -> ExitCode {
    let (args, by_host) = ri::remote::take_by_host(std::env::args_os().collect());
    let mut cli = match Cli::try_parse_from(&args) {
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
    let session_fleet = match cli.session_takes_fleet() {
        Ok(taken) => taken,
        Err(e) => {
            eprintln!("ri: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(protocol) = &cli.fleet.remote_child {
        if let Err(e) = ri::remote::enter_child(protocol) {
            eprintln!("ri: error: {e}");
            return ExitCode::from(2);
        }
    } else if cli.fleet.hosts.is_some()
        && !session_fleet
        && !matches!(cli.command, ri::cli::Command::Shell(_))
    {
        if let ri::cli::Command::Top(top) = &cli.command {
            return ri::top::run_hosts(&cli.fleet, top, &args);
        }
        return ri::remote::run(&cli, args, by_host);
    }
    let result = ri::dispatch::run_cli(cli);
    // A `-c` command started early whose probes never got attached.
    ri::session::early::abort();
    if ri::ctl::defer::held() {
        // A mutation held back for the local ri to confirm.
        match result {
            Ok(()) | Err(ri::Error::Ctl(ri::ctl::CtlError::Deferred(_))) => {}
            Err(e) => eprintln!("ri: error: {e}"),
        }
        return ExitCode::from(ri::ctl::defer::NEEDS_CONFIRMATION);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ri::Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ri: error: {e}");
            ExitCode::from(2)
        }
    }
}
