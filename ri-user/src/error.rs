//! The library's top-level error: one variant per module error, so the CLI
//! prints one clear line (plus a caret line for expressions) and exits 2.

use crate::{
    dwarf::DwarfError, elf::ElfError, engine::EngineError, peek::PeekError, plan::PlanError,
    probe::ParseError, target::TargetError,
};

/// Anything that stops a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed probe string.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// Expression that does not type-check.
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// Bad binary or unknown symbol.
    #[error("{0}")]
    Elf(#[from] ElfError),
    /// Bad target or pid.
    #[error("{0}")]
    Target(#[from] TargetError),
    /// Missing or unusable debug info, unknown type, member or variable.
    #[error("{0}")]
    Dwarf(#[from] DwarfError),
    /// A process whose memory cannot be read.
    #[error("{0}")]
    Peek(#[from] PeekError),
    /// USDT notes or arguments.
    #[error("{0}")]
    Usdt(#[from] crate::usdt::UsdtError),
    /// Kernel-side failure.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// A wildcard that matched no function.
    #[error("no function matches '{pattern}' in {path}")]
    NoMatch {
        /// The pattern.
        pattern: String,
        /// The file searched.
        path: String,
    },
    /// An offset past the end of its function.
    #[error("offset {offset:#x} is past the end of '{func}' ({size} bytes)")]
    BadOffset {
        /// The function.
        func: String,
        /// The offset asked for.
        offset: u64,
        /// The function's size.
        size: u64,
    },
    /// The `-c` command could not be started.
    #[error("cannot start '{cmd}': {reason}")]
    Command {
        /// The command line.
        cmd: String,
        /// Why.
        reason: String,
    },
    /// `ri ctl`: no socket, refused, or the target's error.
    #[error("{0}")]
    Ctl(#[from] crate::ctl::CtlError),
    /// `ri count`, `hist`, `latency`: a probe or key that cannot aggregate.
    #[error("{0}")]
    Agg(#[from] crate::agg::AggError),
    /// Stacks: reading, folding, flame graphs.
    #[error("{0}")]
    Stack(#[from] crate::stack::StackError),
    /// Bad command-line usage not caught by the argument parser.
    #[error("{0}")]
    Usage(String),
    /// `ri report` could not run or write its report.
    #[error("{0}")]
    Report(#[from] crate::report::ReportError),
    /// `--comm`/`--exe`: a bad name or file, or no process matching.
    #[error("{0}")]
    Select(#[from] crate::select::SelectError),
    /// A probe pack that cannot be read, found or expanded.
    #[error("{0}")]
    Pack(#[from] crate::pack::PackError),
    /// `ri view`, `ri peek EXPR`: walks, views, cores.
    #[error("{0}")]
    View(#[from] crate::view::ViewError),
    /// `-H`: hosts, inventories, the fleet protocol.
    #[error("{0}")]
    Remote(#[from] crate::remote::RemoteError),
    /// A capture session: its file, targets, instruments or bundle.
    #[error("{0}")]
    Capture(#[from] crate::capture::CaptureError),
    /// `ri top`: nothing to show, or the terminal.
    #[error("{0}")]
    Top(#[from] crate::top::TopError),
    /// `ri shell`: the line editor, a job name, a malformed shell command.
    #[error("{0}")]
    Shell(#[from] crate::shell::ShellError),
    /// `ri serve`: its config, its listener.
    #[error("{0}")]
    Serve(#[from] crate::serve::ServeError),
    /// Output or system error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
