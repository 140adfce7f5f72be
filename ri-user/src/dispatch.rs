//! Runs a parsed command line: the one place a `Command` becomes a call into
//! the library, shared by the binary and by `ri run` (whose instruments
//! expand into ri's own command lines).

use crate::{
    Error,
    cli::{Command, FidAction, list_options},
};

/// Runs the whole command line: `ri shell -H` keeps the hosts itself (each
/// of its lines runs on them); other commands with `-H` are sent to the
/// hosts before this (`remote::run`).
pub fn run_cli(cli: crate::cli::Cli) -> Result<(), Error> {
    match cli.command {
        Command::Shell(args) if cli.fleet.hosts.is_some() => {
            crate::shell::run(&args, Some(&cli.fleet), run)
        }
        command => run(command),
    }
}

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
    opts.raw = crate::remote::child_active();
    if opts.raw
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

/// `ri peek`: a core, or each process `-p`/`--comm`/`--exe` names, read
/// as an expression or a plain symbol path.
fn peek(args: &crate::cli::PeekArgs) -> Result<(), Error> {
    let out = || std::io::stdout().lock();
    if args.core.is_some() {
        if args.select.exes.len() > 1 {
            return Err(Error::Usage("--core reads one --exe".into()));
        }
        let o = args.expr_options(None).expect("--core reads expressions");
        return crate::view::peek(&o, &mut out());
    }
    let mut opts = args.options();
    crate::select::each(
        args.pid,
        &args.select.selection(),
        args.json,
        |pid| match args.expr_options(Some(pid).filter(|&p| p != 0)) {
            Some(o) => crate::view::peek(&o, &mut out()),
            None => {
                opts.pid = pid;
                crate::peek::run(&opts, &mut out())
            }
        },
    )
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
        Command::Ctl(args) => {
            let mut opts = args.options().map_err(Error::Usage)?;
            let sel = args.select.selection();
            if sel.is_empty() || opts.endpoint.is_none() && args.discover {
                return crate::ctl::run(&opts);
            }
            if args.socket.is_some() {
                return Err(Error::Usage(
                    "--socket cannot be combined with --comm or --exe".into(),
                ));
            }
            let pid = args.pid.map(|p| p as u32);
            crate::select::each(pid, &sel, args.json, |pid| {
                opts.endpoint = Some(crate::ctl::Endpoint::Pid {
                    pid: pid as i32,
                    name: args.name.clone(),
                });
                crate::ctl::run(&opts)
            })
        }
        Command::Peek(args) => peek(&args),
        Command::View(args) => {
            crate::view::run_view(&args.options(), &mut std::io::stdout().lock())
        }
        Command::Types(args) => {
            crate::types::run(&args.options(), &mut std::io::stdout().lock()).map(|_| ())
        }
        Command::Report(args) => {
            if let Some(core) = &args.core {
                if !args.select.selection().is_empty() {
                    return Err(Error::Usage(
                        "--core cannot be combined with --comm or --exe".into(),
                    ));
                }
                return crate::view::core_report::run(
                    core,
                    args.sysroot.as_deref(),
                    &mut std::io::stdout().lock(),
                );
            }
            let mut opts = args.options()?;
            let sel = args.select.selection();
            if !sel.is_empty() && opts.output.is_some() {
                return Err(Error::Usage(
                    "--output writes one report: use -p PID, not --comm or --exe".into(),
                ));
            }
            let pid = args.pid.or(args.pid_flag);
            crate::select::each(pid, &sel, args.json, |pid| {
                opts.pid = pid;
                crate::report::run(&opts)
            })
        }
        Command::Fid { action, json } => fid(action, json),
        Command::Run(args) => {
            args.check().map_err(Error::Usage)?;
            run(crate::cli::instrument_command(&args.options())?)
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
        Command::Shell(args) => crate::shell::run(&args, None, run),
        Command::Count(_)
        | Command::Hist(_)
        | Command::Latency(_)
        | Command::Leaks(_)
        | Command::Inflight(_) => unreachable!("aggregations are run above"),
    }
}
