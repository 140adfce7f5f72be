//! `ri ctl`: the client of the control sockets that targets linked with
//! `ri-control` serve (docs/CONTROL-PROTOCOL.md). It finds sockets, lists
//! a target's commands and runs one, asking before a mutating command.

pub mod defer;
mod procsock;

use std::{
    io::{self, BufRead, IsTerminal, Write},
    path::PathBuf,
};

use ri_control::{Client, ClientError, CommandInfo, SocketInfo};
use serde_json::{Map, Value};

/// Which control socket to talk to.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The socket of a process, found by discovery (`name` picks one when
    /// the process has several).
    Pid {
        /// Process id.
        pid: i32,
        /// Control server name.
        name: Option<String>,
    },
    /// An explicit socket path.
    Socket(PathBuf),
}

/// What `ri ctl` does.
#[derive(Debug, Clone)]
pub enum Action {
    /// List the control sockets on this machine.
    Discover,
    /// List the target's commands.
    List,
    /// Run one command with `key=value` or positional arguments.
    Call {
        /// Command name.
        command: String,
        /// Raw arguments from the command line.
        args: Vec<String>,
    },
}

/// Options of `ri ctl`.
#[derive(Debug, Clone)]
pub struct CtlOptions {
    /// Target (not needed for [`Action::Discover`]).
    pub endpoint: Option<Endpoint>,
    /// What to do.
    pub action: Action,
    /// Print raw JSON.
    pub json: bool,
    /// Run mutating commands without asking.
    pub yes: bool,
}

/// A failed `ri ctl`.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The pid does not exist.
    #[error("no such process: {0}")]
    NoProcess(i32),
    /// The process has no control socket that we can see.
    #[error("no control socket for pid {pid}{hint}")]
    NoSocket {
        /// Process id.
        pid: i32,
        /// Why, when known.
        hint: String,
    },
    /// The process has control sockets, none with that name.
    #[error("pid {pid} has no control socket named '{name}' (it has: {names})")]
    NoSuchName {
        /// Process id.
        pid: i32,
        /// The name asked for.
        name: String,
        /// The names it has.
        names: String,
    },
    /// The process has several control sockets.
    #[error("pid {pid} has several control sockets ({names}); choose one with --name")]
    Ambiguous {
        /// Process id.
        pid: i32,
        /// Their names.
        names: String,
    },
    /// The socket's permissions keep us out.
    #[error("permission denied: {0} (only the target's user and root may use its control socket)")]
    PermissionDenied(String),
    /// Nothing listens on the socket.
    #[error("cannot connect to {path}: {reason}")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The target answered with an error.
    #[error("{code}: {message}")]
    Remote {
        /// Stable error code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// Any other client failure (I/O, closed connection, bad response).
    #[error("{0}")]
    Client(ClientError),
    /// Arguments that do not fit the command.
    #[error("{0}")]
    Args(String),
    /// A mutating command without `--yes` and without a terminal to ask on.
    #[error("'{0}' changes the target: add --yes to run it (stdin is not a terminal to ask on)")]
    NeedsConfirmation(String),
    /// The user did not confirm.
    #[error("not confirmed; nothing was run")]
    Declined,
    /// A mutating command held back for the local ri of a fleet command to
    /// confirm (the process it would touch went to stderr).
    #[error("'{0}' changes the target: held back for the local ri to confirm")]
    Deferred(String),
}

impl From<ClientError> for CtlError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Remote { code, message } => CtlError::Remote { code, message },
            ClientError::Connect { addr, source } => connect_error(addr, &source),
            e => CtlError::Client(e),
        }
    }
}

fn connect_error(path: String, e: &io::Error) -> CtlError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => CtlError::PermissionDenied(path),
        io::ErrorKind::NotFound => CtlError::Connect {
            path,
            reason: "no such socket".into(),
        },
        io::ErrorKind::ConnectionRefused => CtlError::Connect {
            path,
            reason: "nothing listens there (a socket left behind by a process that died?)".into(),
        },
        _ => CtlError::Connect {
            path,
            reason: e.to_string(),
        },
    }
}

/// Runs `ri ctl`, writing to stdout.
pub fn run(opts: &CtlOptions) -> Result<(), crate::Error> {
    let mut out = io::stdout().lock();
    match (&opts.action, &opts.endpoint) {
        (Action::Discover, _) => discover(opts.json, &mut out),
        (_, None) => Err(crate::Error::Usage(
            "ri ctl needs -p PID or --socket PATH".into(),
        )),
        (Action::List, Some(ep)) => {
            let mut client = connect(ep)?;
            let cmds = client.list().map_err(CtlError::from)?;
            list(&cmds, opts.json, &mut out)
        }
        (Action::Call { command, args }, Some(ep)) => {
            let mut client = connect(ep)?;
            let cmds = client.list().map_err(CtlError::from)?;
            let info = cmds.iter().find(|c| &c.name == command);
            let args = match info {
                Some(info) => build_args(info, args)?,
                None => loose_args(args)?,
            };
            let mutates = info.is_some_and(|c| c.mutates);
            if mutates && !opts.yes {
                if defer::holding() {
                    return Err(defer(&mut client, opts.endpoint.as_ref(), command).into());
                }
                confirm(&mut client, command)?;
            }
            let result = match client.call(command, args, mutates) {
                Ok(v) => v,
                Err(ClientError::Remote { code, message }) if info.is_none() => {
                    let hint = suggest(command, &cmds);
                    return Err(CtlError::Remote {
                        code,
                        message: format!("{message}{hint}"),
                    }
                    .into());
                }
                Err(e) => return Err(CtlError::from(e).into()),
            };
            print_value(&result, opts.json, &mut out)
        }
    }
}

/// The commands a process's control socket offers, with their argument
/// schemas (for `ri shell`'s completion).
pub fn commands(pid: i32) -> Result<Vec<CommandInfo>, CtlError> {
    let mut client = connect(&Endpoint::Pid { pid, name: None })?;
    Ok(client.list()?)
}

/// Connects to the socket an endpoint names.
fn connect(ep: &Endpoint) -> Result<Client, CtlError> {
    let path = match ep {
        Endpoint::Socket(p) => p.clone(),
        Endpoint::Pid { pid, name } => resolve(*pid, name.as_deref())?.path,
    };
    Ok(Client::connect_path(&path)?)
}

/// Finds the control socket of `pid`.
fn resolve(pid: i32, name: Option<&str>) -> Result<SocketInfo, CtlError> {
    if !ri_control::pid_alive(pid) {
        return Err(CtlError::NoProcess(pid));
    }
    let mut found: Vec<SocketInfo> = ri_control::discover()
        .into_iter()
        .filter(|s| s.pid == pid)
        .collect();
    found.extend(own_sockets(pid, &found));
    let names = |v: &[SocketInfo]| {
        v.iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if found.is_empty() {
        return Err(CtlError::NoSocket {
            pid,
            hint: no_socket_hint(),
        });
    }
    if let Some(name) = name {
        return match found.iter().position(|s| s.name == name) {
            Some(i) => Ok(found.swap_remove(i)),
            None => Err(CtlError::NoSuchName {
                pid,
                name: name.to_string(),
                names: names(&found),
            }),
        };
    }
    if found.len() > 1 {
        return Err(CtlError::Ambiguous {
            pid,
            names: names(&found),
        });
    }
    Ok(found.remove(0))
}

/// The control sockets `pid` listens on that are not in `known` (a socket
/// in a directory of its own, `--control-dir`): those named like ri-control
/// names them (`NAME.PID.sock`), else those that answer a `list` request.
fn own_sockets(pid: i32, known: &[SocketInfo]) -> Vec<SocketInfo> {
    let same = |a: &PathBuf, b: &PathBuf| a.canonicalize().ok() == b.canonicalize().ok();
    let fresh: Vec<PathBuf> = procsock::listening_paths(pid)
        .into_iter()
        .filter(|p| !known.iter().any(|k| same(&k.path, p)))
        .collect();
    let info = |path: &PathBuf, name: String| SocketInfo {
        path: path.clone(),
        name,
        pid,
        alive: true,
    };
    let named: Vec<SocketInfo> = fresh
        .iter()
        .filter_map(|p| {
            let file = p.file_name()?.to_str()?;
            match ri_control::paths::parse_socket_file_name(file) {
                Some((name, owner)) if owner == pid => Some(info(p, name)),
                _ => None,
            }
        })
        .collect();
    if !named.is_empty() || !known.is_empty() {
        return named;
    }
    fresh
        .iter()
        .filter(|p| speaks_control(p))
        .map(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("control");
            info(p, stem.to_string())
        })
        .collect()
}

/// Whether the socket at `path` answers a control `list` request.
fn speaks_control(path: &PathBuf) -> bool {
    Client::connect_path(path).is_ok_and(|mut c| {
        c.set_timeout(Some(std::time::Duration::from_secs(1)))
            .is_ok()
            && c.list().is_ok()
    })
}

/// Why discovery may have missed a socket: a directory we cannot read.
fn no_socket_hint() -> String {
    for dir in ri_control::paths::discover_dirs() {
        if let Err(e) = std::fs::read_dir(&dir)
            && e.kind() == io::ErrorKind::PermissionDenied
        {
            return format!(
                " visible to this user (cannot read {}: permission denied; the target's user or root can)",
                dir.display()
            );
        }
    }
    " (is it linked with ri-control, and has it started its control server?)".into()
}

/// `ri ctl --discover`.
fn discover(json: bool, out: &mut impl Write) -> Result<(), crate::Error> {
    let found = ri_control::discover();
    if json {
        let v: Vec<Value> = found
            .iter()
            .map(|s| {
                serde_json::json!({"pid": s.pid, "name": s.name,
                    "path": s.path.display().to_string(), "alive": s.alive})
            })
            .collect();
        writeln!(out, "{}", Value::Array(v))?;
        return Ok(());
    }
    if found.is_empty() {
        eprintln!("ri: no control sockets found");
        return Ok(());
    }
    let w = found.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:>8}  {:<w$}  {:<5}  SOCKET", "PID", "NAME", "ALIVE")?;
    for s in &found {
        writeln!(
            out,
            "{:>8}  {:<w$}  {:<5}  {}",
            s.pid,
            s.name,
            if s.alive { "yes" } else { "no" },
            s.path.display()
        )?;
    }
    Ok(())
}

/// `ri ctl --list`.
fn list(cmds: &[CommandInfo], json: bool, out: &mut impl Write) -> Result<(), crate::Error> {
    if json {
        let v = serde_json::to_value(cmds).map_err(io::Error::other)?;
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let rows: Vec<(String, &str, String, &str)> = cmds
        .iter()
        .map(|c| {
            let kind = if c.mutates {
                "yes"
            } else if c.builtin {
                "built-in"
            } else {
                "no"
            };
            (c.name.clone(), kind, args_summary(&c.args), c.help.as_str())
        })
        .collect();
    let wn = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(7);
    let wa = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(4);
    writeln!(
        out,
        "{:<wn$}  {:<8}  {:<wa$}  HELP",
        "COMMAND", "MUTATES", "ARGS"
    )?;
    for (name, kind, args, help) in rows {
        writeln!(out, "{name:<wn$}  {kind:<8}  {args:<wa$}  {help}")?;
    }
    Ok(())
}

/// One-line summary of an argument schema: `key:type`, optional ones in
/// brackets, enums as `a|b`.
pub fn args_summary(schema: &Value) -> String {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return "-".into();
    };
    let required = required(schema);
    let mut keys: Vec<&String> = required
        .iter()
        .filter_map(|r| props.get_key_value(r.as_str()).map(|(k, _)| k))
        .collect();
    keys.extend(props.keys().filter(|k| !required.contains(k)));
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            let p = &props[k.as_str()];
            let ty = match p.get("enum").and_then(Value::as_array) {
                Some(e) => e
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join("|"),
                None => match p.get("type") {
                    Some(Value::String(t)) => t.clone(),
                    Some(Value::Array(ts)) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("|"),
                    _ => "any".into(),
                },
            };
            if required.contains(k) {
                format!("{k}:{ty}")
            } else {
                format!("[{k}:{ty}]")
            }
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn required(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the argument object of `info` from `key=value` and positional
/// words (positionals fill the schema's `required` keys in order).
pub fn build_args(info: &CommandInfo, words: &[String]) -> Result<Value, CtlError> {
    let props = info.args.get("properties").and_then(Value::as_object);
    let mut args = Map::new();
    let mut positional = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if props.is_some_and(|p| p.contains_key(k)) => {
                let v = parse_value(v, props.and_then(|p| p.get(k)));
                if args.insert(k.to_string(), v).is_some() {
                    return Err(CtlError::Args(format!("argument '{k}' given twice")));
                }
            }
            Some((k, _)) if props.is_none() && is_name(k) => {
                return Err(CtlError::Args(format!(
                    "'{}' takes no arguments, not '{k}'",
                    info.name
                )));
            }
            _ => positional.push(w.as_str()),
        }
    }
    if !positional.is_empty() {
        let Some(props) = props else {
            return Err(CtlError::Args(format!(
                "'{}' takes no arguments",
                info.name
            )));
        };
        let free: Vec<String> = required(&info.args)
            .into_iter()
            .filter(|k| !args.contains_key(k))
            .collect();
        if positional.len() > free.len() {
            let takes = args_summary(&info.args);
            return Err(CtlError::Args(format!(
                "too many arguments for '{}' (it takes {takes}; give optional ones as key=value)",
                info.name
            )));
        }
        for (k, v) in free.iter().zip(positional) {
            args.insert(k.clone(), parse_value(v, props.get(k)));
        }
    }
    Ok(if args.is_empty() && props.is_none() {
        Value::Null
    } else {
        Value::Object(args)
    })
}

/// Arguments of a command we know nothing about: `key=value` only.
fn loose_args(words: &[String]) -> Result<Value, CtlError> {
    let mut args = Map::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if is_name(k) => {
                args.insert(k.to_string(), parse_value(v, None));
            }
            _ => {
                return Err(CtlError::Args(format!(
                    "'{w}': arguments of an unknown command must be key=value"
                )));
            }
        }
    }
    Ok(if args.is_empty() {
        Value::Null
    } else {
        Value::Object(args)
    })
}

fn is_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A word as JSON when it parses as JSON (and the schema does not want a
/// plain string), else as a string.
pub fn parse_value(word: &str, schema: Option<&Value>) -> Value {
    let string_only = schema
        .and_then(|s| s.get("type"))
        .is_some_and(|t| t == "string");
    if !string_only && let Ok(v) = serde_json::from_str::<Value>(word) {
        return v;
    }
    Value::String(word.to_string())
}

/// Asks on the terminal before a mutating command.
fn confirm(client: &mut Client, command: &str) -> Result<(), CtlError> {
    if !io::stdin().is_terminal() {
        return Err(CtlError::NeedsConfirmation(command.to_string()));
    }
    let v = client.call("version", Value::Null, false)?;
    let pid = v.get("pid").map_or_else(|| "?".into(), Value::to_string);
    let name = v.get("target").and_then(Value::as_str).unwrap_or("?");
    eprint!("Run mutating command {command} on pid {pid} ({name})? [y/N] ");
    let _ = io::stderr().flush();
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CtlError::Client(ClientError::Io(e)))?;
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CtlError::Declined),
    }
}

/// Names the process a mutation would touch to the local ri of a fleet
/// command, which lists every host's and asks once.
fn defer(client: &mut Client, ep: Option<&Endpoint>, command: &str) -> CtlError {
    let pid = match ep {
        Some(Endpoint::Pid { pid, .. }) => Some(i64::from(*pid)),
        _ => client
            .call("version", Value::Null, false)
            .ok()
            .and_then(|v| v.get("pid").and_then(Value::as_i64)),
    };
    let comm = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|| "?".into());
    defer::hold(pid.unwrap_or(-1), &comm, command);
    CtlError::Deferred(command.to_string())
}

/// " (did you mean X?)" when a command has a close name.
fn suggest(command: &str, cmds: &[CommandInfo]) -> String {
    cmds.iter()
        .map(|c| (strsim::jaro_winkler(command, &c.name), &c.name))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!(" (did you mean {n}?)"))
        .unwrap_or_default()
}

/// Prints a result: compact JSON with `--json`, else strings as they are
/// and everything else as indented JSON.
fn print_value(v: &Value, json: bool, out: &mut impl Write) -> Result<(), crate::Error> {
    match v {
        _ if json => writeln!(out, "{v}")?,
        Value::String(s) => writeln!(out, "{s}")?,
        Value::Null => {}
        v => {
            let text = serde_json::to_string_pretty(v).map_err(io::Error::other)?;
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(args: Value) -> CommandInfo {
        CommandInfo {
            name: "x".into(),
            help: String::new(),
            args,
            mutates: false,
            builtin: false,
        }
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn positional_and_keyed() {
        let i = info(json!({"type": "object", "properties": {
            "fid": {"type": "string"}, "block": {"type": "integer"},
            "force": {"type": "boolean"}}, "required": ["fid", "block"]}));
        let a = build_args(&i, &words(&["<1:2>", "3"])).unwrap();
        assert_eq!(a, json!({"fid": "<1:2>", "block": 3}));
        let a = build_args(&i, &words(&["block=7", "<1:2>", "force=true"])).unwrap();
        assert_eq!(a, json!({"fid": "<1:2>", "block": 7, "force": true}));
        assert!(build_args(&i, &words(&["a", "1", "2"])).is_err());
        assert!(build_args(&i, &words(&["block=1", "block=2"])).is_err());
    }

    #[test]
    fn string_schema_keeps_strings() {
        let i = info(json!({"type": "object", "properties": {
            "key": {"type": "string"}, "value": {"type": "string"}},
            "required": ["key", "value"]}));
        let a = build_args(&i, &words(&["123", "a=b"])).unwrap();
        assert_eq!(a, json!({"key": "123", "value": "a=b"}));
    }

    #[test]
    fn no_schema() {
        let i = info(Value::Null);
        assert_eq!(build_args(&i, &[]).unwrap(), Value::Null);
        assert!(build_args(&i, &words(&["1"])).is_err());
        assert!(build_args(&i, &words(&["n=1"])).is_err());
    }

    #[test]
    fn values() {
        assert_eq!(parse_value("12", None), json!(12));
        assert_eq!(parse_value("0x10", None), json!("0x10"));
        assert_eq!(parse_value("{\"a\":1}", None), json!({"a": 1}));
        assert_eq!(parse_value("", None), json!(""));
    }

    #[test]
    fn summary() {
        let s = json!({"type": "object", "properties": {
            "state": {"type": "string", "enum": ["on", "off"]},
            "n": {"type": ["string", "integer"]}}, "required": ["state"]});
        assert_eq!(args_summary(&s), "state:on|off [n:string|integer]");
        assert_eq!(args_summary(&Value::Null), "-");
    }
}
