//! `btree_node(ADDR, TREE)`: the BE b-tree node whose page holds ADDR, read
//! by its DWARF types (`struct bnode_head`, the segment's page cache and
//! superblock): header, then each record's key (hex, its kind from the
//! first byte, the text of printable keys) and value (child page of an
//! internal node, or the value's size and, for free-form records, text).

use serde_json::{Map, Value as Json, json};

use super::{
    ViewError,
    eval::{Eval, Out, Ty, Val, ty_of},
};
use crate::probe::WalkArg;

/// Node page size when the superblock does not say.
const NODE_SIZE: u64 = 8192;

/// Reads member `path` of the object `v` as a number.
fn num(ev: &Eval, v: &Val, path: &[&str]) -> Result<u64, ViewError> {
    let mut cur = v.clone();
    for m in path {
        cur = ev.member(cur, m, false)?;
    }
    ev.load(&cur)
}

fn obj(ev: &Eval, v: Val) -> Result<Val, ViewError> {
    if ev.pointee(ty_of(&v))?.is_some() {
        ev.deref(&v)
    } else {
        Ok(v)
    }
}

/// The walker.
pub fn walker(ev: &Eval, args: &[WalkArg]) -> Result<Out, ViewError> {
    let usage = "btree_node(ADDR, TREE)";
    let (Some(WalkArg::Expr(a)), Some(WalkArg::Expr(t)), None) =
        (args.first(), args.get(1), args.get(2))
    else {
        return Err(ViewError::Expr(format!(
            "{usage} takes an address and a struct m0_btree"
        )));
    };
    let addr = ev.scalar(a)?;
    let tree = obj(ev, ev.one(t)?)?;
    let seg = obj(ev, ev.member(tree, "t_seg", false)?)?;
    node(ev, &seg, addr).map(|j| Out::One(Val::Json(j)))
}

fn node(ev: &Eval, seg: &Val, addr: u64) -> Result<Json, ViewError> {
    let pages = ev.member(seg.clone(), "seg_pages", false)?;
    let cap = num(ev, seg, &["seg_pages_cap"])?;
    let page_at = |i: u64| -> Result<u64, ViewError> {
        let p = ev.deref(&pages)?;
        let Val::Loc { addr, .. } = p else {
            return Err(ViewError::Expr("seg_pages is not an array".into()));
        };
        ev.space.word(addr + i * 8, 8)
    };
    let sb_addr = page_at(0)?;
    let (img, sb_ty) = ev.space.type_named("struct be_sb", image_of(seg))?;
    let sb = Val::Loc {
        ty: Ty::D {
            img,
            id: sb_ty,
            ptr: 0,
        },
        addr: sb_addr,
        bits: None,
    };
    let npages = num(ev, &sb, &["sb_npages"])?;
    let root = num(ev, &sb, &["sb_root"])?;
    let size = match num(ev, &sb, &["sb_node_size"])? {
        0 => NODE_SIZE,
        s => s,
    };
    let mut found = None;
    for pg in 1..npages.min(cap) {
        let base = page_at(pg)?;
        if base != 0 && addr >= base && addr - base < size {
            found = Some((pg, base));
            break;
        }
    }
    let Some((pg, base)) = found else {
        return Err(ViewError::Expr(format!(
            "{addr:#x} is not inside a node page of this tree ({} pages)",
            npages.saturating_sub(1)
        )));
    };
    let (img, h_ty) = ev.space.type_named("struct bnode_head", Some(img))?;
    let info = ev.info(img);
    let h = Val::Loc {
        ty: Ty::D {
            img,
            id: h_ty,
            ptr: 0,
        },
        addr: base,
        bits: None,
    };
    let raw = ev.space.bytes(base, size as usize)?;
    let level = num(ev, &h, &["bh_level"])?;
    let used = num(ev, &h, &["bh_used"])?;
    let heap = num(ev, &h, &["bh_heap"])?;
    let slots = info.member(h_ty, "bh_slot")?.offset;
    let slots_end = slots + used * 2;
    if num(ev, &h, &["bh_magic"])? != 0x444f_4e42
        || slots_end > size
        || heap < slots_end
        || heap > size
    {
        return Err(ViewError::Expr(format!(
            "the page at {base:#x} does not hold a well-formed node"
        )));
    }
    let child = |p: u64| -> Json {
        let address = (p > 0 && p < npages)
            .then(|| page_at(p).ok())
            .flatten()
            .map_or(Json::Null, |a| json!(format!("{a:#x}")));
        json!({"page": p, "address": address})
    };
    let mut o = Map::new();
    o.insert("address".into(), json!(format!("{base:#x}")));
    o.insert("offset".into(), json!(addr - base));
    o.insert("page".into(), json!(pg));
    o.insert("root".into(), json!(pg == root));
    o.insert("level".into(), json!(level));
    o.insert("leaf".into(), json!(level == 0));
    o.insert("records".into(), json!(used));
    o.insert("lsn".into(), json!(num(ev, &h, &["bh_lsn"])?));
    o.insert("free_bytes".into(), json!(heap - slots_end));
    if level != 0 {
        o.insert("left".into(), child(num(ev, &h, &["bh_left"])?));
    }
    let u16_at = |off: usize| u16::from_le_bytes([raw[off], raw[off + 1]]) as usize;
    let mut recs = Vec::new();
    for i in 0..used as usize {
        let off = u16_at(slots as usize + i * 2);
        if off + 4 > raw.len() {
            return Err(ViewError::Expr(format!(
                "record {i} of node {base:#x} is outside the page"
            )));
        }
        let (kl, vl) = (u16_at(off), u16_at(off + 2));
        if off + 4 + kl + vl > raw.len() {
            return Err(ViewError::Expr(format!(
                "record {i} of node {base:#x} is outside the page"
            )));
        }
        let k = &raw[off + 4..off + 4 + kl];
        let v = &raw[off + 4 + kl..off + 4 + kl + vl];
        let kind = match k.first() {
            None => "empty",
            Some(1) => "object",
            Some(2) => "cob-ns",
            Some(3) => "cob-oi",
            Some(4) => "cob-emap",
            Some(&b) if b >= 0x20 => "meta",
            Some(_) => "unknown",
        };
        let mut r = Map::new();
        r.insert("kind".into(), json!(kind));
        r.insert("key".into(), json!(hex(k)));
        if kind == "meta" || kind == "object" {
            let text = if kind == "object" { &k[1..] } else { k };
            r.insert("key_text".into(), json!(String::from_utf8_lossy(text)));
        }
        if level != 0 {
            let c = v
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            r.insert("child".into(), child(c as u64));
        } else {
            r.insert("value_bytes".into(), json!(vl));
            if kind == "meta" {
                r.insert("value".into(), json!(String::from_utf8_lossy(v)));
            }
        }
        recs.push(Json::Object(r));
    }
    o.insert("recs".into(), Json::Array(recs));
    Ok(Json::Object(o))
}

fn image_of(v: &Val) -> Option<usize> {
    match ty_of(v) {
        Ty::D { img, .. } => Some(img),
        Ty::Int { .. } => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
