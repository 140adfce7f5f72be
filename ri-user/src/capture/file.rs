//! The session file: TOML read strictly (an unknown key is an error naming
//! the key and its line), then checked for what serde cannot see.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer};

use super::{
    CaptureError,
    trigger::{Action, Condition},
};

/// A session file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// A name for the session (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// One line saying what the session is for.
    #[serde(default)]
    pub help: Option<String>,
    /// How long the session runs (default: until Ctrl-C).
    #[serde(default, deserialize_with = "opt_duration")]
    pub duration: Option<Duration>,
    /// How often aggregations print and value conditions are checked.
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub interval: Duration,
    /// Whether `ctl` actions may run commands that change a target.
    #[serde(default)]
    pub allow_mutations: bool,
    /// Which processes.
    #[serde(default)]
    pub targets: Targets,
    /// What runs, by name.
    #[serde(default)]
    pub instruments: BTreeMap<String, InstrumentSpec>,
    /// When to do what.
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// The processes a session watches. Command-line targets replace these.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Process ids.
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Processes whose `comm` is one of these.
    #[serde(default)]
    pub comm: Vec<String>,
    /// Processes running one of these executables.
    #[serde(default)]
    pub exe: Vec<String>,
    /// Hosts (issue "Fleet"); empty or `localhost`: this machine.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Targets {
    /// Whether no process is named.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.comm.is_empty() && self.exe.is_empty()
    }
}

/// One instrument: a pack instrument or any ri command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentSpec {
    /// `PACK.INSTRUMENT`, as `ri run` takes it.
    #[serde(default)]
    pub run: Option<String>,
    /// The pack instrument's parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// A ri command line without the leading `ri` and without targets.
    #[serde(default)]
    pub cmd: Option<String>,
    /// Started with the session (default), or only by a trigger's action.
    #[serde(default = "yes")]
    pub start: bool,
    /// Keep only the last `10s` (or `64MiB`) of output in memory, written
    /// when a trigger dumps it.
    #[serde(default, deserialize_with = "opt_keep")]
    pub flight_recorder: Option<Keep>,
}

fn yes() -> bool {
    true
}

/// How much a flight recorder keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// The last this long.
    Time(Duration),
    /// The last this many bytes of output.
    Bytes(u64),
}

/// A trigger as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// A name (default `trigger-N`).
    #[serde(default)]
    pub name: Option<String>,
    /// The condition.
    #[serde(deserialize_with = "condition")]
    pub when: Condition,
    /// Intervals the condition must hold in a row (value conditions).
    #[serde(default = "one", rename = "for")]
    pub intervals: u32,
    /// What to do when it fires.
    #[serde(deserialize_with = "actions")]
    pub actions: Vec<Action>,
}

fn one() -> u32 {
    1
}

/// Parses `10s`, `250ms`, `5m`, `40us`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 10s, 250ms, 5m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "ns" => n / 1e9,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("'{s}': unknown unit '{u}' (ns, us, ms, s, m, h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("'{s}' must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `64MiB`, `512KiB`, `1GiB` or a bare number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 64MiB)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        u => return Err(format!("'{s}': unknown unit '{u}' (KiB, MiB, GiB)")),
    };
    match n.checked_mul(mult) {
        Some(b) if b > 0 => Ok(b),
        _ => Err(format!("'{s}' must be a positive size")),
    }
}

/// A number of seconds or a duration string.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(f64),
    Str(String),
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) if n > 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n)),
        NumOrStr::Num(n) => Err(serde::de::Error::custom(format!(
            "{n} must be a positive number of seconds"
        ))),
        NumOrStr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn opt_keep<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Keep>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim_end().ends_with('B') {
        parse_bytes(&s).map(|b| Some(Keep::Bytes(b)))
    } else {
        parse_duration(&s).map(|t| Some(Keep::Time(t)))
    }
    .map_err(serde::de::Error::custom)
}

fn condition<'de, D: Deserializer<'de>>(d: D) -> Result<Condition, D::Error> {
    Condition::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Action>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom(
            "a trigger needs at least one action",
        ));
    }
    list.iter()
        .map(|a| Action::parse(a).map_err(serde::de::Error::custom))
        .collect()
}

/// Parses a session file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<SessionFile, CaptureError> {
    let file: SessionFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().lines().next().unwrap_or("bad TOML").to_string();
        CaptureError::File(match line {
            Some(l) => format!("{origin}, line {l}: {msg}"),
            None => format!("{origin}: {msg}"),
        })
    })?;
    validate(&file).map_err(|m| CaptureError::File(format!("{origin}: {m}")))?;
    Ok(file)
}

/// What serde cannot check: one of `run`/`cmd` per instrument, triggers
/// naming instruments that exist, mutating `ctl` only when allowed.
fn validate(f: &SessionFile) -> Result<(), String> {
    if f.instruments.is_empty() {
        return Err("no [instruments.NAME] table: a session needs at least one".into());
    }
    for (name, i) in &f.instruments {
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "instrument '{name}': names are letters, digits, '_' and '-'"
            ));
        }
        match (&i.run, &i.cmd) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "instrument '{name}': give either run or cmd, not both"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "instrument '{name}': needs run = \"PACK.INSTRUMENT\" or cmd = \"COMMAND ...\""
                ));
            }
            (None, Some(_)) if !i.params.is_empty() => {
                return Err(format!(
                    "instrument '{name}': params apply to run = instruments"
                ));
            }
            _ => {}
        }
    }
    let known = |n: &str| f.instruments.contains_key(n);
    for (i, t) in f.triggers.iter().enumerate() {
        let tname = t
            .name
            .clone()
            .unwrap_or_else(|| format!("trigger-{}", i + 1));
        if t.intervals == 0 {
            return Err(format!("trigger '{tname}': for must be at least 1"));
        }
        if let Some(inst) = t.when.instrument()
            && !known(inst)
        {
            return Err(format!(
                "trigger '{tname}': its condition names no instrument '{inst}'"
            ));
        }
        for a in &t.actions {
            if let Some(inst) = a.instrument()
                && !known(inst)
            {
                return Err(format!(
                    "trigger '{tname}': action names no instrument '{inst}'"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 parsecs").is_err());
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert!(parse_bytes("0MiB").is_err());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "interval = \"1s\"\n[instruments.a]\nrun = \"motr.fops\"\nbogus = 1\n";
        let e = parse(text, "s.toml").unwrap_err().to_string();
        assert!(
            e.starts_with("s.toml, line 4: unknown field `bogus`"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn trigger_must_name_known_instruments() {
        let text = "[instruments.a]\nrun = \"motr.fops\"\n[[triggers]]\nwhen = \"b.p99 > 20ms\"\nactions = [\"report\"]\n";
        let e = parse(text, "s.toml").unwrap_err().to_string();
        assert!(e.contains("no instrument 'b'"), "{e}");
    }

    #[test]
    fn shipped_sessions_parse() {
        for (name, text) in [
            (
                "motr-slow-requests",
                include_str!("../../../sessions/motr-slow-requests.toml"),
            ),
            (
                "postgres-slow-queries",
                include_str!("../../../sessions/postgres-slow-queries.toml"),
            ),
            (
                "alloc-growth",
                include_str!("../../../sessions/alloc-growth.toml"),
            ),
        ] {
            let f = parse(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(f.name.as_deref(), Some(name));
            assert!(!f.triggers.is_empty());
        }
    }
}
