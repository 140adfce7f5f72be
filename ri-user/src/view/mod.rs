//! State views: expressions and walkers (lists, arrays, hash tables, b-tree nodes) over a live process or a core dump, and the `[views]` of packs built from them.

mod btree;
pub mod core;
pub mod core_report;
mod eval;
mod freeze;
mod rows;
pub mod space;
mod walk;

use std::{io::Write, path::PathBuf};

use serde_json::json;

pub use eval::{Eval, Item, Marker, Out, Val};
pub use rows::{ViewOptions, run_view};
pub use space::Space;

use crate::{Error, dwarf::DwarfError, probe::parse_expr};

/// Errors evaluating expressions and views.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// An expression that does not fit the types.
    #[error("{0}")]
    Expr(String),
    /// A variable or type that no image has.
    #[error("{0}")]
    Unknown(String),
    /// `list()` given something that is not a list head or link.
    #[error("{0}")]
    NotAList(String),
    /// Memory that cannot be read.
    #[error("address {0:#x} is not mapped")]
    Unreadable(u64),
    /// Types and members.
    #[error(transparent)]
    Dwarf(#[from] DwarfError),
    /// A core file that cannot be used.
    #[error("{0}")]
    Core(String),
    /// The threads could not be stopped.
    #[error("{0}")]
    Freeze(String),
    /// No view of that name.
    #[error("pack {pack} has no view '{name}' (views: {known})")]
    UnknownView {
        /// The pack.
        pack: String,
        /// Asked for.
        name: String,
        /// What exists.
        known: String,
    },
}

/// Where the memory comes from.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// A live process.
    pub pid: Option<u32>,
    /// An ELF core file.
    pub core: Option<PathBuf>,
    /// The executable of the core (default: the one its notes name).
    pub exe: Option<PathBuf>,
    /// A root under which the core's files are found.
    pub sysroot: Option<PathBuf>,
}

impl Source {
    /// The space to read.
    pub fn open(&self) -> Result<Space, Error> {
        match (&self.core, self.pid) {
            (Some(c), None) => Ok(core::open(c, self.exe.as_deref(), self.sysroot.as_deref())?),
            (None, Some(pid)) => space::live(pid),
            (Some(_), Some(_)) => Err(Error::Usage("give -p PID or --core CORE, not both".into())),
            (None, None) => Err(Error::Usage("give -p PID or --core CORE".into())),
        }
    }
}

/// `ri peek EXPR` over the expression language.
pub struct PeekExpr {
    /// Where to read.
    pub source: Source,
    /// The expression.
    pub expr: String,
    /// Pointer hops to follow.
    pub depth: u32,
    /// Most elements per walk.
    pub max: usize,
    /// JSON lines.
    pub json: bool,
    /// Stop every thread while reading.
    pub freeze: bool,
}

/// Evaluates and prints one expression: a value, or each element of a walk
/// (markers where a walk ended early).
pub fn peek(opts: &PeekExpr, out: &mut impl Write) -> Result<(), Error> {
    let e = parse_expr(&opts.expr)?;
    let space = opts.source.open()?;
    let frozen = match (opts.freeze, opts.source.pid) {
        (true, Some(pid)) => Some(freeze::Frozen::all(pid)?),
        _ => None,
    };
    let ev = Eval::new(&space, opts.max);
    let result = ev.eval(&e);
    let pause = frozen.map(|f| (f.count(), f.running(), f.elapsed()));
    let items = match result? {
        Out::One(v) => vec![(None, Item::Val(v))],
        Out::Many(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, it)| (Some(i), it))
            .collect(),
    };
    for (i, it) in items {
        match it {
            Item::Val(v) => {
                let shown = ev.render(&v, opts.depth);
                let ty = ev.type_name(eval::ty_of(&v));
                let addr = match &v {
                    Val::Loc { addr, .. } => Some(*addr),
                    _ => None,
                };
                if opts.json {
                    let o = json!({
                        "index": i,
                        "type": ty,
                        "addr": addr.map(|a| format!("{a:#x}")),
                        "value": shown.to_json(),
                    });
                    writeln!(out, "{o}")?;
                } else {
                    let at = addr.map(|a| format!(" @ {a:#x}")).unwrap_or_default();
                    let head = match i {
                        Some(i) => format!("[{i}] ({ty}{at})"),
                        None => format!("{} ({ty}{at})", opts.expr),
                    };
                    writeln!(out, "{head} = {}", shown.to_text())?;
                }
            }
            Item::Mark(m) => {
                if opts.json {
                    writeln!(out, "{}", marker_json(&m))?;
                } else {
                    writeln!(out, "-- end of {}: {} --", m.walk, m.reason)?;
                }
            }
        }
    }
    if let Some((n, late, d)) = pause {
        eprintln!("{}", pause_line(n, late, d));
    }
    Ok(())
}

/// `froze 12 threads for 1.3 ms`.
pub fn pause_line(n: usize, late: usize, d: std::time::Duration) -> String {
    let late = if late > 0 {
        format!(" ({late} did not stop: in uninterruptible sleep)")
    } else {
        String::new()
    };
    format!(
        "ri: froze {n} threads for {:.1} ms{late}",
        d.as_secs_f64() * 1000.0
    )
}

/// A marker as JSON.
pub fn marker_json(m: &Marker) -> serde_json::Value {
    json!({
        "end": m.walk,
        "index": m.index,
        "addr": format!("{:#x}", m.addr),
        "reason": m.reason,
    })
}
