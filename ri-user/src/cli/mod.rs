//! The command line: every subcommand and flag is defined and documented
//! here once; `dispatch` runs them.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{list::ListOptions, trace::TraceOptions};

mod agg;
mod interactive;
mod pack;
mod serve;
mod session;
pub use agg::{AggCommon, CountArgs, HistArgs, InflightArgs, LatencyArgs, LeaksArgs};
pub use interactive::{CompletionsArgs, ManpagesArgs, ShellArgs, TopArgs};
pub use pack::{PacksArgs, RunArgs, instrument_aggregation, instrument_command};
pub use serve::ServeArgs;
pub use session::{SessionAction, SessionExportArgs, SessionRunArgs};

/// ri: run-time instruments for live services.
#[derive(Debug, Parser)]
#[command(
    name = "ri",
    version,
    about = "Run-time instruments for live services: trace, count and time their functions (eBPF), read their memory, drive their control sockets",
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Where to run it: other hosts through ssh.
    #[command(flatten)]
    pub fleet: crate::remote::FleetArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List functions that can be probed, as ready-to-paste probe strings.
    ///
    /// `ri list TARGET [PATTERN]` lists a binary or library;
    /// `ri list -p PID [PATTERN]` lists a process's executable and libraries;
    /// `ri list -p PID TARGET PATTERN` resolves TARGET in that process.
    List {
        /// Process whose executable and mapped libraries to list.
        #[arg(short, long)]
        pid: Option<u32>,
        /// TARGET (a path or library name) and/or a glob PATTERN.
        #[arg(num_args = 0..=2, value_name = "TARGET|PATTERN")]
        args: Vec<String>,
        /// One JSON object per probe point: kind, probe, file, args.
        #[arg(long)]
        json: bool,
    },
    /// Attach probes and print what they capture.
    ///
    /// PROBE is `uprobe:TARGET:FUNC[+OFF][(name=EXPR, ...)] [if EXPR]`
    /// (short `u:`; `uretprobe:`/`ur:` for returns). EXPR may use arg0..argN,
    /// retval, registers, pid, tid, uid, nsecs, cpu, comm, integer arithmetic,
    /// casts like (u32*), dereference, str(ADDR[, LEN]) and buf(ADDR, LEN);
    /// with debug info, parameters by name, `->`, `.`, `[i]`. In a `ur:`
    /// probe, arguments and parameters are the call's own (saved at its
    /// entry); what they point to is read at the return.
    Trace(TraceArgs),
    /// Count hits per probe in the kernel, optionally per key (--by).
    ///
    /// Nothing is sent per hit: the kernel counts in a map that ri reads
    /// at each --interval and at exit.
    Count(CountArgs),
    /// A histogram of --value per probe (and per --by key), in the kernel:
    /// bars by power of two, exact count/mean/min/max, p50/p90/p99.
    Hist(HistArgs),
    /// Time from a function's entry to its return, per thread: a histogram
    /// in ns, exact count/mean/min/max, and p50/p90/p99 within 3.2%.
    ///
    /// A filter on the probe applies at entry; --by keys are evaluated at
    /// the return (pid, tid, comm, retval; not arguments).
    ///
    /// `--begin 'PROBE(key=EXPR, FIELD=EXPR...)' --end 'PROBE(key=EXPR)'`
    /// instead times each begin to the end with the same key, on any thread
    /// of the process, one histogram per value of the begin's FIELDs (and
    /// --by, evaluated at the begin). An end without a begin is not counted.
    Latency(LatencyArgs),
    /// Operations begun and not yet ended, oldest first, with their age.
    ///
    /// `--begin 'PROBE(key=EXPR, FIELD=EXPR...)' --end 'PROBE(key=EXPR)'`:
    /// the kernel keeps each begun key with its fields until its end; ri
    /// lists what is left at each --interval and at exit.
    Inflight(InflightArgs),
    /// Outstanding allocations grouped by the stack that allocated them,
    /// like BCC's memleak, for malloc/free or any allocator pair.
    ///
    /// `ri leaks ALLOC_PROBE FREE_PROBE`: at the allocator's entry the
    /// kernel keeps --size for the thread; at its return it stores the
    /// returned block with that size, the time and the caller's stack; the
    /// release function's entry forgets the block. --also-alloc and
    /// --also-free add allocators and release functions of the same heap
    /// (e.g. m0_alloc_nz, m0_free_aligned). ri lists what is left,
    /// largest first, at each --interval and at exit. Blocks allocated
    /// before ri attached are not seen.
    Leaks(LeaksArgs),
    /// Talk to a target's control socket (targets linked with ri-control).
    ///
    /// `ri ctl --discover` lists control sockets; `ri ctl -p PID --list` lists
    /// a target's commands; `ri ctl -p PID COMMAND [ARGS...]` runs one. ARGS
    /// are `key=value`, or values for the command's required arguments in
    /// order; a value is JSON when it parses as JSON, else a string. A
    /// command that changes the target asks first on a terminal and
    /// otherwise needs --yes.
    Ctl(CtlArgs),
    /// Print a live process's memory as a typed value, like gdb's print.
    ///
    /// `ri peek -p PID SYMBOL` prints a global or static variable;
    /// `ri peek -p PID ADDRESS TYPE` prints the TYPE (e.g. 'struct foo') at
    /// ADDRESS. Types and variables come from the DWARF of the executable
    /// and every library it maps, in that order (like gdb), or of --target;
    /// `LIB:SYMBOL` (or `LIB:TYPE`) picks one file. The output names the
    /// file. Pointers are followed --depth hops; function pointers print as
    /// `0x... <function>`; unreadable memory as <unreadable 0x...>.
    Peek(PeekArgs),
    /// Walk a process's state with a pack's view (see `ri packs`).
    ///
    /// `ri view motr.runq -p PID` lists the FOMs queued in every locality,
    /// read from memory without the process's help (live or --core).
    View(ViewArgs),
    /// Show a binary's structs, unions, enums and typedefs, like pahole.
    ///
    /// `ri types TARGET [PATTERN]`: member offsets and sizes, bitfields,
    /// holes and padding, enum values. TARGET is a path or a library name;
    /// PATTERN a glob over type names (default all). `ri types -p PID
    /// [LIB:]PATTERN` searches every file the process maps (executable
    /// first), or the one LIB names.
    Types(TypesArgs),
    /// A guru-meditation report on a live process, from outside.
    ///
    /// `ri report PID` (or `-p PID`): the process (ids, command line,
    /// executable and build-id, times, cgroup, scheduling, limits), its
    /// packages, every thread with its symbolized stack (each thread is
    /// stopped briefly, one at a time; the pauses are printed), descriptors,
    /// sockets, memory, configuration (secret-looking environment values
    /// redacted), and the sections a target running ri-control adds.
    Report(ReportArgs),
    /// Run a named instrument of a probe pack (see `ri packs`).
    ///
    /// `ri run motr.queue -p PID` expands the instrument into ri's own
    /// trace/count/hist/latency/inflight/leaks command, with its probes
    /// resolved in the pack's targets (the first mapped object that has the
    /// symbol), and runs it. -p, -c, --duration, --json, --interval and -q
    /// pass through; NAME=VALUE sets an instrument's parameter.
    Run(RunArgs),
    /// List probe packs, their instruments and where each pack came from.
    ///
    /// Packs are built in and read from /usr/share/ri/probes, /etc/ri/probes,
    /// ~/.config/ri/probes and --pack FILE; a later pack of the same name
    /// replaces an earlier one. `ri packs PACK` also lists its probe points.
    Packs(PacksArgs),
    /// Capture sessions: run a session file into a bundle, show or export
    /// a bundle (docs/SESSIONS.md).
    Session {
        /// What to do.
        #[command(subcommand)]
        action: SessionAction,
    },
    /// Keep instruments attached and serve them as Prometheus metrics.
    ///
    /// `ri serve motr.ops motr.fops -p PID` keeps the pack instruments (or
    /// the ri commands of --config FILE) attached and serves `/metrics`
    /// (counts as counters, histograms and latencies as histograms,
    /// in-flight operations and leaks as gauges), read from the kernel's
    /// maps at each scrape. SIGHUP reloads --config; instruments left
    /// unchanged keep their counters.
    Serve(ServeArgs),
    /// Motr fids: decode one, or map an object name to its fids.
    Fid {
        /// What to do.
        #[command(subcommand)]
        action: FidAction,
        /// JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// A full-screen live view of a pack's instruments, refreshed each second.
    ///
    /// `ri top motr -p PID`: requests per second and p50/p99 per opcode,
    /// requests in flight (oldest first), sessions, allocation rate and
    /// outstanding bytes. Other packs show each aggregating instrument.
    /// Everything comes from in-kernel aggregations. Keys: Tab or 1-9 switch
    /// panes, s changes the sort, q quits (and detaches). --once prints one
    /// frame as text (with -H, one per host; the full screen watches one
    /// host). --comm and --exe pick the processes running when top starts.
    Top(TopArgs),
    /// An interactive session: every ri command without `ri`, with history,
    /// Ctrl-R, tab completion, and instruments kept attached in the background.
    ///
    /// `start PACK.INSTRUMENT [ARGS] as NAME` starts one in the background,
    /// `jobs` lists them, `show NAME` prints its current totals, `stop NAME`
    /// detaches it, `save FILE` writes the shell's commands as a session
    /// file that `ri session run` replays, `exit` (or Ctrl-D) detaches
    /// everything. Ctrl-C stops the foreground command. --comm and --exe
    /// pick the processes running when the shell starts. With -H HOSTS
    /// every ri command runs on those hosts, over one ssh connection per
    /// host kept open for the whole shell (`start` stays local and is
    /// refused over hosts).
    Shell(ShellArgs),
    /// Print a completion script: `ri completions bash > /etc/bash_completion.d/ri`.
    Completions(CompletionsArgs),
    /// Write man pages for ri and every subcommand into DIR.
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

/// `ri fid` actions.
#[derive(Debug, Subcommand)]
pub enum FidAction {
    /// Type, container, key; for a cob its device and its object's fid.
    Decode {
        /// A fid, `<container:key>` in hex.
        fid: String,
    },
    /// An object name's id, fid and cob fids (the motr-shaped service's mapping).
    Of {
        /// The object name.
        name: String,
        /// Data devices the object is striped over (plus one parity device).
        #[arg(long, default_value_t = 3)]
        devices: u32,
    },
}

/// Processes chosen by name, on top of `-p`: for the probing commands
/// those running now and those that start while ri runs; for `report`,
/// `ctl` and `peek` every one running now.
#[derive(Clone, Debug, Default, Args)]
pub struct SelectArgs {
    /// Every process with this name, as /proc/PID/comm has it (repeatable).
    /// Probing commands also attach to those that start later and detach
    /// from those that exit; the run then ends on --duration or Ctrl-C.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Every process running this executable file (the same file: device
    /// and inode), like --comm (repeatable).
    #[arg(long = "exe", value_name = "PATH")]
    pub exes: Vec<std::path::PathBuf>,
}

impl SelectArgs {
    /// The library's form of these flags.
    pub fn selection(&self) -> crate::select::Selection {
        crate::select::Selection {
            comms: self.comms.clone(),
            exes: self.exes.clone(),
        }
    }
}

/// Which processes a probing command watches, for how long, and how it
/// prints typed values; shared by `trace` and the aggregating commands.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Trace only this process (repeatable); the run ends when every one
    /// of them has exited (unless --comm or --exe is given too).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Processes by name.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Start this command with the probes attached; stop when it exits.
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub command: Option<String>,
    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Print no attach message and no summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print whole values of type TYPE (a struct tag or typedef) with
    /// FORMATTER: fid (`<container:key>`), u128 (`hi:lo`), hex, or default
    /// (field by field); over ri's own m0_fid=fid and m0_uint128=u128.
    #[arg(long = "format", value_name = "TYPE=FORMATTER")]
    pub formats: Vec<String>,
    /// Stacks the kernel's stack map holds (with --stack or a `stack`
    /// capture), 256 to 262144; stacks whose hash bucket is taken go to a
    /// second map a quarter that size, and what fits in neither is counted.
    #[arg(long, default_value_t = ri_common::STACK_ENTRIES, value_name = "N",
          value_parser = clap::value_parser!(u32).range(256..=262144))]
    pub stack_map: u32,
    /// Bound the CPU time ri adds to the probed processes to PCT percent
    /// of one CPU (estimated every 10 ms from per-site hits and the
    /// measured cost of a hit): over it, the hottest sites are detached and
    /// named, their counts kept up to then and marked partial. On at 5%
    /// when a probe string matches several sites (wildcards), otherwise
    /// off unless given; `off` never detaches.
    #[arg(long, value_name = "PCT|off", default_value = "auto", hide_default_value = true,
          value_parser = crate::budget::MaxOverhead::parse)]
    pub max_overhead: crate::budget::MaxOverhead,
}

impl ScopeArgs {
    /// The `--format` choices.
    pub fn formatters(&self) -> Result<crate::dwarf::value::Formatters, String> {
        crate::dwarf::value::Formatters::parse(&self.formats)
    }
}

/// Parses an optional positive number of seconds given to `flag`.
pub fn seconds(flag: &str, v: Option<f64>) -> Result<Option<Duration>, String> {
    match v {
        Some(d) if !(d > 0.0 && d.is_finite()) => Err(format!(
            "{flag} must be a positive number of seconds, not {d}"
        )),
        d => Ok(d.map(Duration::from_secs_f64)),
    }
}

/// Options of `ri trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Probe strings.
    #[arg(required = true, value_name = "PROBE")]
    pub probes: Vec<String>,
    /// Which processes, and for how long.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// One JSON object per event.
    #[arg(long)]
    pub json: bool,
    /// Capture the user stack at each probe too (as a `stack` capture).
    #[arg(long)]
    pub stack: bool,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = ri_common::DEFAULT_RING_BYTES >> 20, value_name = "MIB")]
    pub buffer_size: u32,
    /// Add a field NAME formatted like C's printf: FORMAT is a captured
    /// string, ARGS captured bytes holding the arguments as 8-byte words (or
    /// at the offsets and sizes of the captured int arrays OFFSETS and SIZES;
    /// COUNT a captured number of arguments); %s strings are read from the
    /// process. As `NAME=FORMAT,ARGS[,OFFSETS,SIZES[,COUNT]]` (repeatable).
    #[arg(long, value_name = "SPEC")]
    pub printf: Vec<String>,
    /// Text lines as TEMPLATE, each {FIELD} replaced by the event's capture
    /// or --printf field (`{file}:{line} {func}: {msg}`; {{ and }} are
    /// braces); an event without those fields prints as usual. JSON keeps
    /// every field.
    #[arg(long, value_name = "TEMPLATE")]
    pub text: Option<String>,
    /// Show only events that happen on the same thread during a call of
    /// this entry probe's function, with its captures first: e.g.
    /// `u:m0d:m0_stob_io_prepare_and_launch(cob=obj->so_id.si_fid)`; its
    /// filter picks the calls that count (nested and recursive calls are
    /// told apart by their stack frame; the innermost one counts). Probes
    /// of that function itself are refused: capture in PROBE instead.
    #[arg(long, value_name = "PROBE")]
    pub within: Option<String>,
    /// Attach an empty program instead of the plan (benchmark baseline).
    #[arg(long, hide = true)]
    pub bare: bool,
}

impl TraceArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> Result<TraceOptions, String> {
        if !self.buffer_size.is_power_of_two() || self.buffer_size > 1024 {
            return Err(format!(
                "--buffer-size must be a power of two up to 1024 MiB, not {}",
                self.buffer_size
            ));
        }
        let probes = if self.stack {
            self.probes
                .iter()
                .map(|p| crate::probe::add_capture(p, "stack=stack"))
                .collect()
        } else {
            self.probes.clone()
        };
        Ok(TraceOptions {
            probes,
            pids: self.scope.pids.clone(),
            select: self.scope.select.selection(),
            command: self.scope.command.clone(),
            duration: seconds("--duration", self.scope.duration)?,
            json: self.json,
            ring_bytes: self.buffer_size << 20,
            stack_entries: self.scope.stack_map,
            bare: self.bare,
            quiet: self.scope.quiet,
            formatters: self.scope.formatters()?,
            printf: self
                .printf
                .iter()
                .map(|s| crate::trace::PrintfSpec::parse(s))
                .collect::<Result<_, _>>()?,
            text: (self.text.as_deref())
                .map(crate::sink::Template::parse)
                .transpose()?,
            within: self.within.clone(),
            max_overhead: self.scope.max_overhead,
        })
    }
}

/// The one line naming what clap refused (its first line, without
/// `error: `), instead of its usage dump.
pub fn fault(e: &clap::Error) -> String {
    // Rendered without terminal colours, so the prefix is plain text.
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("bad arguments");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Interprets `ri list`'s positional arguments.
pub fn list_options(pid: Option<u32>, args: &[String], json: bool) -> ListOptions {
    let (target, pattern) = match (pid, args) {
        (_, []) => (None, None),
        (Some(_), [p]) => (None, Some(p.clone())),
        (None, [t]) => (Some(t.clone()), None),
        (_, [t, p, ..]) => (Some(t.clone()), Some(p.clone())),
    };
    ListOptions {
        target,
        pid,
        pattern,
        json,
    }
}

/// Options of `ri ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// List the control sockets on this machine (pid, name, path, alive).
    #[arg(long, conflicts_with_all = ["pid", "socket", "name", "list", "command"])]
    pub discover: bool,
    /// The target process.
    #[arg(short, long, value_name = "PID", value_parser = clap::value_parser!(i32).range(1..))]
    pub pid: Option<i32>,
    /// Every process running now with this name or executable, instead
    /// of -p: one section per process.
    #[command(flatten)]
    pub select: SelectArgs,
    /// The control socket, instead of -p.
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub socket: Option<std::path::PathBuf>,
    /// The control server's name, when the process has several.
    #[arg(long, value_name = "NAME", requires = "pid")]
    pub name: Option<String>,
    /// List the target's commands.
    #[arg(long, conflicts_with = "command")]
    pub list: bool,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
    /// Run a mutating command without asking.
    #[arg(short, long)]
    pub yes: bool,
    /// The command to run.
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
    /// Its arguments: key=value, or values of its required arguments in order.
    #[arg(value_name = "ARGS", allow_negative_numbers = true)]
    pub args: Vec<String>,
}

impl CtlArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> Result<crate::ctl::CtlOptions, String> {
        use crate::ctl::{Action, CtlOptions, Endpoint};
        let action = match (&self.command, self.discover, self.list) {
            (_, true, _) => Action::Discover,
            (None, _, true) => Action::List,
            (Some(c), _, _) => Action::Call {
                command: c.clone(),
                args: self.args.clone(),
            },
            (None, _, false) => {
                return Err("ri ctl needs a COMMAND, --list or --discover".into());
            }
        };
        let endpoint = match (&self.socket, self.pid) {
            (Some(p), _) => Some(Endpoint::Socket(p.clone())),
            (None, Some(pid)) => Some(Endpoint::Pid {
                pid,
                name: self.name.clone(),
            }),
            (None, None) if matches!(action, Action::Discover) => None,
            (None, None) if !self.select.selection().is_empty() => None,
            (None, None) => {
                return Err("ri ctl needs -p PID or --socket PATH (or --comm, --exe)".into());
            }
        };
        Ok(CtlOptions {
            endpoint,
            action,
            json: self.json,
            yes: self.yes,
        })
    }
}

/// Options of `ri peek`.
#[derive(Debug, Args)]
pub struct PeekArgs {
    /// The process to read.
    #[arg(short, long, value_name = "PID", required_unless_present_any = ["core", "comms", "exes"])]
    pub pid: Option<u32>,
    /// Every process running now with this name or executable, instead
    /// of -p: one section per process. With --core, --exe is the core's
    /// executable (default: the one its file note names).
    #[command(flatten)]
    pub select: SelectArgs,
    /// Read an ELF core file (e.g. from gdb's gcore) instead of a process.
    #[arg(long, value_name = "CORE", conflicts_with_all = ["pid", "comms"])]
    pub core: Option<std::path::PathBuf>,
    /// Find the core's files under this root (a moved or copied tree).
    #[arg(long, value_name = "DIR", requires = "core")]
    pub sysroot: Option<std::path::PathBuf>,
    /// Walks: most elements per walk before it stops with a marker.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max: usize,
    /// Stop every thread of the process while reading (the pause is printed).
    #[arg(long)]
    pub freeze: bool,
    /// The binary or library whose debug info and variables to use
    /// (default: the executable, then every library in map order).
    #[arg(long, value_name = "PATH|LIB")]
    pub target: Option<String>,
    /// Pointer hops to follow.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub depth: u32,
    /// Array elements to show before "...N more".
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub elements: usize,
    /// One JSON object: name, type, addr, value.
    #[arg(long)]
    pub json: bool,
    /// SYMBOL, ADDRESS TYPE, or an EXPRESSION (members, indexes, casts,
    /// &, arithmetic, list(), array(), hash(), btree_node()).
    #[arg(required = true, num_args = 1.., value_name = "SYMBOL | ADDRESS TYPE | EXPR")]
    pub what: Vec<String>,
}

/// `--core CORE [--exe EXE] [--sysroot DIR]`.
#[derive(Debug, Args)]
pub struct CoreArgs {
    /// Read an ELF core file (e.g. from gdb's gcore) instead of a process.
    #[arg(long, value_name = "CORE", conflicts_with = "pid")]
    pub core: Option<std::path::PathBuf>,
    /// The core's executable (default: the one its file note names).
    #[arg(long, value_name = "EXE", requires = "core")]
    pub exe: Option<std::path::PathBuf>,
    /// Find the core's files under this root (a moved or copied tree).
    #[arg(long, value_name = "DIR", requires = "core")]
    pub sysroot: Option<std::path::PathBuf>,
}

impl CoreArgs {
    /// The memory source with `pid`.
    pub fn source(&self, pid: Option<u32>) -> crate::view::Source {
        crate::view::Source {
            pid,
            core: self.core.clone(),
            exe: self.exe.clone(),
            sysroot: self.sysroot.clone(),
        }
    }
}

/// Options of `ri view`.
#[derive(Debug, Args)]
pub struct ViewArgs {
    /// The view, `PACK.VIEW` (see `ri packs`).
    #[arg(value_name = "PACK.VIEW")]
    pub view: String,
    /// The view's arguments (e.g. the ADDRESS of motr.btree).
    #[arg(value_name = "ARG")]
    pub args: Vec<String>,
    /// The process to read.
    #[arg(short, long, value_name = "PID", required_unless_present = "core")]
    pub pid: Option<u32>,
    /// Where to read when not a live process.
    #[command(flatten)]
    pub core: CoreArgs,
    /// One JSON object: rows, markers, torn, frozen.
    #[arg(long)]
    pub json: bool,
    /// Stop every thread for the walk (the pause is printed); without it a
    /// walk is read until two reads agree, else flagged possibly torn.
    #[arg(long)]
    pub freeze: bool,
    /// Most elements per walk before it stops with a marker.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max: usize,
    /// Also read this pack file (repeatable).
    #[arg(long = "pack", value_name = "FILE")]
    pub packs: Vec<std::path::PathBuf>,
}

impl ViewArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> crate::view::ViewOptions {
        crate::view::ViewOptions {
            view: self.view.clone(),
            args: self.args.clone(),
            source: self.core.source(self.pid),
            json: self.json,
            freeze: self.freeze,
            max: self.max,
            packs: self.packs.clone(),
        }
    }
}

impl PeekArgs {
    /// An expression peek (anything but a plain SYMBOL path or ADDRESS
    /// TYPE, or any read of a core or with --freeze).
    pub fn expr_options(&self, pid: Option<u32>) -> Option<crate::view::PeekExpr> {
        let plain = crate::peek::is_plain(&self.what);
        (self.core.is_some() || self.freeze || !plain).then(|| crate::view::PeekExpr {
            source: crate::view::Source {
                pid,
                core: self.core.clone(),
                exe: self.core.as_ref().and(self.select.exes.first().cloned()),
                sysroot: self.sysroot.clone(),
            },
            expr: crate::peek::as_expression(&self.what),
            depth: self.depth,
            max: self.max,
            json: self.json,
            freeze: self.freeze,
        })
    }

    /// The library options these flags stand for.
    pub fn options(&self) -> crate::peek::PeekOptions {
        crate::peek::PeekOptions {
            pid: self.pid.unwrap_or(0),
            target: self.target.clone(),
            what: self.what.clone(),
            depth: self.depth,
            max_elements: self.elements,
            json: self.json,
        }
    }
}

/// Options of `ri types`.
#[derive(Debug, Args)]
pub struct TypesArgs {
    /// Resolve a library name in this process's mappings.
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,
    /// A JSON array of the types.
    #[arg(long)]
    pub json: bool,
    /// A binary or library: a path or a name (optional with -p: then a lone
    /// argument naming no mapped file is the PATTERN).
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Glob over type names: 'm0_fid*', 'struct node', '*'.
    #[arg(value_name = "PATTERN")]
    pub pattern: Option<String>,
}

impl TypesArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> crate::types::TypesOptions {
        crate::types::TypesOptions {
            target: self.target.clone(),
            pid: self.pid,
            pattern: self.pattern.clone(),
            json: self.json,
        }
    }
}

/// Options of `ri report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The process.
    #[arg(value_name = "PID", required_unless_present_any = ["pid_flag", "core", "comms", "exes"])]
    pub pid: Option<u32>,
    /// The process (same as the positional PID).
    #[arg(short = 'p', long = "pid", value_name = "PID", conflicts_with = "pid")]
    pub pid_flag: Option<u32>,
    /// Every process running now with this name or executable, instead
    /// of PID: one report per process.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print JSON with the same content.
    #[arg(long)]
    pub json: bool,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Only these sections, comma-separated: process, package, threads,
    /// files, sockets, memory, config, control.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub sections: Vec<String>,
    /// List threads without stopping them (no stacks).
    #[arg(long)]
    pub no_stacks: bool,
    /// The threads and stacks of an ELF core file instead of a process.
    #[arg(
        long,
        value_name = "CORE",
        conflicts_with_all = ["pid", "pid_flag", "json", "output", "sections", "no_stacks"]
    )]
    pub core: Option<std::path::PathBuf>,
    /// Find the core's files under this root.
    #[arg(long, value_name = "DIR", requires = "core")]
    pub sysroot: Option<std::path::PathBuf>,
}

impl ReportArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> Result<crate::report::ReportOptions, crate::Error> {
        Ok(crate::report::ReportOptions {
            pid: self.pid.or(self.pid_flag).unwrap_or(0),
            sections: crate::report::Section::parse_list(&self.sections)?,
            json: self.json,
            output: self.output.clone(),
            no_stacks: self.no_stacks,
        })
    }
}

impl Cli {
    /// `ri session run` with `-H`: the session runs its instruments on the
    /// hosts itself (one bundle with a part per host), so it takes the
    /// hosts and the ssh flags instead of being sent to each host whole.
    /// Whether it did.
    pub fn session_takes_fleet(&mut self) -> Result<bool, String> {
        let Command::Session {
            action: SessionAction::Run(a),
        } = &mut self.command
        else {
            return Ok(false);
        };
        let Some(spec) = &self.fleet.hosts else {
            return Ok(false);
        };
        let hosts = crate::remote::parse_hosts(spec).map_err(|e| e.to_string())?;
        a.fleet = Some((hosts, self.fleet.ssh_flags()));
        Ok(true)
    }
}

impl Command {
    /// The aggregation a `count|hist|latency|inflight|leaks` command stands
    /// for, or the command back when it is another one.
    pub fn aggregation(self) -> Result<Result<crate::agg::AggOptions, String>, Box<Command>> {
        use crate::agg::AggKind;
        Ok(match self {
            Command::Count(a) => a.options(),
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
}
