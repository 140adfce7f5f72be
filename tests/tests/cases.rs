//! Declarative runtime cases, like bpftrace's runtime tests: each case in
//! `tests/cases/*.toml` is a command line and what it must print.
//!
//! ```toml
//! [[case]]
//! name = "entry args on the int3 site"
//! args = ["trace", "--json", "-c", "{calls} calls 100", "u:{calls}:work_int3(a=arg0, b=arg1)"]
//! status = 0                              # exit status (default 0)
//! count = { "work_int3" = 100 }           # JSON events per probe suffix
//! seq = [{ probe = "work_int3", a = 1, b = 2 }]  # events in this order (fields are a subset)
//! stdout_has = ["..."]                    # substrings of stdout
//! stderr_has = ["..."]                    # substrings of stderr
//! stderr_lacks = ["..."]                  # substrings stderr must not have
//! stderr_lines = 1                        # at most this many stderr lines
//! as_user = "nobody"                      # run ri as another user
//! each = ["typed-O0", "typed-O2"]         # once per value, as {each}
//! m0d = true                              # start an m0d first (stopped after)
//! env = { LD_LIBRARY_PATH = "{fixtures}/x" }  # ri's own environment, added
//! ```
//! `{calls}` and other `{NAME}` are fixture paths; `{fixtures}` is their folder.
//! With `m0d = true`, `{m0d_pid}`, `{m0d_socket}` and `{m0d_endpoint}` name it,
//! and `{m0d_core}` is a gcore of it.
//! In `seq`, the string "null" matches a JSON null (a read that faulted).

use std::{collections::BTreeMap, process::Command};

use ri_tests::{events, fixtures, m0sim::M0d, require_bpf, ri_bin};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct File {
    case: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    args: Vec<String>,
    #[serde(default)]
    status: i32,
    #[serde(default)]
    count: BTreeMap<String, usize>,
    #[serde(default)]
    seq: Vec<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    stdout_has: Vec<String>,
    #[serde(default)]
    stderr_has: Vec<String>,
    #[serde(default)]
    stderr_lacks: Vec<String>,
    stderr_lines: Option<usize>,
    as_user: Option<String>,
    #[serde(default)]
    m0d: bool,
    /// Variables added to ri's environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Run the case once per value, with `{each}` replaced by it.
    #[serde(default)]
    each: Vec<String>,
}

/// Expands a raw case into one case per `each` value.
fn instances(raw: &toml::Table) -> Result<Vec<Case>, String> {
    let text = toml::to_string(raw).map_err(|e| e.to_string())?;
    let base: Case = toml::from_str(&text).map_err(|e| e.to_string())?;
    if base.each.is_empty() {
        return Ok(vec![base]);
    }
    base.each
        .iter()
        .map(|v| {
            let mut c: Case =
                toml::from_str(&text.replace("{each}", v)).map_err(|e| e.to_string())?;
            c.name = format!("{} [{v}]", c.name);
            Ok(c)
        })
        .collect()
}

fn expand(s: &str) -> String {
    let dir = fixtures();
    let mut out = s.replace("{fixtures}", &dir.display().to_string());
    // `{name}` is a fixture's path when that fixture exists; other braces
    // (JSON in expected output, `ri trace --text` templates) stay as they are.
    let mut from = 0;
    while let Some(start) = out[from..].find('{').map(|i| from + i) {
        let Some(len) = out[start..].find('}') else {
            break;
        };
        let name = &out[start + 1..start + len];
        let fixture_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if name.is_empty() || !name.chars().all(fixture_char) || !dir.join(name).exists() {
            from = start + 1;
            continue;
        }
        let path = dir.join(name).display().to_string();
        out.replace_range(start..start + len + 1, &path);
        from = start + path.len();
    }
    out
}

/// TOML has no null: the string "null" stands for JSON null (a faulted read).
fn to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) if s == "null" => Value::Null,
        toml::Value::String(s) => Value::String(expand(s)),
        v => serde_json::to_value(v).expect("toml to json"),
    }
}

fn check(case: &Case) -> Result<(), String> {
    let m0d = case.m0d.then(M0d::start);
    let mut vars: Vec<(&str, String)> = match &m0d {
        Some(m) => vec![
            ("{m0d_pid}", m.pid.to_string()),
            (
                "{m0d_socket}",
                m.socket
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("{m0d_endpoint}", m.endpoint.clone()),
        ],
        None => Vec::new(),
    };
    // `{m0d_core}`: a gcore of that m0d, taken before ri runs.
    let core_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    if let Some(m) = m0d
        .as_ref()
        .filter(|_| case.args.iter().any(|a| a.contains("{m0d_core}")))
    {
        let prefix = core_dir.path().join("core");
        let g = Command::new("gcore")
            .arg("-o")
            .arg(&prefix)
            .arg(m.pid.to_string())
            .output()
            .map_err(|e| format!("gcore (gdb; cargo xtask setup installs it): {e}"))?;
        if !g.status.success() {
            return Err(format!("gcore: {}", String::from_utf8_lossy(&g.stderr)));
        }
        vars.push(("{m0d_core}", format!("{}.{}", prefix.display(), m.pid)));
    }
    let expand = |s: &str| expand(&vars.iter().fold(s.to_string(), |s, (k, v)| s.replace(k, v)));
    let args: Vec<String> = case.args.iter().map(|a| expand(a)).collect();
    let mut cmd = match &case.as_user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            let uid = if user == "nobody" {
                "65534"
            } else {
                user.as_str()
            };
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ]);
            c.arg(ri_bin());
            c
        }
        None => Command::new(ri_bin()),
    };
    let out = cmd
        .args(&args)
        .envs(case.env.iter().map(|(k, v)| (k, expand(v))))
        .output()
        .map_err(|e| format!("cannot run ri: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = || {
        format!(
            "\n  command: ri {}\n  stdout: {}\n  stderr: {}",
            args.join(" "),
            trunc(&stdout),
            stderr
        )
    };
    if out.status.code() != Some(case.status) {
        return Err(format!(
            "exit status {:?}, expected {}{}",
            out.status.code(),
            case.status,
            ctx()
        ));
    }
    if stderr.contains("panicked") {
        return Err(format!("ri panicked{}", ctx()));
    }
    for s in &case.stdout_has {
        let s = expand(s);
        if !stdout.contains(&s) {
            return Err(format!("stdout lacks {s:?}{}", ctx()));
        }
    }
    for s in &case.stderr_has {
        let s = expand(s);
        if !stderr.contains(&s) {
            return Err(format!("stderr lacks {s:?}{}", ctx()));
        }
    }
    for s in &case.stderr_lacks {
        let s = expand(s);
        if stderr.contains(&s) {
            return Err(format!("stderr has {s:?}{}", ctx()));
        }
    }
    if let Some(n) = case.stderr_lines
        && stderr.lines().count() > n
    {
        return Err(format!("stderr has more than {n} lines{}", ctx()));
    }
    // Only trace cases print events (ri ctl prints other JSON).
    let evs = if case.count.is_empty() && case.seq.is_empty() {
        Vec::new()
    } else {
        events(&out.stdout)
    };
    for (probe, want) in &case.count {
        let probe = expand(probe);
        let got = evs
            .iter()
            .filter(|e| {
                e["probe"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(probe.as_str()))
            })
            .count();
        if got != *want {
            return Err(format!("{got} events of {probe}, expected {want}{}", ctx()));
        }
    }
    let mut at = 0;
    for want in &case.seq {
        let probe = expand(want.get("probe").and_then(|p| p.as_str()).unwrap_or(""));
        let found = evs[at..].iter().position(|e| {
            e["probe"]
                .as_str()
                .is_some_and(|p| p.ends_with(probe.as_str()))
                && want
                    .iter()
                    .filter(|(k, _)| *k != "probe")
                    .all(|(k, v)| e[k.as_str()] == to_json(v))
        });
        match found {
            Some(i) => at += i + 1,
            None => return Err(format!("no event matching {want:?} (in order){}", ctx())),
        }
    }
    Ok(())
}

fn trunc(s: &str) -> String {
    if s.len() > 2000 {
        format!("{}...", &s[..2000])
    } else {
        s.to_string()
    }
}

fn main() {
    require_bpf();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/cases")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read case file");
        let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        let cases = file
            .case
            .iter()
            .flat_map(|raw| instances(raw).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
        for case in cases {
            let full = format!("{stem}::{}", case.name);
            if !filter.is_empty() && !filter.iter().any(|p| full.contains(p.as_str())) {
                continue;
            }
            match check(&case) {
                Ok(()) => {
                    println!("test {full} ... ok");
                    passed += 1;
                }
                Err(e) => {
                    println!("test {full} ... FAILED\n  {e}");
                    failed += 1;
                }
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(101);
    }
}
