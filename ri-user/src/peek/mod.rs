//! `ri peek`: read a live process's memory and print it as a typed value,
//! like gdb's `print`: a global variable by name, or any address as a
//! given type. Reads use `process_vm_readv`; the process is not stopped.

mod objects;
pub(crate) mod process;
mod symbols;

use std::{io::Write, path::PathBuf};

use serde_json::json;

pub use objects::{is_named, mapped_files, short};
pub use process::ProcessMemory;
pub use symbols::Symbols;

use crate::{
    Error,
    dwarf::{
        DebugInfo, DwarfError, Type, TypeId, suggest,
        value::{self, Memory, Options},
    },
    target,
};
use objects::Loaded;

/// Errors reading a process.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// Not allowed to read the process.
    #[error(
        "permission denied reading pid {0}: ri peek needs root, or CAP_SYS_PTRACE and a kernel.yama.ptrace_scope that allows it"
    )]
    PermissionDenied(u32),
    /// The address is not mapped in the process.
    #[error("address {addr:#x} is not mapped in pid {pid}")]
    NotMapped {
        /// The address.
        addr: u64,
        /// The process.
        pid: u32,
    },
    /// A `LIB:` prefix that names no file the process maps.
    #[error("no file named '{lib}' is mapped by pid {pid}")]
    NoSuchLibrary {
        /// The prefix.
        lib: String,
        /// The process.
        pid: u32,
    },
    /// A variable in none of the files searched.
    #[error("unknown variable '{name}' in {objects}{}", suggest(.close))]
    UnknownVariable {
        /// What was asked for.
        name: String,
        /// The files with debug info searched.
        objects: String,
        /// Close names that do exist.
        close: Vec<String>,
    },
    /// The file holding a variable is not mapped by the process.
    #[error("{path} is not mapped by pid {pid}")]
    NotLoaded {
        /// The binary or library.
        path: PathBuf,
        /// The process.
        pid: u32,
    },
}

/// What to print.
#[derive(Clone, Debug)]
pub struct PeekOptions {
    /// The process.
    pub pid: u32,
    /// Binary or library whose debug info (and variables) to use; default
    /// the process's executable.
    pub target: Option<String>,
    /// `[SYMBOL]` or `[ADDRESS, TYPE words...]`.
    pub what: Vec<String>,
    /// Pointer hops to follow.
    pub depth: u32,
    /// Array elements shown.
    pub max_elements: usize,
    /// One JSON object instead of text.
    pub json: bool,
}

/// An address given on the command line: `0x7f...` or decimal.
fn parse_address(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

/// One step of a variable path: `.name`, `->name`, `[N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Member(String),
    Arrow(String),
    Index(u64),
}

/// `tg_all.inner.pts[1].y`, `head->next->name`: the variable and the steps.
fn parse_path(s: &str) -> Result<(String, Vec<Step>), String> {
    let ident_end = |t: &str| {
        t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len())
    };
    let n = ident_end(s);
    if n == 0 || s.as_bytes()[0].is_ascii_digit() {
        return Err(format!("'{s}' is neither a variable nor an address"));
    }
    let (name, mut rest) = s.split_at(n);
    let mut steps = Vec::new();
    while !rest.is_empty() {
        let (arrow, after) = if let Some(r) = rest.strip_prefix("->") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix('.') {
            (false, r)
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(|| format!("missing ']' in '{s}'"))?;
            let idx = parse_address(r[..close].trim())
                .ok_or_else(|| format!("bad index '{}' in '{s}'", &r[..close]))?;
            steps.push(Step::Index(idx));
            rest = &r[close + 1..];
            continue;
        } else {
            return Err(format!(
                "unexpected '{rest}' in '{s}' (use .member, ->member, [N])"
            ));
        };
        let m = ident_end(after);
        if m == 0 {
            return Err(format!(
                "expected a member name after '{}' in '{s}'",
                if arrow { "->" } else { "." }
            ));
        }
        let member = after[..m].to_string();
        steps.push(if arrow {
            Step::Arrow(member)
        } else {
            Step::Member(member)
        });
        rest = &after[m..];
    }
    Ok((name.to_string(), steps))
}

/// What the command line asks for; `lib` is a `LIB:` prefix.
enum Request {
    Address {
        addr: u64,
        lib: Option<String>,
        ty: String,
    },
    Path {
        lib: Option<String>,
        name: String,
        steps: Vec<Step>,
    },
}

/// `LIB:REST` split at its first colon.
fn split_lib(s: &str) -> (Option<String>, &str) {
    match s.split_once(':') {
        Some((lib, rest)) if !lib.is_empty() => (Some(lib.to_string()), rest),
        _ => (None, s),
    }
}

fn request(what: &[String]) -> Result<Request, Error> {
    match what {
        [] => Err(Error::Usage(
            "ri peek needs a SYMBOL, or an ADDRESS and a TYPE".into(),
        )),
        [first, rest @ ..] if parse_address(first).is_some() => {
            if rest.is_empty() {
                return Err(Error::Usage(format!(
                    "ri peek {first}: an address needs a TYPE (e.g. 'struct foo')"
                )));
            }
            let ty = rest.join(" ");
            let (lib, ty) = split_lib(&ty);
            Ok(Request::Address {
                addr: parse_address(first).unwrap_or(0),
                lib,
                ty: ty.to_string(),
            })
        }
        [path] => {
            let (lib, path) = split_lib(path);
            let (name, steps) = parse_path(path).map_err(Error::Usage)?;
            Ok(Request::Path { lib, name, steps })
        }
        [first, ..] => Err(Error::Usage(format!(
            "'{first}' is not an address: ri peek takes a SYMBOL, or an ADDRESS and a TYPE"
        ))),
    }
}

/// Whether `what` is a plain `SYMBOL` path or `ADDRESS TYPE` (else it is
/// an expression for `view::peek`).
pub fn is_plain(what: &[String]) -> bool {
    match what {
        // A path's characters only (its own errors are the clearer ones).
        [one] => one
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.[]->:".contains(c)),
        _ => request(what).is_ok(),
    }
}

/// `what` as one expression: `ADDRESS TYPE` becomes `*(TYPE *)ADDRESS`.
pub fn as_expression(what: &[String]) -> String {
    match what {
        [first, rest @ ..] if !rest.is_empty() && parse_address(first).is_some() => {
            format!("*({} *){first}", rest.join(" "))
        }
        _ => what.join(" "),
    }
}

/// Where a path leads: the address and type of the object, and for a
/// bitfield its bit position and width.
struct Place {
    addr: u64,
    ty: TypeId,
    bits: Option<(u32, u32)>,
}

fn walk(
    info: &DebugInfo,
    mem: &ProcessMemory,
    path: &str,
    mut at: Place,
    steps: &[Step],
) -> Result<Place, Error> {
    for step in steps {
        if at.bits.is_some() {
            return Err(Error::Usage(format!(
                "'{path}': a bitfield has no members or elements"
            )));
        }
        let deref = |at: &Place| -> Result<(u64, TypeId), Error> {
            let Type::Pointer { pointee } = info.ty(info.strip(at.ty)) else {
                return Err(Error::Usage(format!(
                    "'{path}': {} is not a pointer",
                    info.type_name(at.ty)
                )));
            };
            let Some(pointee) = *pointee else {
                return Err(Error::Usage(format!(
                    "'{path}': cannot follow a void pointer"
                )));
            };
            let mut b = [0u8; 8];
            let n = info.pointer_size().min(8) as usize;
            mem.check(at.addr)?;
            if !mem.read(at.addr, &mut b[..n]) {
                return Err(PeekError::NotMapped {
                    addr: at.addr,
                    pid: mem.pid(),
                }
                .into());
            }
            Ok((u64::from_le_bytes(b), pointee))
        };
        match step {
            Step::Member(m) | Step::Arrow(m) => {
                let (base, ty) = if matches!(step, Step::Arrow(_)) {
                    deref(&at)?
                } else {
                    (at.addr, at.ty)
                };
                let r = info.member(ty, m)?;
                at = Place {
                    addr: base.wrapping_add(r.offset),
                    ty: r.ty,
                    bits: r.bit_size.map(|b| (r.bit_offset.unwrap_or(0), b)),
                };
            }
            Step::Index(i) => {
                let (base, elem) = match info.ty(info.strip(at.ty)) {
                    Type::Array { elem, .. } => (at.addr, *elem),
                    Type::Pointer { .. } => deref(&at)?,
                    _ => {
                        return Err(Error::Usage(format!(
                            "'{path}': {} is neither an array nor a pointer",
                            info.type_name(at.ty)
                        )));
                    }
                };
                let size = info.size_of(elem).unwrap_or(0);
                at = Place {
                    addr: base.wrapping_add(i.wrapping_mul(size)),
                    ty: elem,
                    bits: None,
                };
            }
        }
    }
    Ok(at)
}

/// The files to search: --target, or every file the process maps; a
/// `LIB:` prefix keeps the ones it names.
fn files(opts: &PeekOptions, lib: Option<&str>) -> Result<Vec<PathBuf>, Error> {
    let pid = opts.pid;
    let all = match &opts.target {
        Some(t) => vec![target::resolve(t, &target::Scope::pids(&[pid]))?],
        None => objects::mapped_files(pid)?,
    };
    let Some(lib) = lib else {
        return Ok(all);
    };
    let picked: Vec<PathBuf> = all
        .iter()
        .filter(|p| objects::is_named(p, lib))
        .cloned()
        .collect();
    if picked.is_empty() {
        return Err(PeekError::NoSuchLibrary {
            lib: lib.to_string(),
            pid,
        }
        .into());
    }
    Ok(picked)
}

/// The error for a name found in none of `loaded` (searched `files`).
fn not_found(files: &[PathBuf], loaded: &[Loaded], name: &str) -> Error {
    // The executable may have it and lack debug info: say so.
    if loaded.first().is_none_or(|o| o.path != files[0])
        && let Err(e) = DebugInfo::load(&files[0])
    {
        return e.into();
    }
    let mut close = Vec::new();
    let mut first = None;
    for o in loaded {
        if let Err(e) = o.info.resolve_variable(name) {
            if let DwarfError::UnknownVariable { close: c, .. } = &e {
                close.extend(c.iter().cloned());
            }
            first.get_or_insert(e);
        }
    }
    match (loaded.len(), first) {
        (1, Some(e)) => e.into(),
        _ => {
            close.sort();
            close.dedup();
            close.truncate(5);
            let names: Vec<String> = loaded.iter().map(Loaded::name).collect();
            PeekError::UnknownVariable {
                name: name.to_string(),
                objects: names.join(", "),
                close,
            }
            .into()
        }
    }
}

/// A variable's object, file address and type: the first object that has
/// it (the executable, then libraries in map order, as gdb); a note on
/// stderr names the others.
fn find_variable<'a>(
    files: &[PathBuf],
    loaded: &'a [Loaded],
    name: &str,
) -> Result<(&'a Loaded, u64, TypeId), Error> {
    let hits: Vec<(&Loaded, u64, TypeId)> = loaded
        .iter()
        .filter_map(|o| {
            let (a, t) = o
                .info
                .variable(name)
                .or_else(|| process::alias(&o.path, name, &o.info))?;
            Some((o, a, t))
        })
        .collect();
    let Some(&(o, vaddr, ty)) = hits.first() else {
        return Err(not_found(files, loaded, name));
    };
    if hits.len() > 1 {
        let others: Vec<String> = hits[1..].iter().map(|h| h.0.name()).collect();
        eprintln!(
            "ri: note: {name} is also in {}; showing the one in {} (pick one with LIB:{name})",
            others.join(", "),
            o.name()
        );
    }
    Ok((o, vaddr, ty))
}

/// Reads and prints the value.
pub fn run(opts: &PeekOptions, out: &mut impl Write) -> Result<(), Error> {
    let pid = opts.pid;
    let req = request(&opts.what)?;
    target::check_pid(pid)?;
    let lib = match &req {
        Request::Address { lib, .. } | Request::Path { lib, .. } => lib.as_deref(),
    };
    let files = files(opts, lib)?;
    let loaded = objects::load(pid, &files)?;
    let all = match &opts.target {
        Some(_) => files.clone(),
        None => objects::mapped_files(pid)?,
    };
    let mem = ProcessMemory::new(pid).with_symbols(&all);
    let (label, obj, place) = match req {
        Request::Address { addr, ty, .. } => {
            let found = loaded
                .iter()
                .find_map(|o| o.info.type_by_name(&ty).map(|t| (o, t)));
            let (obj, ty) = match (found, loaded.first()) {
                (Some(f), _) => f,
                (None, Some(o)) => return Err(o.info.resolve_type(&ty).unwrap_err().into()),
                (None, None) => {
                    return Err(DebugInfo::load(&files[0]).err().map_or_else(
                        || Error::Usage(format!("unknown type '{ty}'")),
                        Error::from,
                    ));
                }
            };
            let place = Place {
                addr,
                ty,
                bits: None,
            };
            (None, obj, place)
        }
        Request::Path { name, steps, .. } => {
            let (obj, vaddr, ty) = find_variable(&files, &loaded, &name)?;
            // A library's global the executable uses lives in the
            // executable's copy.
            let bias = obj.bias(pid)?;
            let copy = process::exe_of(pid)
                .is_ok_and(|exe| exe != obj.path)
                .then(|| process::exe_copy(pid, &name))
                .flatten();
            let root = Place {
                addr: copy.unwrap_or(vaddr.wrapping_add(bias)),
                ty,
                bits: None,
            };
            let label = opts.what[0].clone();
            let place = walk(&obj.info, &mem, &label, root, &steps)?;
            (Some(label), obj, place)
        }
    };
    let info = &obj.info;
    let Place { addr, ty, bits } = place;
    mem.check(addr)?;
    let vopts = Options {
        depth: opts.depth,
        max_elements: opts.max_elements,
        ..Options::default()
    };
    let v = match bits {
        Some((bit_offset, width)) => {
            let mut b = vec![0u8; (bit_offset + width).div_ceil(8) as usize];
            if !mem.read(addr, &mut b) {
                return Err(PeekError::NotMapped { addr, pid }.into());
            }
            value::decode_bitfield(info, ty, &b, bit_offset, width)
        }
        None => value::read(info, ty, addr, &mem, &vopts),
    };
    let tname = info.type_name(ty);
    let where_ = obj.name();
    if opts.json {
        let obj = json!({
            "name": label,
            "type": tname,
            "addr": format!("{addr:#x}"),
            "object": obj.path.display().to_string(),
            "value": v.to_json(),
        });
        writeln!(out, "{obj}")?;
    } else {
        let head = match &label {
            Some(name) => format!("{name} ({tname} @ {addr:#x} in {where_})"),
            None => format!("*({}){addr:#x} (in {where_})", info.declaration(ty, "*")),
        };
        writeln!(out, "{head} = {}", v.to_text())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_address;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("0x10"), Some(16));
        assert_eq!(parse_address("4096"), Some(4096));
        assert_eq!(parse_address("tg_all"), None);
        assert_eq!(parse_address("0xzz"), None);
    }

    #[test]
    fn paths() {
        use super::{Step, parse_path};
        let (n, s) = parse_path("a.b->c[3].d").unwrap();
        assert_eq!(n, "a");
        assert_eq!(
            s,
            vec![
                Step::Member("b".into()),
                Step::Arrow("c".into()),
                Step::Index(3),
                Step::Member("d".into())
            ]
        );
        assert!(parse_path("a.").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a+1").is_err());
    }
}
