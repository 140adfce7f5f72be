//! The walkers: `list(HEAD, TYPE, MEMBER[, DESCR])` over Motr's
//! `m0_tl`/`m0_list` and Linux's `list_head` (container_of each link),
//! `array(PTR, N)` and `hash(BUCKETS, N, TYPE, MEMBER[, DESCR])`. Each walk
//! is bounded and cycle-safe; a bad link ends the walk with a marker.

use std::collections::HashSet;

use super::{
    ViewError,
    eval::{Eval, Item, Marker, Out, Ty, Val, add_ptr, ty_of},
};
use crate::{
    dwarf::{DebugInfo, Type, TypeId},
    probe::{Expr, ExprKind, WalkArg},
};

/// Runs walker `name`.
pub fn run(ev: &Eval, name: &str, args: &[WalkArg]) -> Result<Out, ViewError> {
    match name {
        "list" => list_walk(ev, args),
        "array" => array(ev, args),
        "hash" => hash(ev, args),
        "btree_node" => super::btree::walker(ev, args),
        _ => Err(ViewError::Expr(format!("unknown walker {name}()"))),
    }
}

fn expr<'a>(args: &'a [WalkArg], i: usize, what: &str, usage: &str) -> Result<&'a Expr, ViewError> {
    match args.get(i) {
        Some(WalkArg::Expr(e)) => Ok(e),
        Some(WalkArg::Type(t)) => Err(ViewError::Expr(format!(
            "{usage}: argument {} is a type ({}), expected {what}",
            i + 1,
            t.name
        ))),
        None => Err(ViewError::Expr(format!("{usage}: missing {what}"))),
    }
}

/// A member path written as an expression (`fo_linkage`, `a.b`).
fn member_path(e: &Expr) -> Option<Vec<String>> {
    match &e.kind {
        ExprKind::Ident(n) => Some(vec![n.clone()]),
        ExprKind::Member(inner, n, false) => {
            let mut p = member_path(inner)?;
            p.push(n.clone());
            Some(p)
        }
        _ => None,
    }
}

/// How one kind of intrusive link is laid out.
#[derive(Clone, Copy, Debug)]
struct Link {
    /// Offset of the next pointer in the link.
    next: u64,
    /// Offset of the previous pointer.
    prev: u64,
}

/// The link layout of struct `id` (after descending through a lone
/// `t_link`): `m0_list_link` (`ll_next`/`ll_prev`) or `list_head`
/// (`next`/`prev`). Returns the offset of the link inside `id` too.
fn link_of(info: &DebugInfo, id: TypeId) -> Option<(u64, Link)> {
    let mut base = 0;
    let mut id = id;
    if let Ok(r) = info.member(id, "t_link") {
        base = r.offset;
        id = r.ty;
    }
    let (n, p) = match (info.member(id, "ll_next"), info.member(id, "ll_prev")) {
        (Ok(n), Ok(p)) => (n, p),
        _ => (info.member(id, "next").ok()?, info.member(id, "prev").ok()?),
    };
    let ptr = |t| matches!(info.ty(info.strip(t)), Type::Pointer { .. });
    (ptr(n.ty) && ptr(p.ty)).then_some((
        base,
        Link {
            next: n.offset,
            prev: p.offset,
        },
    ))
}

/// The first-link and sentinel addresses of a list head at `addr` of type
/// `id`: `m0_tl` (its `t_head`), `m0_list` (`l_head`, circular through
/// itself) or a `list_head`.
fn head_of(info: &DebugInfo, id: TypeId, addr: u64) -> Option<(u64, u64)> {
    if let Ok(r) = info.member(id, "t_head") {
        let (first, _) = head_of(info, r.ty, addr + r.offset)?;
        return Some((first, addr + r.offset));
    }
    if let Ok(r) = info.member(id, "l_head") {
        return Some((addr + r.offset, addr));
    }
    let (off, l) = link_of(info, id)?;
    Some((addr + off + l.next, addr + off))
}

/// A tlist descriptor's checks (`struct m0_tl_descr`).
struct Descr {
    head_magic: u64,
    link_magic: u64,
    link_magic_offset: u64,
    link_offset: u64,
}

fn descr(ev: &Eval, e: &Expr) -> Result<Descr, ViewError> {
    let mut v = ev.one(e)?;
    if ev.pointee(ty_of(&v))?.is_some() {
        v = ev.deref(&v)?;
    }
    let get = |m: &str| -> Result<u64, ViewError> {
        let f = ev.member(v.clone(), m, false).map_err(|_| {
            ViewError::Expr(format!(
                "list(): the 4th argument is a {}, not a struct m0_tl_descr (no {m})",
                ev.type_name(ty_of(&v))
            ))
        })?;
        ev.load(&f)
    };
    Ok(Descr {
        head_magic: get("td_head_magic")?,
        link_magic: get("td_link_magic")?,
        link_magic_offset: get("td_link_magic_offset")?,
        link_offset: get("td_link_offset")?,
    })
}

/// The parts of one list walk, resolved.
struct ListSpec {
    elem: Ty,
    /// Offset of the link inside the element.
    link_off: u64,
    link: Link,
    descr: Option<Descr>,
}

fn list_spec(
    ev: &Eval,
    args: &[WalkArg],
    usage: &str,
    head_img: Option<usize>,
) -> Result<ListSpec, ViewError> {
    let Some(WalkArg::Type(tn)) = args.get(1) else {
        return Err(ViewError::Expr(format!(
            "{usage}: the 2nd argument must be the element type, e.g. struct m0_fom"
        )));
    };
    let elem = ev.type_of(tn, head_img)?;
    let Ty::D { img, id, ptr: 0 } = elem else {
        return Err(ViewError::Expr(format!(
            "{usage}: the element type must be a struct, not {}",
            ev.type_name(elem)
        )));
    };
    let m = expr(args, 2, "the link member", usage)?;
    let path = member_path(m).ok_or_else(|| {
        ViewError::Expr(format!(
            "{usage}: the 3rd argument must be a member name of {}",
            tn.name
        ))
    })?;
    let info = ev.info(img);
    let mut off = 0;
    let mut ty = id;
    for name in &path {
        let r = info.member(ty, name)?;
        off += r.offset;
        ty = r.ty;
    }
    let Some((inner, link)) = link_of(info, ty) else {
        return Err(ViewError::NotAList(format!(
            "list(): member {} of {} is of type {}, not a list link (struct m0_tlink, m0_list_link or list_head)",
            path.join("."),
            tn.name,
            info.type_name(ty)
        )));
    };
    let descr = match args.get(3) {
        Some(WalkArg::Expr(e)) => Some(descr(ev, e)?),
        Some(WalkArg::Type(_)) => {
            return Err(ViewError::Expr(format!(
                "{usage}: the 4th argument is a list descriptor, not a type"
            )));
        }
        None => None,
    };
    if let Some(d) = &descr
        && d.link_offset != off
    {
        return Err(ViewError::Expr(format!(
            "list(): the descriptor links at offset {} but {}.{} is at {off}",
            d.link_offset,
            tn.name,
            path.join(".")
        )));
    }
    Ok(ListSpec {
        elem,
        link_off: off + inner,
        link,
        descr,
    })
}

/// The head's address and type: `HEAD` itself, or what it points at.
fn head_place(ev: &Eval, v: Val) -> Result<(u64, usize, TypeId), ViewError> {
    let v = if matches!(ev.pointee(ty_of(&v))?, Some(Ty::D { .. })) {
        ev.deref(&v)?
    } else {
        v
    };
    match v {
        Val::Loc {
            ty: Ty::D { img, id, ptr: 0 },
            addr,
            ..
        } => Ok((addr, img, id)),
        other => Err(ViewError::NotAList(format!(
            "list(): the head is a {}, not a list head (struct m0_tl, m0_list or list_head)",
            ev.type_name(ty_of(&other))
        ))),
    }
}

fn list_walk(ev: &Eval, args: &[WalkArg]) -> Result<Out, ViewError> {
    let usage = "list(HEAD, TYPE, MEMBER[, DESCR])";
    if !(3..=4).contains(&args.len()) {
        return Err(ViewError::Expr(format!("{usage} takes 3 or 4 arguments")));
    }
    let head = expr(args, 0, "the list head", usage)?;
    let heads = match ev.eval(head)? {
        Out::One(v) => vec![Item::Val(v)],
        Out::Many(items) => items,
    };
    let mut out = Vec::new();
    let mut spec = None;
    for h in heads {
        let v = match h {
            Item::Val(v) => v,
            m @ Item::Mark(_) => {
                out.push(m);
                continue;
            }
        };
        let (addr, img, id) = head_place(ev, v)?;
        if spec.is_none() {
            spec = Some(list_spec(ev, args, usage, Some(img))?);
        }
        let Some(s) = &spec else { continue };
        one_list(ev, s, addr, img, id, &mut out)?;
    }
    Ok(Out::Many(out))
}

/// Walks one list whose head is at `addr` (type `id` of image `img`).
fn one_list(
    ev: &Eval,
    s: &ListSpec,
    addr: u64,
    img: usize,
    id: TypeId,
    out: &mut Vec<Item>,
) -> Result<(), ViewError> {
    let info = ev.info(img);
    let Some((first_at, sentinel)) = head_of(info, id, addr) else {
        return Err(ViewError::NotAList(format!(
            "list(): the head is a {}, not a list head (struct m0_tl, m0_list or list_head)",
            info.type_name(id)
        )));
    };
    let mark = |index: usize, at: u64, reason: String, torn: bool| {
        Item::Mark(Marker {
            walk: "list".into(),
            index,
            addr: at,
            reason,
            torn,
        })
    };
    // The head first: unmapped, or a bad magic, ends the walk here.
    let (Ok(mut cur), magic) = (
        ev.space.word(first_at, 8),
        match (&s.descr, info.member(id, "t_magic")) {
            (Some(d), Ok(r)) => ev
                .space
                .word(addr + r.offset, 8)
                .ok()
                .map(|m| (m, d.head_magic)),
            _ => None,
        },
    ) else {
        out.push(mark(
            0,
            addr,
            format!("list head {addr:#x} is not mapped"),
            false,
        ));
        return Ok(());
    };
    if let Some((m, want)) = magic
        && m != want
    {
        let why = format!("bad head magic {m:#x} at {addr:#x} (expected {want:#x})");
        out.push(mark(0, addr, why, true));
        return Ok(());
    }
    let mut prev = sentinel;
    let mut seen = HashSet::new();
    let mut n = 0;
    while cur != sentinel {
        if n >= ev.max {
            out.push(mark(
                n,
                cur,
                format!("stopped after {n} elements (--max)"),
                false,
            ));
            break;
        }
        if cur == 0 {
            out.push(mark(
                n,
                prev,
                format!("null link after {prev:#x} (the list is not circular)"),
                true,
            ));
            break;
        }
        if !seen.insert(cur) {
            out.push(mark(
                n,
                cur,
                format!("cycle: link {cur:#x} seen again after {n} elements"),
                true,
            ));
            break;
        }
        let (next, back) = match (
            ev.space.word(cur + s.link.next, 8),
            ev.space.word(cur + s.link.prev, 8),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                out.push(mark(
                    n,
                    cur,
                    format!("bad pointer {cur:#x}: not mapped (after {prev:#x})"),
                    false,
                ));
                break;
            }
        };
        if back != prev {
            out.push(mark(
                n,
                cur,
                format!("inconsistent link {cur:#x}: its prev is {back:#x}, not {prev:#x}"),
                true,
            ));
            break;
        }
        let elem = cur.wrapping_sub(s.link_off);
        if let Some(d) = &s.descr {
            match ev.space.word(elem + d.link_magic_offset, 8) {
                Ok(m) if m == d.link_magic => {}
                Ok(m) => {
                    out.push(mark(
                        n,
                        elem,
                        format!(
                            "bad magic {m:#x} in element {elem:#x} (expected {:#x})",
                            d.link_magic
                        ),
                        true,
                    ));
                    break;
                }
                Err(_) => {
                    out.push(mark(
                        n,
                        elem,
                        format!("element {elem:#x} is not mapped"),
                        false,
                    ));
                    break;
                }
            }
        }
        out.push(Item::Val(Val::Num {
            ty: add_ptr(s.elem),
            v: elem,
        }));
        n += 1;
        prev = cur;
        cur = next;
    }
    Ok(())
}

/// A marker that is no sign of a concurrent change.
fn stop(walk: &str, index: usize, addr: u64, reason: String) -> Item {
    Item::Mark(Marker {
        walk: walk.into(),
        index,
        addr,
        reason,
        torn: false,
    })
}

fn array(ev: &Eval, args: &[WalkArg]) -> Result<Out, ViewError> {
    let usage = "array(PTR, N)";
    if args.len() != 2 {
        return Err(ViewError::Expr(format!("{usage} takes 2 arguments")));
    }
    let base = ev.one(expr(args, 0, "the array or pointer", usage)?)?;
    let n = ev.scalar(expr(args, 1, "the count", usage)?)?;
    let first = ev.deref(&base)?;
    let Val::Loc { ty, addr, .. } = first else {
        return Err(ViewError::Expr(format!("{usage}: not an array")));
    };
    let size = ev.size(ty)?;
    let mut out = Vec::new();
    for i in 0..n {
        if i as usize >= ev.max {
            out.push(stop(
                "array",
                i as usize,
                addr + i * size,
                format!("stopped after {i} of {n} elements (--max)"),
            ));
            break;
        }
        let at = addr.wrapping_add(i.wrapping_mul(size));
        if !ev.space.readable(at) {
            out.push(stop(
                "array",
                i as usize,
                at,
                format!("element {i} at {at:#x} is not mapped"),
            ));
            break;
        }
        out.push(Item::Val(Val::Loc {
            ty,
            addr: at,
            bits: None,
        }));
    }
    Ok(Out::Many(out))
}

/// `hash(BUCKETS, N, TYPE, MEMBER[, DESCR])`: each bucket is a list head,
/// or a struct whose first list-head member is one (Motr's `m0_hbucket`).
fn hash(ev: &Eval, args: &[WalkArg]) -> Result<Out, ViewError> {
    let usage = "hash(BUCKETS, N, TYPE, MEMBER[, DESCR])";
    if !(4..=5).contains(&args.len()) {
        return Err(ViewError::Expr(format!("{usage} takes 4 or 5 arguments")));
    }
    let base = ev.one(expr(args, 0, "the bucket array", usage)?)?;
    let n = ev.scalar(expr(args, 1, "the bucket count", usage)?)?;
    let Val::Loc { ty, addr, .. } = ev.deref(&base)? else {
        return Err(ViewError::Expr(format!("{usage}: not an array")));
    };
    let Ty::D { img, id, ptr: 0 } = ty else {
        return Err(ViewError::NotAList(format!(
            "{usage}: the buckets are not list heads"
        )));
    };
    let info = ev.info(img);
    let (head_off, head_id) = if head_of(info, id, 0).is_some() {
        (0, id)
    } else {
        bucket_head(info, id).ok_or_else(|| {
            ViewError::NotAList(format!(
                "{usage}: a bucket ({}) is not and has no list head",
                info.type_name(id)
            ))
        })?
    };
    let list_args: Vec<WalkArg> = std::iter::once(args[0].clone())
        .chain(args[2..].iter().cloned())
        .collect();
    let spec = list_spec(ev, &list_args, usage, Some(img))?;
    let size = ev.size(ty)?;
    let mut out = Vec::new();
    for i in 0..n.min(1 << 24) {
        let at = addr.wrapping_add(i * size);
        if !ev.space.readable(at) {
            out.push(stop(
                "hash",
                out.len(),
                at,
                format!("bucket {i} at {at:#x} is not mapped"),
            ));
            break;
        }
        if out.len() >= ev.max {
            out.push(stop(
                "hash",
                out.len(),
                at,
                format!("stopped at bucket {i} of {n} (--max)"),
            ));
            break;
        }
        one_list(ev, &spec, at + head_off, img, head_id, &mut out)?;
    }
    Ok(Out::Many(out))
}

/// The first member of struct `id` that is a list head: (offset, type).
fn bucket_head(info: &DebugInfo, id: TypeId) -> Option<(u64, TypeId)> {
    let Type::Struct { members, .. } = info.ty(info.strip(id)) else {
        return None;
    };
    members.iter().find_map(|m| {
        let t = info.strip(m.ty);
        (matches!(info.ty(t), Type::Struct { .. }) && head_of(info, t, 0).is_some())
            .then_some((m.offset, t))
    })
}
