//! The `threads` section: every thread's name, state, CPU time and
//! symbolized stack. Threads are stopped one at a time (see `stop`), for
//! as long as it takes to copy registers and stack; the section says how
//! long each one was stopped.

use std::time::Instant;

use serde::Serialize;

use super::{
    procfs, read_proc,
    stop::{self, Capture, Pending, StopError},
    symbolize,
    unwind::{self, Method, RawFrame, Unwinder},
};

/// All threads.
#[derive(Debug, Default, Serialize)]
pub struct ThreadsSection {
    /// Number of threads listed.
    pub count: usize,
    /// Whether stacks were taken.
    pub stacks: bool,
    /// Threads stopped to take their stacks.
    pub stopped: usize,
    /// Sum of the pauses, in microseconds (each from asking the thread to
    /// stop until it was let go).
    pub total_pause_us: u64,
    /// Longest pause, in microseconds.
    pub max_pause_us: u64,
    /// Longest time ri held a thread after it stopped, in microseconds.
    pub max_held_us: u64,
    /// The threads, by thread id.
    pub threads: Vec<ThreadInfo>,
    /// Why stacks are missing, and similar.
    pub notes: Vec<String>,
}

/// One thread.
#[derive(Debug, Default, Serialize)]
pub struct ThreadInfo {
    /// Thread id.
    pub tid: u32,
    /// Its name (`comm`).
    pub name: String,
    /// State before it was stopped, e.g. `S (sleeping)`.
    pub state: String,
    /// Kernel function it sleeps in, if any.
    pub wchan: Option<String>,
    /// User CPU time, seconds.
    pub user_s: f64,
    /// System CPU time, seconds.
    pub system_s: f64,
    /// CPU it last ran on.
    pub last_cpu: u32,
    /// How long it was stopped, in microseconds: from asking it to stop
    /// until it was let go.
    pub paused_us: Option<u64>,
    /// Of that, how long ri held it after it stopped, in microseconds.
    pub held_us: Option<u64>,
    /// Innermost frame first.
    pub stack: Vec<Frame>,
    /// Why the stack is missing or incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_note: Option<String>,
}

/// One stack frame.
#[derive(Debug, Serialize)]
pub struct Frame {
    /// Instruction pointer (a return address for callers), hex.
    pub ip: String,
    /// Function, when known.
    pub function: Option<String>,
    /// Offset of `ip` in the function.
    pub offset: Option<u64>,
    /// The mapped file or pseudo-mapping it is in.
    pub module: Option<String>,
    /// The address in the file's own address space (what `addr2line -e
    /// MODULE` takes), hex.
    pub module_addr: Option<String>,
    /// Source file (of the call to the first inlined function, if any).
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// Functions inlined here, outermost first, each at its own location
    /// (the last one's is the instruction's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inlined: Vec<Inlined>,
    /// How the frame was found: `regs`, `cfi` or `fp`.
    pub method: Method,
}

/// A function inlined at a frame's address.
#[derive(Debug, Serialize)]
pub struct Inlined {
    /// Function.
    pub function: String,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
}

/// Thread ids of a process, sorted.
fn tids(pid: u32) -> std::io::Result<Vec<u32>> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Reads a thread's name, state and times (before it is stopped).
fn thread_info(pid: u32, tid: u32) -> ThreadInfo {
    let dir = format!("/proc/{pid}/task/{tid}");
    let mut t = ThreadInfo {
        tid,
        ..Default::default()
    };
    t.name = read_proc(format!("{dir}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default();
    if let Ok(st) = read_proc(format!("{dir}/status")) {
        t.state = procfs::parse_status(&st)
            .remove("State")
            .unwrap_or_default();
    }
    if let Some(st) = read_proc(format!("{dir}/stat"))
        .ok()
        .and_then(|s| procfs::parse_stat(&s))
    {
        let hz = procfs::clock_ticks();
        t.user_s = st.utime as f64 / hz;
        t.system_s = st.stime as f64 / hz;
        t.last_cpu = st.processor;
        if t.state.is_empty() {
            t.state = st.state.to_string();
        }
    }
    t.wchan = read_proc(format!("{dir}/wchan"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "0");
    t
}

/// Why ptrace was refused, as precisely as ri can tell.
fn permission_reason(pid: u32) -> String {
    let mut why = vec![];
    // SAFETY: getpid/geteuid have no preconditions.
    let (me, euid) = unsafe { (libc::getpid() as u32, libc::geteuid()) };
    let status = procfs::status(pid).unwrap_or_default();
    let target_uid = status
        .get("Uid")
        .and_then(|u| u.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    if pid == me {
        why.push("ri cannot stop its own threads".to_string());
    }
    if let Some(t) = status
        .get("TracerPid")
        .and_then(|t| t.parse::<u32>().ok())
        .filter(|&t| t != 0)
    {
        let comm = read_proc(format!("/proc/{t}/comm")).unwrap_or_default();
        why.push(format!(
            "it is already traced by pid {t} ({}); a thread has one tracer at a time",
            comm.trim()
        ));
    }
    if euid != 0 && target_uid.is_some_and(|u| u != euid) {
        why.push(format!(
            "ri runs as uid {euid} and the target as uid {}: tracing needs the same uid or CAP_SYS_PTRACE",
            target_uid.unwrap_or(0)
        ));
    }
    if let Ok(scope) = read_proc("/proc/sys/kernel/yama/ptrace_scope") {
        let scope = scope.trim();
        let meaning = match scope {
            "1" => Some("only a parent may trace its descendants without CAP_SYS_PTRACE"),
            "2" => Some("only processes with CAP_SYS_PTRACE may trace"),
            "3" => Some("no process may trace"),
            _ => None,
        };
        if let Some(m) = meaning {
            why.push(format!("kernel.yama.ptrace_scope is {scope}: {m}"));
        }
    }
    if why.is_empty() {
        why.push(
            "the kernel refused ptrace (the target may be non-dumpable, e.g. setuid, or a \
             security module forbids it)"
                .into(),
        );
    }
    format!("no stacks: ptrace not permitted: {}", why.join("; "))
}

/// Builds the `threads` section; `stacks` false lists threads only.
pub fn section(pid: u32, stacks: bool) -> ThreadsSection {
    let mut s = ThreadsSection {
        stacks,
        ..Default::default()
    };
    let tids = match tids(pid) {
        Ok(t) => t,
        Err(e) => {
            s.notes.push(super::why("thread list", &e));
            return s;
        }
    };
    let maps = read_proc(format!("/proc/{pid}/maps"))
        .map(|t| unwind::parse_maps(&t))
        .unwrap_or_default();
    let stack_end = |sp: u64| {
        maps.iter()
            .find(|m| sp >= m.start && sp < m.end)
            .map(|m| m.end)
    };
    let delay = stop::test_delay();
    let mut captures: Vec<Option<Capture>> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut refused = false;
    if stacks && maps.is_empty() {
        refused = true;
        s.stacks = false;
        s.notes.push(if procfs::alive(pid) {
            permission_reason(pid)
        } else {
            "no stacks: the process has exited".into()
        });
    }
    for &tid in &tids {
        let mut t = thread_info(pid, tid);
        let mut cap = None;
        if stacks && !refused {
            if t.state.starts_with('Z') || t.state.starts_with('X') {
                t.stack_note = Some("the thread has exited".into());
            } else {
                match stop::capture(tid, stack_end, delay) {
                    Ok(c) => {
                        t.paused_us = Some(c.paused_us);
                        t.held_us = Some(c.held_us);
                        s.max_held_us = s.max_held_us.max(c.held_us);
                        s.stopped += 1;
                        s.total_pause_us += c.paused_us;
                        s.max_pause_us = s.max_pause_us.max(c.paused_us);
                        cap = Some(c);
                    }
                    Err((StopError::NotPermitted, _)) => {
                        refused = true;
                        s.stacks = false;
                        s.notes.push(permission_reason(pid));
                    }
                    Err((e, p)) => {
                        t.stack_note = Some(e.to_string());
                        pending.extend(p);
                    }
                }
            }
            pending.retain(|p| !p.try_release());
        }
        captures.push(cap);
        s.threads.push(t);
    }
    // Threads that never reached the stop: release them as soon as they do.
    let t0 = Instant::now();
    while !pending.is_empty() && t0.elapsed() < std::time::Duration::from_secs(1) {
        pending.retain(|p| !p.try_release());
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    for p in &pending {
        s.notes.push(format!(
            "thread {} did not reach the stop in time (uninterruptible sleep?): if it wakes \
             before ri exits it waits for ri to exit, then continues",
            p.tid()
        ));
    }
    s.count = s.threads.len();
    if captures.iter().any(Option::is_some) {
        // The mappings may have changed (threads started, libraries loaded)
        // since the first read: unwind against a fresh copy when possible.
        let maps = read_proc(format!("/proc/{pid}/maps"))
            .map(|t| unwind::parse_maps(&t))
            .ok()
            .filter(|m| !m.is_empty())
            .unwrap_or(maps);
        fill_stacks(pid, maps, &mut s.threads, &captures);
    }
    s
}

/// Unwinds and symbolizes every capture into its thread's frames.
fn fill_stacks(
    pid: u32,
    maps: Vec<unwind::Mapping>,
    threads: &mut [ThreadInfo],
    captures: &[Option<Capture>],
) {
    let mut unwinder = Unwinder::new(pid, maps);
    let raw: Vec<Option<(Vec<RawFrame>, Option<String>)>> = captures
        .iter()
        .map(|c| c.as_ref().map(|c| unwinder.unwind(c)))
        .collect();
    // Callers' return addresses point after the call: name the call.
    let key = |f: &RawFrame, first: bool| {
        f.location
            .as_ref()
            .map(|(p, va)| (p.clone(), if first { *va } else { va.saturating_sub(1) }))
    };
    let wanted: Vec<_> = raw
        .iter()
        .flatten()
        .flat_map(|(frames, _)| {
            frames
                .iter()
                .enumerate()
                .filter_map(move |(i, f)| key(f, i == 0))
        })
        .collect();
    let syms = symbolize::symbolize(&wanted);
    for (t, r) in threads.iter_mut().zip(raw) {
        let Some((frames, note)) = r else { continue };
        t.stack_note = note.map(|n| format!("stack incomplete: {n}"));
        t.stack = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let k = key(f, i == 0);
                let sym = k.as_ref().and_then(|k| syms.get(k));
                let back = if i == 0 { 0 } else { 1 };
                Frame {
                    ip: format!("{:#x}", f.ip),
                    function: sym.map(|s| s.function.clone()),
                    offset: sym.map(|s| s.offset + back),
                    module: f.mapping.clone(),
                    module_addr: f.location.as_ref().map(|(_, va)| format!("{va:#x}")),
                    file: sym.and_then(|s| s.file.clone()),
                    line: sym.and_then(|s| s.line),
                    inlined: sym
                        .map(|s| {
                            s.inlined
                                .iter()
                                .map(|(function, file, line)| Inlined {
                                    function: function.clone(),
                                    file: file.clone(),
                                    line: *line,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    method: f.method,
                }
            })
            .collect();
    }
}
