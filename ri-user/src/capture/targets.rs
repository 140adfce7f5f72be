//! A session's targets: the file's `[targets]` or the command line's
//! (which replace them), resolved to processes, and what the manifest says
//! about each process and this machine.

use serde_json::Value;

use super::{
    CaptureError,
    bundle::{HostPart, TargetInfo},
    file::Targets,
};

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
    crate::report::kernel()
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

/// The flags that name the targets on a remote host for `report` and
/// `ctl`: `--comm`/`--exe` as given, and the first pid.
pub fn select_flags(t: &Targets) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(p) = t.pids.first() {
        w.extend(["-p".into(), p.to_string()]);
    }
    for c in &t.comm {
        w.extend(["--comm".into(), c.clone()]);
    }
    for e in &t.exe {
        w.extend(["--exe".into(), e.clone()]);
    }
    w
}

/// Runs `ri -H HOST SSH ARGS` (this ri, reaching the host through ssh):
/// its stdout, or its last stderr line when it failed.
pub fn on_host(host: &str, ssh: &[String], args: &[String]) -> Result<Vec<u8>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["-H", host])
        .args(ssh)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().last().unwrap_or("failed").to_string())
    }
}

/// The JSON documents one host printed (`ri -H` prefixes several with a
/// `== HOST ==` line and adds `host` to a single one; both are undone).
pub fn documents(stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stdout);
    let body = match text.strip_prefix("== ") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, b)| b),
        None => &text,
    };
    serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .map(|mut v| {
            if let Some(m) = v.as_object_mut() {
                m.remove("host");
            }
            v
        })
        .collect()
}

/// Each remote host's kernel and targets, from a short `ri report`
/// (process and threads, no stacks) run there, the hosts at once.
pub fn parts(hosts: &[String], ssh: &[String], t: &Targets) -> Vec<HostPart> {
    let mut args: Vec<String> = vec!["report".into()];
    args.extend(select_flags(t));
    args.extend(
        ["--json", "--sections", "process,threads", "--no-stacks"]
            .iter()
            .map(|s| s.to_string()),
    );
    std::thread::scope(|s| {
        let running: Vec<_> = hosts
            .iter()
            .map(|h| (h, s.spawn(|| on_host(h, ssh, &args))))
            .collect();
        running
            .into_iter()
            .map(|(h, r)| {
                let out = r.join().unwrap_or_else(|_| Err("panicked".into()));
                part(h, out)
            })
            .collect()
    })
}

/// One host's part from its report's output.
fn part(host: &str, out: Result<Vec<u8>, String>) -> HostPart {
    let docs = match out {
        Ok(o) => documents(&o),
        Err(e) => {
            return HostPart {
                host: host.into(),
                kernel: String::new(),
                targets: Vec::new(),
                error: Some(e),
            };
        }
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let targets = docs
        .iter()
        .map(|d| TargetInfo {
            pid: d["pid"].as_u64().unwrap_or(0) as u32,
            comm: text(&d["process"]["name"]),
            exe: text(&d["process"]["exe"]),
            build_id: d["process"]["build_id"].as_str().map(String::from),
            host: host.into(),
            threads: d["threads"]["threads"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| (t["tid"].as_u64().unwrap_or(0) as u32, text(&t["name"])))
                .collect(),
        })
        .collect();
    HostPart {
        host: host.into(),
        kernel: docs.first().map(|d| text(&d["kernel"])).unwrap_or_default(),
        targets,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_documents_of_a_host() {
        let one = documents(b"{\"host\":\"n1\",\"pid\":3}\n");
        assert_eq!(one, vec![serde_json::json!({"pid": 3})]);
        let two = documents(b"== n1 ==\n{\n  \"pid\": 3\n}\n{\"pid\": 4}\n");
        assert_eq!(two.len(), 2);
        assert_eq!(two[1]["pid"], 4);
    }

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
