//! User stacks the kernel stored in its `STACKS` map (or `STACK_MORE`, for
//! a stack whose bucket held another): read by id, symbolized
//! with blazesym (function+offset, file:line where DWARF has it), cached per
//! (pid, stack id).
//!
//! A stack value is `tgid << 32 | id` (see `op::STACK`). Addresses are
//! resolved through the process's `/proc/PID/maps` into (file, file offset),
//! so a process's maps are read while it is alive ([`Stacks::watch`],
//! [`Stacks::refresh`]) and its stacks still resolve after it exited.
//! A frame that cannot be named is `[unknown]` with its address, never
//! dropped.

pub mod late;

use std::{
    collections::HashMap,
    io::Write,
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as AyaHashMap, MapData, PerCpuArray, StackTraceMap};
use blazesym::symbolize::Symbolizer;
use ri_common::{STACK_MORE_BIT, STACK_NONE, StackFrames};
use serde_json::{Value as Json, json};

use crate::{
    engine::Engine,
    report::{
        symbolize::{symbolize_with, symbolizer},
        unwind::{Mapping, parse_maps},
    },
};

/// How often [`Stacks::refresh`] runs: the mappings of a process watched
/// for less than [`MAPS_YOUNG`] are re-read at each run (a `-c` command
/// execs, loads its libraries, and may exit within milliseconds), older
/// ones every [`MAPS_SETTLED`]; an address found unmapped when a stack is
/// resolved also re-reads them.
pub const MAPS_REFRESH: Duration = Duration::from_millis(20);
/// See [`MAPS_REFRESH`].
pub const MAPS_YOUNG: Duration = Duration::from_secs(1);
/// See [`MAPS_REFRESH`].
pub const MAPS_SETTLED: Duration = Duration::from_secs(1);

/// Errors reading stacks or writing their renderings.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The kernel's stack map could not be read.
    #[error("cannot read the stack map: {0}")]
    Read(String),
    /// `--folded` or `--flamegraph` without stacks to fold.
    #[error("{0} needs stacks: add --stack (or a `stack` key)")]
    NoStacks(&'static str),
    /// The flame graph could not be written.
    #[error("cannot write the flame graph {path}: {reason}")]
    Flamegraph {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One frame of a user stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The address (a return address for callers).
    pub addr: u64,
    /// Function, when known.
    pub func: Option<String>,
    /// Offset of `addr` from the function's start.
    pub offset: u64,
    /// Source file, where DWARF has it.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
}

impl Frame {
    /// `func+0xOFF`, or `[unknown] 0xADDR`.
    pub fn name(&self) -> String {
        match &self.func {
            Some(f) => format!("{f}+{:#x}", self.offset),
            None => format!("[unknown] {:#x}", self.addr),
        }
    }

    /// The function alone (for folded stacks), or `[unknown]`.
    pub fn func_name(&self) -> &str {
        self.func.as_deref().unwrap_or("[unknown]")
    }

    /// One text line: `func+0xOFF (file:line)`.
    pub fn text(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{} ({f}:{l})", self.name()),
            (Some(f), None) => format!("{} ({f})", self.name()),
            _ => self.name(),
        }
    }

    /// A frame back from its [`Frame::json`].
    pub fn from_json(v: &Json) -> Option<Frame> {
        let addr = v["addr"].as_str()?.strip_prefix("0x")?;
        Some(Frame {
            addr: u64::from_str_radix(addr, 16).ok()?,
            func: v["func"].as_str().map(str::to_string),
            offset: v["offset"].as_u64()?,
            file: v["file"].as_str().map(str::to_string),
            line: v["line"].as_u64().and_then(|l| u32::try_from(l).ok()),
        })
    }

    /// `{addr, func, offset, file, line}`.
    pub fn json(&self) -> Json {
        json!({
            "addr": format!("{:#x}", self.addr),
            "func": self.func,
            "offset": self.offset,
            "file": self.file,
            "line": self.line,
        })
    }
}

/// A symbolized stack, innermost frame first; empty when the kernel had no
/// room for it (`lost`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
    /// The kernel could not store this stack (see `STACK_ERRORS`).
    pub lost: bool,
}

impl Resolved {
    /// Text lines, one frame each, indented by `indent`.
    pub fn write_text(&self, w: &mut impl Write, indent: &str) -> std::io::Result<()> {
        if self.lost {
            return writeln!(w, "{indent}[stack lost: the kernel's stack map was full]");
        }
        for f in &self.frames {
            writeln!(w, "{indent}{}", f.text())?;
        }
        Ok(())
    }

    /// A JSON array of frames (`null` when lost).
    pub fn json(&self) -> Json {
        if self.lost {
            return Json::Null;
        }
        Json::Array(self.frames.iter().map(Frame::json).collect())
    }

    /// A stack back from its [`Resolved::json`] (a stored print's); `None`
    /// when `v` is not one.
    pub fn from_json(v: &Json) -> Option<Resolved> {
        if v.is_null() {
            return Some(Resolved {
                frames: Vec::new(),
                lost: true,
            });
        }
        let frames = v.as_array()?.iter().map(Frame::from_json);
        Some(Resolved {
            frames: frames.collect::<Option<_>>()?,
            lost: false,
        })
    }

    /// Function names outermost first, joined by `;` (a folded stack).
    pub fn folded(&self) -> String {
        if self.lost {
            return "[stack lost]".into();
        }
        let names: Vec<String> = self
            .frames
            .iter()
            .rev()
            .map(|f| f.func_name().replace([';', ' '], "_"))
            .collect();
        names.join(";")
    }
}

/// Reads and symbolizes stacks, caching maps per pid and stacks per value.
pub struct Stacks {
    symbolizer: Symbolizer,
    maps: HashMap<u32, Vec<Mapping>>,
    cache: HashMap<(u64, Option<u64>), Rc<Resolved>>,
    /// Watched processes: when watching began and when the maps were read.
    watched: HashMap<u32, (Instant, Instant)>,
    comms: HashMap<u32, String>,
    /// When a late read last re-read a process's maps (see [`late`]).
    missed: HashMap<u32, Instant>,
    /// Segment layouts of files by path (see [`late`]).
    layouts: late::Layouts,
}

impl Default for Stacks {
    fn default() -> Self {
        Stacks::new()
    }
}

impl Stacks {
    /// An empty cache.
    pub fn new() -> Self {
        Stacks {
            symbolizer: symbolizer(),
            maps: HashMap::new(),
            cache: HashMap::new(),
            watched: HashMap::new(),
            comms: HashMap::new(),
            missed: HashMap::new(),
            layouts: HashMap::new(),
        }
    }

    /// Remembers `pid`'s mappings now and at each [`Stacks::refresh`].
    pub fn watch(&mut self, pid: u32) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.watched.entry(pid) {
            let now = Instant::now();
            e.insert((now, now));
            self.read_maps(pid);
        }
    }

    /// Re-reads the maps of the watched processes that are due (see
    /// [`MAPS_REFRESH`]) and still alive (new libraries), keeping the last
    /// good copy of those that exited.
    pub fn refresh(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .watched
            .iter()
            .filter(|(_, (since, read))| {
                now.duration_since(*since) < MAPS_YOUNG || now.duration_since(*read) >= MAPS_SETTLED
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            self.read_maps(pid);
            if let Some(w) = self.watched.get_mut(&pid) {
                w.1 = now;
            }
        }
    }

    /// The process's command name (read while it was watched), or `pid N`:
    /// the root frame of folded stacks.
    pub fn comm(&mut self, pid: u32) -> String {
        if !self.comms.contains_key(&pid) {
            self.read_maps(pid);
        }
        self.comms
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| format!("pid {pid}"))
    }

    fn read_maps(&mut self, pid: u32) {
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            self.comms.insert(pid, c.trim().replace([';', ' '], "_"));
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        // Code for stacks, read-only data for late reads.
        let maps: Vec<Mapping> = parse_maps(&text)
            .into_iter()
            .filter(Mapping::is_file)
            .collect();
        if !maps.is_empty() {
            self.maps.insert(pid, maps);
        }
    }

    fn mapped(&self, pid: u32, addr: u64) -> bool {
        self.maps
            .get(&pid)
            .is_some_and(|ms| ms.iter().any(|m| addr >= m.start && addr < m.end))
    }

    /// The symbolized stack of a `STACK` value (`tgid << 32 | id`); at a
    /// function entry `caller` is the return address at the stack pointer,
    /// added as the second frame when the kernel's walk skipped it (the
    /// function had not pushed its frame pointer yet).
    pub fn resolve(
        &mut self,
        engine: &Engine,
        value: u64,
        caller: Option<u64>,
    ) -> Result<Rc<Resolved>, StackError> {
        if let Some(r) = self.cache.get(&(value, caller)) {
            return Ok(r.clone());
        }
        let (pid, id) = ((value >> 32) as u32, value as u32);
        if id == STACK_NONE {
            return Ok(Rc::new(Resolved {
                frames: Vec::new(),
                lost: true,
            }));
        }
        self.watch(pid);
        let mut ips = read_ips(engine, id)?;
        if let Some(c) = caller
            && !ips.is_empty()
            && ips.get(1) != Some(&c)
        {
            ips.insert(1, c);
        }
        if ips.iter().any(|&a| !self.mapped(pid, a)) {
            // Mapped since the last read (exec, dlopen): read again.
            self.read_maps(pid);
        }
        let resolved = Rc::new(self.symbolize(pid, &ips));
        self.cache.insert((value, caller), resolved.clone());
        Ok(resolved)
    }

    /// Symbolizes one stack of `pid`: each address through its mapping
    /// into (file, file offset); callers' return addresses point after the
    /// call, so they are looked up one byte back.
    fn symbolize(&mut self, pid: u32, ips: &[u64]) -> Resolved {
        let maps = self.maps.get(&pid);
        let located: Vec<Option<(PathBuf, u64)>> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| {
                let a = if i == 0 { ip } else { ip.saturating_sub(1) };
                let m = maps?.iter().find(|m| a >= m.start && a < m.end)?;
                Some((PathBuf::from(&m.name), a - m.start + m.offset))
            })
            .collect();
        let wanted: Vec<(PathBuf, u64)> = located.iter().flatten().cloned().collect();
        let syms = symbolize_with(&self.symbolizer, &wanted, true);
        let frames = ips
            .iter()
            .zip(&located)
            .enumerate()
            .map(|(i, (&addr, loc))| {
                let sym = loc.as_ref().and_then(|k| syms.get(k));
                let back = if i == 0 { 0 } else { 1 };
                Frame {
                    addr,
                    func: sym.map(|s| s.function.clone()),
                    offset: sym.map_or(0, |s| s.offset + back),
                    file: sym.and_then(|s| s.file.clone()),
                    line: sym.and_then(|s| s.line),
                }
            })
            .collect();
        Resolved {
            frames,
            lost: false,
        }
    }
}

/// The addresses of stack `id`, innermost first: from `STACKS`, or from
/// `STACK_MORE` when the id has [`STACK_MORE_BIT`] (its bucket in `STACKS`
/// held another stack).
fn read_ips(engine: &Engine, id: u32) -> Result<Vec<u64>, StackError> {
    let read = |e: &dyn std::fmt::Display| StackError::Read(format!("stack {id:#x}: {e}"));
    if id & STACK_MORE_BIT == 0 {
        let map: StackTraceMap<&MapData> =
            StackTraceMap::try_from(engine.map("STACKS").map_err(|e| read(&e))?)
                .map_err(|e| read(&e))?;
        let t = map.get(&id, 0).map_err(|e| read(&e))?;
        return Ok(t.frames().iter().map(|f| f.ip).collect());
    }
    let map: AyaHashMap<&MapData, u32, StackFrames> =
        AyaHashMap::try_from(engine.map("STACK_MORE").map_err(|e| read(&e))?)
            .map_err(|e| read(&e))?;
    let t = map.get(&id, 0).map_err(|e| read(&e))?;
    Ok(t.ips.iter().copied().take_while(|&ip| ip != 0).collect())
}

/// Stacks the kernel could not store, summed over CPUs.
pub fn errors(engine: &Engine) -> Result<u64, StackError> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
        engine
            .map("STACK_ERRORS")
            .map_err(|e| StackError::Read(e.to_string()))?,
    )
    .map_err(|e| StackError::Read(e.to_string()))?;
    let v = map
        .get(&0, 0)
        .map_err(|e| StackError::Read(e.to_string()))?;
    Ok(v.iter().sum())
}

/// The stderr line about stacks the kernel could not store, if any, with
/// the size of its stack map (`--stack-map`).
pub fn write_errors(w: &mut impl Write, n: u64, entries: u32) -> std::io::Result<()> {
    if n > 0 {
        writeln!(
            w,
            "ri: {n} stacks lost: the kernel's stack maps were full or the stack could not be \
             walked ({entries} + {} stacks; raise --stack-map)",
            entries / 4
        )?;
    }
    Ok(())
}

/// Writes folded lines (`root;outer;...;inner WEIGHT`) as an SVG flame
/// graph with inferno.
pub fn flamegraph(path: &str, title: &str, lines: &[String]) -> Result<(), StackError> {
    let fail = |reason: String| StackError::Flamegraph {
        path: path.to_string(),
        reason,
    };
    let file = std::fs::File::create(path).map_err(|e| fail(e.to_string()))?;
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    let mut w = std::io::BufWriter::new(file);
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut w)
        .map_err(|e| fail(e.to_string()))?;
    w.flush().map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: Option<&str>, addr: u64) -> Frame {
        Frame {
            addr,
            func: name.map(str::to_string),
            offset: 4,
            file: None,
            line: None,
        }
    }

    #[test]
    fn folded_is_outermost_first() {
        let r = Resolved {
            frames: vec![f(Some("leaf"), 1), f(None, 2), f(Some("main"), 3)],
            lost: false,
        };
        assert_eq!(r.folded(), "main;[unknown];leaf");
        assert_eq!(r.frames[1].name(), "[unknown] 0x2");
        assert_eq!(r.frames[0].text(), "leaf+0x4");
    }
}
