//! The `process` section and the /proc parsing the other sections share:
//! `stat`, `status`, user and group names, clock ticks, times.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::{read_proc, why};

/// Identity and run-time facts of the process.
#[derive(Debug, Default, Serialize)]
pub struct ProcessSection {
    /// Process id.
    pub pid: u32,
    /// Parent's pid.
    pub ppid: Option<u32>,
    /// The kernel's name for it (`comm`).
    pub name: String,
    /// State, e.g. `S (sleeping)`.
    pub state: String,
    /// Number of threads.
    pub threads: Option<u64>,
    /// Real, effective, saved and filesystem uids.
    pub uids: Vec<u32>,
    /// Real, effective, saved and filesystem gids.
    pub gids: Vec<u32>,
    /// Name of the effective user.
    pub user: Option<String>,
    /// Name of the effective group.
    pub group: Option<String>,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Executable.
    pub exe: Option<String>,
    /// GNU build-id of the executable (hex).
    pub build_id: Option<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Start time (RFC 3339, UTC).
    pub started: Option<String>,
    /// Seconds since start.
    pub uptime_s: Option<f64>,
    /// Control groups, one `hierarchy:controllers:path` line each.
    pub cgroup: Vec<String>,
    /// Scheduling.
    pub sched: Option<Sched>,
    /// Resource limits.
    pub limits: Vec<Limit>,
    /// Pid of a tracer (debugger) attached to it, if any.
    pub tracer_pid: Option<u32>,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

/// Scheduling parameters.
#[derive(Debug, Serialize)]
pub struct Sched {
    /// Policy, e.g. `SCHED_OTHER`.
    pub policy: String,
    /// Nice value.
    pub nice: i64,
    /// Kernel priority (as in `stat`).
    pub priority: i64,
    /// Real-time priority (0 for normal policies).
    pub rt_priority: u64,
    /// CPUs it may run on (`Cpus_allowed_list`).
    pub affinity: String,
}

/// One resource limit.
#[derive(Debug, Serialize)]
pub struct Limit {
    /// e.g. `Max open files`.
    pub name: String,
    /// Soft limit (`unlimited` or a number).
    pub soft: String,
    /// Hard limit.
    pub hard: String,
    /// Units, when the kernel gives them.
    pub units: String,
}

/// The fields of `/proc/PID/stat` the report uses.
#[derive(Clone, Debug, Default)]
pub struct Stat {
    /// State letter.
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Kernel flags (`PF_*`).
    pub flags: u64,
    /// User CPU time in clock ticks.
    pub utime: u64,
    /// System CPU time in clock ticks.
    pub stime: u64,
    /// Kernel priority.
    pub priority: i64,
    /// Nice value.
    pub nice: i64,
    /// Threads.
    pub num_threads: u64,
    /// Start time in clock ticks after boot.
    pub starttime: u64,
    /// CPU it last ran on.
    pub processor: u32,
    /// Real-time priority.
    pub rt_priority: u64,
    /// Scheduling policy number.
    pub policy: u32,
}

/// Parses a `stat` line; the name may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 of proc(5).
    let n = |field: usize| f.get(field - 3).copied().unwrap_or("0");
    Some(Stat {
        state: n(3).chars().next()?,
        ppid: n(4).parse().ok()?,
        flags: n(9).parse().unwrap_or(0),
        utime: n(14).parse().unwrap_or(0),
        stime: n(15).parse().unwrap_or(0),
        priority: n(18).parse().unwrap_or(0),
        nice: n(19).parse().unwrap_or(0),
        num_threads: n(20).parse().unwrap_or(0),
        starttime: n(22).parse().unwrap_or(0),
        processor: n(39).parse().unwrap_or(0),
        rt_priority: n(40).parse().unwrap_or(0),
        policy: n(41).parse().unwrap_or(0),
    })
}

/// Reads `/proc/PID/stat`.
pub fn stat(pid: u32) -> std::io::Result<Stat> {
    let text = read_proc(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| std::io::Error::other("unparsable stat"))
}

/// `Key: value` lines of a `status` file.
pub fn parse_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Reads `/proc/PID/status`.
pub fn status(pid: u32) -> std::io::Result<HashMap<String, String>> {
    Ok(parse_status(&read_proc(format!("/proc/{pid}/status"))?))
}

/// True while the process exists and has not exited.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_ok_and(|s| s.state != 'Z' && s.state != 'X')
}

/// True when the process has exited but is not reaped yet.
pub fn is_zombie(pid: u32) -> bool {
    stat(pid).is_ok_and(|s| s.state == 'Z')
}

/// The prefix that reaches the target's files when it lives in another
/// mount namespace (a container): `/proc/PID/root`; empty otherwise.
pub fn root_prefix(pid: u32) -> String {
    let ns = |p: String| std::fs::read_link(p).ok();
    match (
        ns("/proc/self/ns/mnt".into()),
        ns(format!("/proc/{pid}/ns/mnt")),
    ) {
        (Some(a), Some(b)) if a != b => format!("/proc/{pid}/root"),
        _ => String::new(),
    }
}

/// True for a kernel thread (no executable, memory or user stack).
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    stat(pid).is_ok_and(|s| s.flags & PF_KTHREAD != 0)
}

/// Clock ticks per second.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Seconds since boot.
fn uptime() -> Option<f64> {
    read_proc("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Names from an `/etc/passwd`-shaped file, by id.
fn names(file: &str) -> HashMap<u32, String> {
    read_proc(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            let id = it.nth(1)?.parse().ok()?;
            Some((id, name.to_string()))
        })
        .collect()
}

/// Name of a policy number.
fn policy_name(p: u32) -> String {
    match p {
        0 => "SCHED_OTHER".into(),
        1 => "SCHED_FIFO".into(),
        2 => "SCHED_RR".into(),
        3 => "SCHED_BATCH".into(),
        5 => "SCHED_IDLE".into(),
        6 => "SCHED_DEADLINE".into(),
        n => format!("policy {n}"),
    }
}

/// Parses `/proc/PID/limits` (fixed-width columns).
pub fn parse_limits(text: &str) -> Vec<Limit> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let soft_at = header.find("Soft Limit").unwrap_or(26);
    let hard_at = header.find("Hard Limit").unwrap_or(47);
    let units_at = header.find("Units").unwrap_or(68);
    let col =
        |l: &str, a: usize, b: usize| l.get(a..b.min(l.len())).unwrap_or("").trim().to_string();
    lines
        .filter(|l| l.len() > soft_at)
        .map(|l| Limit {
            name: col(l, 0, soft_at),
            soft: col(l, soft_at, hard_at),
            hard: col(l, hard_at, units_at),
            units: col(l, units_at, l.len()),
        })
        .collect()
}

/// The kernel's release and version, as `uname -rv` prints them.
pub fn kernel() -> String {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    format!("{} {}", read("osrelease"), read("version"))
}

/// The GNU build-id of a 64-bit little-endian ELF file, in hex: read from
/// its `PT_NOTE` segments only, so large binaries cost a few small reads.
pub fn build_id(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::File::open(path).ok()?;
    let mut eh = [0u8; 64];
    f.read_exact_at(&mut eh, 0).ok()?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(&eh, 32), u16_at(&eh, 54), u16_at(&eh, 56));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut ph, phoff).ok()?;
    for p in ph.chunks(phentsize as usize) {
        // PT_NOTE, at most 64 KiB of notes.
        if u32_at(p, 0) != 4 || u64_at(p, 32) > 65536 {
            continue;
        }
        let mut notes = vec![0u8; u64_at(p, 32) as usize];
        f.read_exact_at(&mut notes, u64_at(p, 8)).ok()?;
        let mut o = 0usize;
        while o + 12 <= notes.len() {
            let (nsz, dsz, ty) = (
                u32_at(&notes, o) as usize,
                u32_at(&notes, o + 4) as usize,
                u32_at(&notes, o + 8),
            );
            let name_at = o + 12;
            let desc_at = name_at + nsz.div_ceil(4) * 4;
            let end = desc_at + dsz.div_ceil(4) * 4;
            if desc_at + dsz > notes.len() {
                break;
            }
            // NT_GNU_BUILD_ID from owner "GNU".
            if ty == 3 && notes[name_at..name_at + nsz].starts_with(b"GNU") {
                let id = &notes[desc_at..desc_at + dsz];
                return Some(id.iter().map(|b| format!("{b:02x}")).collect());
            }
            o = end;
        }
    }
    None
}

/// A process's command line, split at NULs.
pub fn cmdline(pid: u32) -> std::io::Result<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// Builds the `process` section.
pub fn process_section(pid: u32) -> ProcessSection {
    let mut s = ProcessSection {
        pid,
        ..Default::default()
    };
    match status(pid) {
        Ok(st) => {
            let ids = |k: &str| -> Vec<u32> {
                st.get(k)
                    .map(|v| {
                        v.split_whitespace()
                            .filter_map(|x| x.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            s.name = st.get("Name").cloned().unwrap_or_default();
            s.state = st.get("State").cloned().unwrap_or_default();
            s.uids = ids("Uid");
            s.gids = ids("Gid");
            s.user = s.uids.get(1).and_then(|u| names("/etc/passwd").remove(u));
            s.group = s.gids.get(1).and_then(|g| names("/etc/group").remove(g));
            s.tracer_pid = st
                .get("TracerPid")
                .and_then(|v| v.parse().ok())
                .filter(|&t| t != 0);
            s.sched = Some(Sched {
                policy: String::new(),
                nice: 0,
                priority: 0,
                rt_priority: 0,
                affinity: st.get("Cpus_allowed_list").cloned().unwrap_or_default(),
            });
        }
        Err(e) => s.notes.push(why("status", &e)),
    }
    match stat(pid) {
        Ok(st) => {
            s.ppid = Some(st.ppid);
            s.threads = Some(st.num_threads);
            if let Some(up) = uptime() {
                let age = (up - st.starttime as f64 / clock_ticks()).max(0.0);
                s.uptime_s = Some((age * 100.0).round() / 100.0);
                let started = SystemTime::now() - Duration::from_secs_f64(age);
                s.started = Some(ri_control::time::rfc3339(started));
            }
            if let Some(sched) = &mut s.sched {
                sched.policy = policy_name(st.policy);
                sched.nice = st.nice;
                sched.priority = st.priority;
                sched.rt_priority = st.rt_priority;
            }
        }
        Err(e) => s.notes.push(why("stat", &e)),
    }
    match cmdline(pid) {
        Ok(c) => s.cmdline = c,
        Err(e) => s.notes.push(why("cmdline", &e)),
    }
    let kthread = is_kernel_thread(pid);
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(p) => {
            s.exe = Some(p.display().to_string());
            // Through /proc so that a replaced or deleted file still reads.
            s.build_id = build_id(Path::new(&format!("/proc/{pid}/exe")));
        }
        Err(_) if kthread => {}
        Err(e) => s.notes.push(why("executable", &e)),
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(p) => s.cwd = Some(p.display().to_string()),
        Err(_) if kthread => {}
        Err(e) => s.notes.push(why("working directory", &e)),
    }
    match read_proc(format!("/proc/{pid}/cgroup")) {
        Ok(t) => s.cgroup = t.lines().map(str::to_string).collect(),
        Err(e) => s.notes.push(why("cgroup", &e)),
    }
    match read_proc(format!("/proc/{pid}/limits")) {
        Ok(t) => s.limits = parse_limits(&t),
        Err(e) => s.notes.push(why("limits", &e)),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_name() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 3 0 1234 \
                    1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.flags, 4194560);
        assert_eq!((s.utime, s.stime), (7, 3));
        assert_eq!((s.priority, s.nice, s.num_threads), (20, 0, 3));
        assert_eq!(s.starttime, 1234);
        assert_eq!(s.processor, 1);
    }

    #[test]
    fn limits_columns() {
        let t = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max cpu time              unlimited            unlimited            seconds   \n\
                 Max open files            1024                 524288               files     \n\
                 Max realtime timeout      unlimited            unlimited            us        \n";
        let l = parse_limits(t);
        assert_eq!(l.len(), 3);
        assert_eq!(l[1].name, "Max open files");
        assert_eq!((l[1].soft.as_str(), l[1].hard.as_str()), ("1024", "524288"));
        assert_eq!(l[1].units, "files");
    }

    #[test]
    fn own_process() {
        let s = process_section(std::process::id());
        assert_eq!(s.pid, std::process::id());
        assert!(s.ppid.is_some());
        assert!(!s.cmdline.is_empty());
        assert!(s.build_id.is_some(), "{s:?}");
        assert!(!s.limits.is_empty());
    }
}
