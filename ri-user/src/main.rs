//! The `ri` binary: parse the command line, run the library, map errors to
//! one line on stderr and exit status 2.

use std::process::ExitCode;

use clap::Parser as _;
use ri::cli::{Cli, Command, list_options};

/// `ri fid decode|of`.
fn fid(action: ri::cli::FidAction, json: bool) -> Result<(), ri::Error> {
    let v = match action {
        ri::cli::FidAction::Decode { fid } => ri::fid::Fid::parse(&fid)
            .map_err(|e| ri::Error::Usage(e.to_string()))?
            .decode(),
        ri::cli::FidAction::Of { name, devices } => ri::fid::of(&name, devices),
    };
    if json {
        println!("{v}");
    } else {
        print!("{}", ri::fid::to_text(&v));
    }
    Ok(())
}

/// `ri count|hist|latency`.
fn agg(opts: Result<ri::agg::AggOptions, String>) -> Result<(), ri::Error> {
    ri::agg::run(&opts.map_err(ri::Error::Usage)?)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, not clap's usage dump: the first line names the fault.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("ri: {first} (see ri --help)");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::List { pid, args } => {
            let opts = list_options(pid, &args);
            ri::list::run(&opts, &mut std::io::stdout().lock()).map(|_| ())
        }
        Command::Trace(args) => match args.options() {
            Ok(opts) => ri::trace::run(&opts).map(|_| ()),
            Err(msg) => Err(ri::Error::Usage(msg)),
        },
        Command::Count(a) => agg(a.common.options(ri::agg::AggKind::Count, a.probes)),
        Command::Hist(a) => agg(a.common.options(ri::agg::AggKind::Hist(a.value), a.probes)),
        Command::Latency(a) => agg(a.common.options(ri::agg::AggKind::Latency, vec![a.probe])),
        Command::Inflight(a) => agg(a
            .common
            .options(ri::agg::AggKind::Inflight(a.end), vec![a.begin])),
        Command::Leaks(a) => agg(a.options()),
        Command::Ctl(args) => match args.options() {
            Ok(opts) => ri::ctl::run(&opts),
            Err(msg) => Err(ri::Error::Usage(msg)),
        },
        Command::Peek(args) => ri::peek::run(&args.options(), &mut std::io::stdout().lock()),
        Command::Types(args) => {
            ri::types::run(&args.options(), &mut std::io::stdout().lock()).map(|_| ())
        }
        Command::Report(args) => args.options().and_then(|opts| ri::report::run(&opts)),
        Command::Fid { action, json } => fid(action, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ri::Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ri: error: {e}");
            ExitCode::from(2)
        }
    }
}
