//! Runs a parsed command line: the one place a `Command` becomes a call into
//! the library, shared by the binary and by `ri run` (whose instruments
//! expand into ri's own command lines).

use crate::{
    Error,
    cli::{Command, FidAction, list_options},
};

/// `ri fid decode|of`.
fn fid(action: FidAction, json: bool) -> Result<(), Error> {
    let v = match action {
        FidAction::Decode { fid } => crate::fid::Fid::parse(&fid)
            .map_err(|e| Error::Usage(e.to_string()))?
            .decode(),
        FidAction::Of { name, devices } => crate::fid::of(&name, devices),
    };
    if json {
        println!("{v}");
    } else {
        print!("{}", crate::fid::to_text(&v));
    }
    Ok(())
}

/// `ri count|hist|latency|inflight`.
/// Run for a local ri over ssh, counts and histograms print JSON with raw
/// buckets, which the local ri merges.
fn agg(opts: Result<crate::agg::AggOptions, String>) -> Result<(), Error> {
    use crate::agg::AggKind;
    let mut opts = opts.map_err(Error::Usage)?;
    if crate::remote::child_active()
        && matches!(
            opts.kind,
            AggKind::Count | AggKind::Hist(_) | AggKind::Latency | AggKind::Span(_)
        )
    {
        opts.trace.json = true;
    }
    crate::agg::run(&opts)
}

/// `ri session run|show|export`.
fn session(action: crate::cli::SessionAction) -> Result<(), Error> {
    use crate::cli::SessionAction;
    match action {
        SessionAction::Run(a) => {
            crate::capture::run(&a.options().map_err(Error::Usage)?).map(|_| ())?;
        }
        SessionAction::Show { bundle, json } => crate::capture::show(&bundle, json)?,
        SessionAction::Export(a) => crate::capture::export(&a.options())?,
    }
    Ok(())
}

/// `ri manpages DIR`: `ri.1` and one page per subcommand (`ri-list.1`...),
/// from the same definitions the parser uses.
fn man_pages(dir: &std::path::Path) -> Result<(), Error> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(crate::cli::Cli::command(), dir)?;
    Ok(())
}

/// Runs one command to completion.
pub fn run(command: Command) -> Result<(), Error> {
    let command = match command.aggregation() {
        Ok(opts) => return agg(opts),
        Err(other) => *other,
    };
    match command {
        Command::List { pid, args, json } => {
            let opts = list_options(pid, &args, json);
            crate::list::run(&opts, &mut std::io::stdout().lock()).map(|_| ())
        }
        Command::Trace(args) => match args.options() {
            Ok(opts) => crate::trace::run(&opts).map(|_| ()),
            Err(msg) => Err(Error::Usage(msg)),
        },
        Command::Serve(args) => crate::serve::run(args.options()?),
        Command::Ctl(args) => match args.options() {
            Ok(opts) => crate::ctl::run(&opts),
            Err(msg) => Err(Error::Usage(msg)),
        },
        Command::Peek(args) => match args.expr_options() {
            Some(o) => crate::view::peek(&o, &mut std::io::stdout().lock()),
            None => crate::peek::run(&args.options(), &mut std::io::stdout().lock()),
        },
        Command::View(args) => {
            crate::view::run_view(&args.options(), &mut std::io::stdout().lock())
        }
        Command::Types(args) => {
            crate::types::run(&args.options(), &mut std::io::stdout().lock()).map(|_| ())
        }
        Command::Report(args) => match &args.core {
            Some(core) => crate::view::core_report::run(
                core,
                args.sysroot.as_deref(),
                &mut std::io::stdout().lock(),
            ),
            None => args.options().and_then(|opts| crate::report::run(&opts)),
        },
        Command::Fid { action, json } => fid(action, json),
        Command::Run(args) => {
            args.check().map_err(Error::Usage)?;
            run(crate::pack::command(&args.options())?)
        }
        Command::Session { action } => session(action),
        Command::Packs(args) => crate::pack::list(&args.options(), &mut std::io::stdout().lock()),
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            // Generated into memory: clap_complete panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(
                args.shell,
                &mut crate::cli::Cli::command(),
                "ri",
                &mut script,
            );
            std::io::stdout().lock().write_all(&script)?;
            Ok(())
        }
        Command::Manpages(args) => man_pages(&args.dir),
        Command::Top(args) => crate::top::run(&args),
        Command::Shell(args) => crate::shell::run(&args, run),
        Command::Count(_)
        | Command::Hist(_)
        | Command::Latency(_)
        | Command::Leaks(_)
        | Command::Inflight(_) => unreachable!("aggregations are run above"),
    }
}
