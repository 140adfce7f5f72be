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

/// The options of an aggregating command (`ri count|hist|latency|inflight|
/// leaks`), or the command back when it is another one.
pub fn agg_options(
    command: Command,
) -> Result<Result<crate::agg::AggOptions, String>, Box<Command>> {
    use crate::agg::AggKind;
    Ok(match command {
        Command::Count(a) => a.common.options(AggKind::Count, a.probes),
        Command::Hist(a) => a.common.options(AggKind::Hist(a.value), a.probes),
        Command::Latency(a) => a.options(),
        Command::Leaks(a) => a.options(),
        Command::Inflight(a) => a.common.options(
            AggKind::Inflight(crate::agg::Inflight {
                end: a.end,
                updates: a.update,
                seen: a.seen,
            }),
            vec![a.begin],
        ),
        other => return Err(Box::new(other)),
    })
}

/// Runs one command to completion.
pub fn run(command: Command) -> Result<(), Error> {
    let command = match agg_options(command) {
        Ok(opts) => return crate::agg::run(&opts.map_err(Error::Usage)?),
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
        Command::Count(_)
        | Command::Hist(_)
        | Command::Latency(_)
        | Command::Leaks(_)
        | Command::Inflight(_) => unreachable!("aggregations are run above"),
        Command::Serve(args) => crate::serve::run(args.options()?),
        Command::Ctl(args) => match args.options() {
            Ok(opts) => crate::ctl::run(&opts),
            Err(msg) => Err(Error::Usage(msg)),
        },
        Command::Peek(args) => crate::peek::run(&args.options(), &mut std::io::stdout().lock()),
        Command::Types(args) => {
            crate::types::run(&args.options(), &mut std::io::stdout().lock()).map(|_| ())
        }
        Command::Report(args) => args.options().and_then(|opts| crate::report::run(&opts)),
        Command::Fid { action, json } => fid(action, json),
        Command::Run(args) => {
            args.check().map_err(Error::Usage)?;
            crate::pack::run(&args.options())
        }
        Command::Packs(args) => crate::pack::list(&args.options(), &mut std::io::stdout().lock()),
    }
}
