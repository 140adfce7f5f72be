//! A session's targets: the file's `[targets]` or the command line's
//! (which replace them), resolved to processes, and what the manifest says
//! about each process and this machine.

use super::{CaptureError, bundle::TargetInfo, file::Targets};

/// The command line's targets replace the file's: process selectors (`-p`,
/// `--comm`, `--exe`) as a group, hosts (`-H`) on their own.
pub fn choose(file: &Targets, cli: &Targets) -> Targets {
    let mut t = if cli.is_empty() {
        file.clone()
    } else {
        Targets {
            hosts: Vec::new(),
            ..cli.clone()
        }
    };
    t.hosts = if cli.hosts.is_empty() {
        file.hosts.clone()
    } else {
        cli.hosts.clone()
    };
    t
}

/// Hosts that are this machine.
fn is_local(h: &str) -> bool {
    matches!(h, "localhost" | "127.0.0.1" | "::1") || h == hostname()
}

/// The remote hosts among `hosts`.
pub fn remote(hosts: &[String]) -> Vec<String> {
    hosts.iter().filter(|h| !is_local(h)).cloned().collect()
}

/// The pids the targets name: `pids` as given (each must exist), then
/// every process whose comm or executable matches, in pid order.
pub fn resolve(t: &Targets) -> Result<Vec<u32>, CaptureError> {
    let mut pids = Vec::new();
    for &p in &t.pids {
        crate::target::check_pid(p).map_err(|e| CaptureError::Targets(e.to_string()))?;
        pids.push(p);
    }
    if t.comm.is_empty() && t.exe.is_empty() {
        return Ok(pids);
    }
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let by_comm = t.comm.iter().any(|c| c == comm.trim_end());
        let by_exe = t.exe.iter().any(|x| {
            std::fs::canonicalize(x).is_ok_and(|x| x == exe) || exe.file_name() == Some(x.as_ref())
        });
        if by_comm || by_exe {
            found.push(pid);
        }
    }
    if found.is_empty() {
        return Err(CaptureError::Targets(format!(
            "no process matches comm {:?} or exe {:?}",
            t.comm, t.exe
        )));
    }
    found.sort_unstable();
    for p in found {
        if !pids.contains(&p) {
            pids.push(p);
        }
    }
    Ok(pids)
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
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

/// What the manifest records about a target process.
pub fn info(pid: u32) -> TargetInfo {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    TargetInfo {
        pid,
        comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
        exe: exe.display().to_string(),
        build_id: crate::report::build_id(std::path::Path::new(&format!("/proc/{pid}/exe"))),
        host: hostname(),
        threads: threads(pid),
    }
}

/// The names of a process's threads by tid (none once it has exited).
pub fn threads(pid: u32) -> std::collections::BTreeMap<u32, String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, comm.trim_end().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_targets_replace_the_files() {
        let file = Targets {
            pids: vec![1],
            comm: vec!["m0d".into()],
            hosts: vec!["a".into()],
            ..Default::default()
        };
        let cli = Targets {
            pids: vec![2],
            ..Default::default()
        };
        let t = choose(&file, &cli);
        assert_eq!(
            (t.pids, t.comm, t.hosts),
            (vec![2], vec![], vec!["a".to_string()])
        );
        let hosts_only = Targets {
            hosts: vec!["b".into()],
            ..Default::default()
        };
        let t = choose(&file, &hosts_only);
        assert_eq!((t.pids, t.hosts), (vec![1], vec!["b".to_string()]));
    }
}
