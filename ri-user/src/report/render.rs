//! The text form of a report, laid out like an oslo.reports "guru
//! meditation" report: a banner, then one `==== Name ====` block per
//! section, `key = value` lines, and `------ Thread ... ------` headers.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Report, threads::Frame};
use crate::text::counted;

const WIDTH: usize = 72;

fn banner(out: &mut String, title: &str) {
    let rule = "=".repeat(WIDTH);
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "===={:^w$}====", title, w = WIDTH - 8);
    let _ = writeln!(out, "{rule}");
}

fn sub(out: &mut String, title: &str) {
    let _ = writeln!(out, "------{:^w$}------", title, w = WIDTH - 12);
}

fn kv(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{key:<13} = {value}");
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".into())
}

fn notes(out: &mut String, notes: &[String]) {
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
}

/// Quotes an argument when the shell would need it.
fn shell_word(a: &str) -> String {
    if !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn frame_line(i: usize, f: &Frame) -> String {
    let mut s = format!("  #{i:<3} {:>18}  ", f.ip);
    let base = f
        .module
        .as_deref()
        .map(|m| m.rsplit('/').next().unwrap_or(m));
    match (&f.function, &f.module_addr) {
        (Some(func), _) => {
            let _ = write!(s, "{func}+{:#x}", f.offset.unwrap_or(0));
        }
        // No symbol: where to look it up later (e.g. with debug symbols).
        (None, Some(a)) => {
            let _ = write!(s, "?? [{}+{a}]", base.unwrap_or("?"));
        }
        (None, None) => s.push_str("??"),
    }
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        let _ = write!(s, " at {file}:{line}");
    }
    if let Some(base) = base {
        let _ = write!(s, " ({base})");
    }
    if f.method == super::unwind::Method::Fp {
        s.push_str(" [fp]");
    }
    s
}

fn kb(v: Option<u64>) -> String {
    match v {
        Some(k) if k >= 10 * 1024 => format!("{:.1} MiB", k as f64 / 1024.0),
        Some(k) => format!("{k} KiB"),
        None => "?".into(),
    }
}

/// Renders the report as text.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    banner(&mut out, "Guru Meditation");
    let _ = writeln!(out, "{}", "|".repeat(WIDTH));
    let _ = writeln!(
        out,
        "ri {} report on pid {} at {} (took {:.1} ms)",
        r.ri_version, r.pid, r.time, r.duration_ms
    );
    notes(&mut out, &r.notes);

    if let Some(p) = &r.process {
        out.push('\n');
        banner(&mut out, "Process");
        kv(&mut out, "pid", p.pid);
        kv(&mut out, "ppid", opt(&p.ppid));
        kv(&mut out, "name", &p.name);
        kv(&mut out, "state", &p.state);
        let ids = |v: &[u32]| {
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        kv(
            &mut out,
            "uid",
            format!(
                "{} ({}; real effective saved fs)",
                ids(&p.uids),
                opt(&p.user)
            ),
        );
        kv(
            &mut out,
            "gid",
            format!("{} ({})", ids(&p.gids), opt(&p.group)),
        );
        let cmd: Vec<String> = p.cmdline.iter().map(|a| shell_word(a)).collect();
        kv(&mut out, "command line", cmd.join(" "));
        kv(&mut out, "executable", opt(&p.exe));
        kv(&mut out, "build-id", opt(&p.build_id));
        kv(&mut out, "cwd", opt(&p.cwd));
        kv(&mut out, "started", opt(&p.started));
        kv(
            &mut out,
            "uptime",
            p.uptime_s
                .map(|u| format!("{u:.2} s"))
                .unwrap_or_else(|| "?".into()),
        );
        kv(&mut out, "threads", opt(&p.threads));
        if let Some(t) = p.tracer_pid {
            kv(&mut out, "traced by", t);
        }
        for c in &p.cgroup {
            kv(&mut out, "cgroup", c);
        }
        if let Some(s) = &p.sched {
            kv(
                &mut out,
                "scheduling",
                format!(
                    "{}, nice {}, priority {}, rt priority {}",
                    s.policy, s.nice, s.priority, s.rt_priority
                ),
            );
            kv(&mut out, "affinity", format!("CPUs {}", s.affinity));
        }
        if !p.limits.is_empty() {
            let _ = writeln!(out, "limits:");
            for l in &p.limits {
                let _ = writeln!(
                    out,
                    "  {:<26} soft {:<20} hard {:<20} {}",
                    l.name, l.soft, l.hard, l.units
                );
            }
        }
        notes(&mut out, &p.notes);
    }

    if let Some(p) = &r.package {
        out.push('\n');
        banner(&mut out, "Package");
        kv(&mut out, "manager", opt(&p.manager));
        let owner = |o: &super::Owner| match (&o.package, &o.version) {
            (Some(p), Some(v)) => format!("{p} {v}"),
            (Some(p), None) => p.clone(),
            _ => "(not from a package)".into(),
        };
        if let Some(e) = &p.executable {
            kv(&mut out, "executable", &e.path);
            kv(&mut out, "package", owner(e));
        }
        if !p.libraries.is_empty() {
            let _ = writeln!(out, "libraries:");
            for l in &p.libraries {
                let _ = writeln!(out, "  {:<50} {}", l.path, owner(l));
            }
        }
        notes(&mut out, &p.notes);
    }

    if let Some(t) = &r.threads {
        out.push('\n');
        banner(&mut out, "Threads");
        if t.stacks {
            let _ = writeln!(
                out,
                "{}; {} stopped one at a time: total pause {} µs, longest {} µs \
                 (of which ri held it {} µs at most)",
                counted(t.count as u64, "thread"),
                t.stopped,
                t.total_pause_us,
                t.max_pause_us,
                t.max_held_us
            );
        } else {
            let _ = writeln!(
                out,
                "{} (stacks not taken)",
                counted(t.count as u64, "thread")
            );
        }
        notes(&mut out, &t.notes);
        for th in &t.threads {
            out.push('\n');
            sub(&mut out, &format!("Thread {} \"{}\"", th.tid, th.name));
            let mut line = format!(
                "state {}, cpu {:.2} s user + {:.2} s system, last on CPU {}",
                th.state, th.user_s, th.system_s, th.last_cpu
            );
            if let Some(w) = &th.wchan {
                let _ = write!(line, ", in kernel {w}");
            }
            if let Some(p) = th.paused_us {
                let _ = write!(
                    line,
                    ", paused {p} µs (held {} µs)",
                    th.held_us.unwrap_or(0)
                );
            }
            let _ = writeln!(out, "{line}");
            for (i, f) in th.stack.iter().enumerate() {
                // Inlined calls first, innermost first, as a debugger shows them.
                for inl in f.inlined.iter().rev() {
                    let mut l = format!("  #{i:<3} {:>18}  {}", "(inlined)", inl.function);
                    if let (Some(file), Some(line)) = (&inl.file, inl.line) {
                        let _ = write!(l, " at {file}:{line}");
                    }
                    let _ = writeln!(out, "{l}");
                }
                let _ = writeln!(out, "{}", frame_line(i, f));
            }
            if let Some(n) = &th.stack_note {
                let _ = writeln!(out, "  ({n})");
            }
        }
    }

    if let Some(f) = &r.files {
        out.push('\n');
        banner(&mut out, "Files");
        let _ = writeln!(out, "{} open", counted(f.count as u64, "descriptor"));
        for d in &f.fds {
            let mut l = format!(
                "  {:>5} {:<3} {:<7} {}",
                d.fd,
                opt(&d.mode),
                d.kind,
                d.target
            );
            if d.kind == "file"
                && let Some(p) = d.pos
            {
                let _ = write!(l, " (pos {p})");
            }
            let _ = writeln!(out, "{l}");
        }
        notes(&mut out, &f.notes);
    }

    if let Some(s) = &r.sockets {
        out.push('\n');
        banner(&mut out, "Sockets");
        if s.sockets.is_empty() {
            let _ = writeln!(out, "no sockets");
        }
        for k in &s.sockets {
            let proto = match &k.kind {
                Some(kind) => format!("{}/{kind}", k.proto),
                None => k.proto.clone(),
            };
            let mut l = format!(
                "  {:>5} {:<17} {:<12} {}",
                k.fd,
                proto,
                k.state.as_deref().unwrap_or("-"),
                k.local.as_deref().unwrap_or("(unnamed)")
            );
            if let Some(p) = &k.peer {
                let _ = write!(l, " <-> {p}");
            }
            if k.tx_queue.unwrap_or(0) > 0 || k.rx_queue.unwrap_or(0) > 0 {
                let _ = write!(
                    l,
                    " (queued: tx {} rx {})",
                    k.tx_queue.unwrap_or(0),
                    k.rx_queue.unwrap_or(0)
                );
            }
            let _ = writeln!(out, "{l}  [inode {}]", k.inode);
        }
        notes(&mut out, &s.notes);
    }

    if let Some(m) = &r.memory {
        out.push('\n');
        banner(&mut out, "Memory");
        kv(&mut out, "rss", kb(m.rss_kb));
        kv(&mut out, "pss", kb(m.pss_kb));
        kv(&mut out, "rss peak", kb(m.rss_peak_kb));
        kv(
            &mut out,
            "rss by kind",
            format!(
                "anon {}, file {}, shmem {}",
                kb(m.rss_anon_kb),
                kb(m.rss_file_kb),
                kb(m.rss_shmem_kb)
            ),
        );
        kv(&mut out, "virtual", kb(m.vm_size_kb));
        kv(&mut out, "swap", kb(m.swap_kb));
        if !m.mappings.is_empty() {
            let _ = writeln!(
                out,
                "mappings by file:\n  {:>10} {:>10} {:>10} {:>4}  name",
                "size", "rss", "pss", "maps"
            );
            for s in &m.mappings {
                let _ = writeln!(
                    out,
                    "  {:>10} {:>10} {:>10} {:>4}  {}",
                    kb(Some(s.size_kb)),
                    kb(s.rss_kb),
                    kb(s.pss_kb),
                    s.count,
                    s.name
                );
            }
        }
        notes(&mut out, &m.notes);
    }

    if let Some(c) = &r.config {
        out.push('\n');
        banner(&mut out, "Configuration");
        let args: Vec<String> = c.args.iter().map(|a| shell_word(a)).collect();
        kv(&mut out, "arguments", args.join(" "));
        if !c.config_files.is_empty() {
            let _ = writeln!(out, "open configuration files:");
            for f in &c.config_files {
                let _ = writeln!(out, "  {:>5} {}", f.fd, f.path);
            }
        }
        if !c.env.is_empty() {
            let _ = writeln!(out, "environment:");
            for (k, v) in &c.env {
                let _ = writeln!(out, "  {k}={v}");
            }
        }
        notes(&mut out, &c.notes);
    }

    if let Some(c) = &r.control {
        out.push('\n');
        banner(&mut out, "Control");
        for t in &c.targets {
            sub(&mut out, &format!("{} ({})", t.name, t.socket));
            if let Some(e) = &t.error {
                let _ = writeln!(out, "error: {e}");
            }
            for (name, v) in &t.sections {
                let _ = writeln!(out, "[{name}]");
                match v {
                    Value::String(s) => {
                        let _ = writeln!(out, "{}", s.trim_end());
                    }
                    other => {
                        let _ = writeln!(
                            out,
                            "{}",
                            serde_json::to_string_pretty(other).unwrap_or_default()
                        );
                    }
                }
            }
        }
        notes(&mut out, &c.notes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_are_centred() {
        let mut s = String::new();
        banner(&mut s, "Threads");
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1].len(), WIDTH);
        assert!(lines[1].starts_with("====") && lines[1].contains(" Threads "));
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("-c"), "-c");
    }
}
