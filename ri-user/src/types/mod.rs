//! `ri types`: a binary's structs, unions, enums and typedefs, laid out
//! like pahole: member offsets and sizes, bitfield positions, holes and
//! padding, enum values.

use std::{io::Write, path::PathBuf};

use serde_json::{Value as Json, json};

use crate::{
    Error,
    dwarf::{DebugInfo, DwarfError, Member, StructKind, Type, TypeId},
    peek, target,
    text::counted,
};

/// Which types to show.
#[derive(Clone, Debug)]
pub struct TypesOptions {
    /// A path or library name; with `pid` and no target, every file the
    /// process maps.
    pub target: Option<String>,
    /// Resolve a library name in this process's mappings.
    pub pid: Option<u32>,
    /// Glob over type names (default `*`).
    pub pattern: Option<String>,
    /// A JSON array instead of C.
    pub json: bool,
}

/// The files to search and the pattern: `TARGET [PATTERN]`, or with `-p`
/// a lone argument that names no mapped file is a `[LIB:]PATTERN` over
/// every file the process maps.
fn plan(opts: &TypesOptions) -> Result<(Vec<PathBuf>, Option<String>, bool), Error> {
    let pids: Vec<u32> = opts.pid.into_iter().collect();
    for &p in &pids {
        target::check_pid(p)?;
    }
    let (Some(pid), None) = (opts.pid, &opts.pattern) else {
        let Some(t) = &opts.target else {
            return Err(Error::Usage("ri types needs a TARGET, or -p PID".into()));
        };
        return Ok((
            vec![target::resolve(t, &target::Scope::pids(&pids))?],
            opts.pattern.clone(),
            false,
        ));
    };
    let mapped = peek::mapped_files(pid)?;
    let Some(arg) = &opts.target else {
        return Ok((mapped, None, true));
    };
    if mapped.iter().any(|p| peek::is_named(p, arg)) {
        return Ok((
            vec![target::resolve(arg, &target::Scope::pids(&pids))?],
            None,
            false,
        ));
    }
    let (lib, pattern) = match arg.split_once(':') {
        Some((lib, pattern)) if !lib.is_empty() => (Some(lib), pattern.to_string()),
        _ => (None, arg.clone()),
    };
    let files: Vec<PathBuf> = match lib {
        Some(lib) => mapped
            .into_iter()
            .filter(|p| peek::is_named(p, lib))
            .collect(),
        None => mapped,
    };
    if files.is_empty() {
        return Err(peek::PeekError::NoSuchLibrary {
            lib: lib.unwrap_or_default().to_string(),
            pid,
        }
        .into());
    }
    Ok((files, Some(pattern), true))
}

/// Prints every matching type; returns how many.
pub fn run(opts: &TypesOptions, out: &mut impl Write) -> Result<usize, Error> {
    let (files, pattern, many) = plan(opts)?;
    let pattern = pattern.as_deref().unwrap_or("*");
    if !many {
        let info = DebugInfo::load(&files[0])?;
        return show(&[(None, info)], pattern, opts.json, out);
    }
    let mut infos = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match DebugInfo::load_if_any(f) {
            Ok(Some(info)) => infos.push((Some(peek::short(f)), info)),
            Ok(None) => {}
            Err(e) if i == 0 => return Err(e.into()),
            Err(_) => {}
        }
    }
    if infos.is_empty() {
        // Say why for the executable.
        DebugInfo::load(&files[0])?;
    }
    show(&infos, pattern, opts.json, out)
}

/// The types of `infos` (each with the file it came from, when several
/// are searched) that match `pattern`; a type already shown with the same
/// layout from an earlier file is not repeated.
fn show(
    infos: &[(Option<String>, DebugInfo)],
    pattern: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<usize, Error> {
    let mut all = Vec::new();
    let mut texts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (file, info) in infos {
        for id in matching(info, pattern) {
            let text = layout(info, id);
            if !seen.insert(text.clone()) {
                continue;
            }
            if json {
                let mut d = describe(info, id);
                if let (Some(f), Some(m)) = (file, d.as_object_mut()) {
                    m.insert("object".into(), json!(f));
                }
                all.push(d);
            } else {
                texts.push(match file {
                    Some(f) => format!("/* in {f} */\n{text}"),
                    None => text,
                });
            }
        }
    }
    if all.is_empty() && texts.is_empty() {
        let Some((_, info)) = infos.first() else {
            return Ok(0);
        };
        let mut close: Vec<String> = infos
            .iter()
            .flat_map(|(_, i)| i.close_type_names(pattern))
            .collect();
        close.sort();
        close.dedup();
        close.truncate(5);
        return Err(DwarfError::NoMatchingType {
            pattern: pattern.to_string(),
            path: match infos {
                [_] => info.binary().to_path_buf(),
                _ => PathBuf::from(
                    infos
                        .iter()
                        .filter_map(|(f, _)| f.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            },
            close,
        }
        .into());
    }
    if json {
        let n = all.len();
        writeln!(out, "{}", Json::Array(all))?;
        return Ok(n);
    }
    for (i, t) in texts.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        out.write_all(t.as_bytes())?;
    }
    Ok(texts.len())
}

/// The types of `info` whose names match `pattern`, with the named struct
/// or enum behind each matching typedef, as pahole does.
fn matching(info: &DebugInfo, pattern: &str) -> Vec<TypeId> {
    let mut ids: Vec<TypeId> = Vec::new();
    let mut shown = std::collections::HashSet::new();
    for id in info
        .type_names(pattern)
        .iter()
        .filter_map(|n| info.type_by_name(n))
    {
        if shown.insert(id) {
            ids.push(id);
        }
        if let Type::Typedef { ty: Some(t), .. } = info.ty(id) {
            let target = info.canonical(*t);
            let named = matches!(
                info.ty(target),
                Type::Struct { name: Some(_), .. } | Type::Enum { name: Some(_), .. }
            );
            if named && shown.insert(target) {
                ids.push(target);
            }
        }
    }
    ids
}

/// Column where member comments start.
const COMMENT_COL: usize = 48;

fn pad(s: &str, col: usize) -> String {
    let n = s.chars().count();
    if n >= col {
        format!("{s} ")
    } else {
        format!("{s}{}", " ".repeat(col - n))
    }
}

/// The C text of one type: a struct or union with its layout, an enum with
/// its values, or a typedef (with the definition of an anonymous target).
pub fn layout(info: &DebugInfo, id: TypeId) -> String {
    let mut out = String::new();
    match info.ty(id) {
        Type::Struct { .. } => {
            out.push_str(&struct_text(info, id, 0, 0, ""));
            out.push('\n');
        }
        Type::Enum { .. } => {
            out.push_str(&enum_text(info, id, ""));
            out.push('\n');
        }
        Type::Typedef { name, ty } => {
            let size = info
                .size_of(id)
                .map_or(String::new(), |s| format!("/* size: {s} */"));
            let anon = ty.filter(|t| {
                matches!(
                    info.ty(*t),
                    Type::Struct { name: None, .. } | Type::Enum { name: None, .. }
                )
            });
            match (anon, ty) {
                (Some(t), _) if matches!(info.ty(t), Type::Struct { .. }) => {
                    out.push_str("typedef ");
                    out.push_str(&struct_text(info, t, 0, 0, name));
                    out.push('\n');
                }
                (Some(t), _) => {
                    out.push_str("typedef ");
                    out.push_str(&enum_text(info, t, name));
                    out.push('\n');
                }
                (None, Some(t)) => {
                    let line = format!("typedef {};", info.declaration(*t, name));
                    out.push_str(&format!("{}{size}\n", pad(&line, COMMENT_COL)));
                }
                (None, None) => out.push_str(&format!("typedef void {name};\n")),
            }
        }
        _ => out.push_str(&format!("{};\n", info.type_name(id))),
    }
    out
}

fn enum_text(info: &DebugInfo, id: TypeId, declarator: &str) -> String {
    let Type::Enum {
        name,
        size,
        variants,
        ..
    } = info.ty(id)
    else {
        return String::new();
    };
    let mut s = match name {
        Some(n) => format!("enum {n} {{\n"),
        None => "enum {\n".into(),
    };
    let width = variants.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (i, (n, v)) in variants.iter().enumerate() {
        let comma = if i + 1 < variants.len() { "," } else { "" };
        s.push_str(&format!("    {n:<width$} = {v}{comma}\n"));
    }
    let close = if declarator.is_empty() {
        "};".to_string()
    } else {
        format!("}} {declarator};")
    };
    s.push_str(&format!("{}/* size: {size} */", pad(&close, COMMENT_COL)));
    s
}

/// Where members end, for finding holes: in bits from the struct's start.
fn member_bits(info: &DebugInfo, m: &Member) -> (u64, u64) {
    let start = m.offset * 8 + u64::from(m.bit_offset.unwrap_or(0));
    let len = match m.bit_size {
        Some(b) => u64::from(b),
        None => info.size_of(m.ty).unwrap_or(0) * 8,
    };
    (start, start + len)
}

/// Hole comments for `bits` missing bits that start at bit `from`.
fn hole_lines(from: u64, bits: u64, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut bits = bits;
    let to_byte = (8 - from % 8) % 8;
    if to_byte > 0 && bits > 0 {
        let b = to_byte.min(bits);
        out.push(format!("/* XXX {} {what} */", counted(b, "bit")));
        bits -= b;
    }
    if bits >= 8 {
        out.push(format!("/* XXX {} {what} */", counted(bits / 8, "byte")));
    }
    if !bits.is_multiple_of(8) {
        out.push(format!("/* XXX {} {what} */", counted(bits % 8, "bit")));
    }
    out
}

/// A struct or union: `base` is its offset inside the outermost struct
/// (offsets are printed from there), `declarator` the member or typedef
/// name after the closing brace.
fn struct_text(info: &DebugInfo, id: TypeId, indent: usize, base: u64, declarator: &str) -> String {
    let Type::Struct {
        kind,
        name,
        size,
        members,
    } = info.ty(id)
    else {
        return String::new();
    };
    let ind = "    ".repeat(indent + 1);
    let kw = match kind {
        StructKind::Struct => "struct",
        StructKind::Union => "union",
    };
    let mut s = match name {
        Some(n) => format!("{kw} {n} {{\n"),
        None => format!("{kw} {{\n"),
    };
    if info.is_incomplete(id) {
        s.push_str(&format!(
            "{ind}/* incomplete: no compilation unit defines it */\n"
        ));
    }
    let union = *kind == StructKind::Union;
    let mut end = 0u64;
    let (mut holes, mut hole_bytes, mut sum_bits) = (0u64, 0u64, 0u64);
    let (mut bit_holes, mut hole_bits) = (0u64, 0u64);
    for m in members {
        let (start, stop) = member_bits(info, m);
        if !union && start > end {
            for h in hole_lines(end, start - end, "hole") {
                s.push_str(&format!("\n{ind}{h}\n\n"));
            }
            let bits = start - end;
            if bits >= 8 {
                holes += 1;
                hole_bytes += bits / 8;
            }
            if !bits.is_multiple_of(8) {
                bit_holes += 1;
                hole_bits += bits % 8;
            }
        }
        let msize = info.size_of(m.ty).unwrap_or(0);
        let off = base + m.offset;
        let pos = match (m.bit_offset, m.bit_size) {
            (Some(b), Some(_)) => format!("{off:>5}:{b:<2}"),
            _ => format!("{off:>5}   "),
        };
        let comment = format!("/* {pos}{msize:>5} */");
        let sid = info.strip(m.ty);
        let anon = matches!(info.ty(m.ty), Type::Struct { name: None, .. });
        if anon && sid == m.ty {
            let inner = struct_text(info, m.ty, indent + 1, off, m.name.as_deref().unwrap_or(""));
            let (body, last) = inner.rsplit_once('\n').unwrap_or(("", &inner));
            s.push_str(&format!(
                "{ind}{body}\n{ind}{}{comment}\n",
                pad(last, COMMENT_COL.saturating_sub(ind.len()))
            ));
        } else {
            let mut decl = info.declaration(m.ty, m.name.as_deref().unwrap_or(""));
            if let Some(bits) = m.bit_size {
                decl.push_str(&format!(":{bits}"));
            }
            s.push_str(&format!(
                "{ind}{}{comment}\n",
                pad(&format!("{decl};"), COMMENT_COL.saturating_sub(ind.len()))
            ));
        }
        sum_bits += stop - start;
        end = if union { end.max(stop) } else { stop.max(end) };
    }
    let total = size * 8;
    let padding = total.saturating_sub(end);
    if indent == 0 {
        s.push_str(&format!(
            "\n{ind}/* size: {size}, cachelines: {}, members: {} */\n",
            size.div_ceil(64),
            members.len()
        ));
        if holes > 0 {
            s.push_str(&format!(
                "{ind}/* sum members: {}, holes: {holes}, sum holes: {hole_bytes} */\n",
                sum_bits / 8
            ));
        }
        if bit_holes > 0 {
            s.push_str(&format!(
                "{ind}/* bit holes: {bit_holes}, sum bit holes: {hole_bits} bits */\n"
            ));
        }
        if padding > 0 {
            for h in hole_lines(end, padding, "padding") {
                s.push_str(&format!("{ind}{h}\n"));
            }
        }
    } else if padding > 0 && !union {
        for h in hole_lines(end, padding, "padding") {
            s.push_str(&format!("{ind}{h}\n"));
        }
    }
    // The caller indents the closing line of a nested struct.
    if declarator.is_empty() {
        s.push_str("};");
    } else {
        s.push_str(&format!("}} {declarator};"));
    }
    s
}

/// The JSON description of one type.
pub fn describe(info: &DebugInfo, id: TypeId) -> Json {
    match info.ty(id) {
        Type::Struct { .. } => struct_json(info, id, 0),
        Type::Enum {
            name,
            size,
            signed,
            variants,
        } => json!({
            "kind": "enum",
            "name": name,
            "size": size,
            "signed": signed,
            "values": variants.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        }),
        Type::Typedef { name, ty } => {
            let mut o = json!({
                "kind": "typedef",
                "name": name,
                "type": ty.map_or("void".to_string(), |t| info.type_name(t)),
                "size": info.size_of(id),
            });
            if let Some(t) = ty
                && matches!(
                    info.ty(*t),
                    Type::Struct { name: None, .. } | Type::Enum { name: None, .. }
                )
            {
                o["definition"] = describe(info, *t);
            }
            o
        }
        _ => json!({"kind": "other", "name": info.type_name(id), "size": info.size_of(id)}),
    }
}

fn struct_json(info: &DebugInfo, id: TypeId, base: u64) -> Json {
    let Type::Struct {
        kind,
        name,
        size,
        members,
    } = info.ty(id)
    else {
        return Json::Null;
    };
    let union = *kind == StructKind::Union;
    let mut end = 0u64;
    let mut holes = Vec::new();
    let mut out = Vec::new();
    let mut prev: Option<&str> = None;
    for m in members {
        let (start, stop) = member_bits(info, m);
        if !union && start > end {
            holes.push(json!({"after": prev, "offset": base + end / 8, "bits": start - end}));
        }
        let mut o = json!({
            "name": m.name,
            "type": info.type_name(m.ty),
            "offset": base + m.offset,
            "size": info.size_of(m.ty),
        });
        if let (Some(b), Some(n)) = (m.bit_offset, m.bit_size) {
            o["bit_offset"] = json!(b);
            o["bit_size"] = json!(n);
        }
        if matches!(info.ty(m.ty), Type::Struct { name: None, .. }) {
            o["members"] = struct_json(info, m.ty, base + m.offset)["members"].clone();
        }
        out.push(o);
        prev = m.name.as_deref();
        end = end.max(stop);
    }
    json!({
        "kind": if union { "union" } else { "struct" },
        "name": name,
        "size": size,
        "complete": !info.is_incomplete(id),
        "members": out,
        "holes": holes,
        "padding_bits": (size * 8).saturating_sub(end),
    })
}
