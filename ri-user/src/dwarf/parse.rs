//! Walking the DWARF with gimli into [`DebugInfo`]'s arena: one pass over
//! every compilation unit, then fix-ups that need the whole picture
//! (declarations resolved to definitions by name, enum signedness, DWARF 4
//! bit offsets whose storage size comes from the member's type).

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    path::Path,
};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, constants as dw};
use object::{Object, ObjectSection};

use super::{
    DebugInfo, DwarfError, Encoding, FunctionInfo, Member, Param, Qualifier, Signature, StructKind,
    Type, TypeId,
};

type R<'d> = EndianSlice<'d, RunTimeEndian>;
type Unit<'d> = gimli::Unit<R<'d>>;
type Node<'a, 'b, 'c, 'd> = gimli::EntriesTreeNode<'a, 'b, 'c, R<'d>>;

/// Reads every type, function and variable of the DWARF in `data`.
pub(super) fn parse(path: &Path, data: &[u8]) -> Result<DebugInfo, DwarfError> {
    let malformed = |reason: String| DwarfError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let file = object::File::parse(data).map_err(|e| malformed(e.to_string()))?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'_, [u8]>, DwarfError> {
        match file.section_by_name(id.name()) {
            Some(s) => s
                .uncompressed_data()
                .map_err(|e| malformed(format!("{}: {e}", id.name()))),
            None => Ok(Cow::Borrowed(&[][..])),
        }
    })?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let mut b = Builder::new(&dwarf);
    let mut units = dwarf.units();
    let mut first_error = None;
    let mut parsed = 0usize;
    loop {
        let header = match units.next() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                first_error.get_or_insert(e);
                break;
            }
        };
        // One unit ri cannot read does not hide the others.
        let res = dwarf.unit(header).and_then(|unit| {
            b.pointer_size = u64::from(unit.encoding().address_size);
            let mut tree = unit.entries_tree(None)?;
            let root = tree.root()?;
            b.walk(&unit, root, Scope::Unit)
        });
        match res {
            Ok(()) => parsed += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if parsed == 0
        && let Some(e) = first_error
    {
        return Err(malformed(e.to_string()));
    }
    Ok(b.finish(path))
}

/// A multiplicative hash for DIE offsets (SipHash is a tenth of the load
/// time otherwise).
#[derive(Default)]
struct OffsetHasher(u64);

impl Hasher for OffsetHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type OffsetMap<V> = HashMap<usize, V, BuildHasherDefault<OffsetHasher>>;

/// Where a DIE sits, for ranking variables of the same name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Unit,
    Function,
}

/// The attributes ri reads, gathered in one pass over a DIE.
#[derive(Default)]
struct Attrs<'d> {
    /// Read as text only when needed (most DIEs' names are not).
    name: Option<AttributeValue<R<'d>>>,
    ty: Option<usize>,
    byte_size: Option<u64>,
    encoding: Option<gimli::DwAte>,
    declaration: bool,
    external: bool,
    member_location: Option<AttributeValue<R<'d>>>,
    data_bit_offset: Option<u64>,
    bit_offset: Option<i64>,
    bit_size: Option<u64>,
    upper_bound: Option<AttributeValue<R<'d>>>,
    lower_bound: Option<i64>,
    count: Option<AttributeValue<R<'d>>>,
    const_value: Option<AttributeValue<R<'d>>>,
    location: Option<AttributeValue<R<'d>>>,
    specification: Option<usize>,
}

/// A DWARF 4 bitfield whose storage unit size is its type's size.
struct BitFixup {
    id: TypeId,
    index: usize,
    location: u64,
    bit_offset: i64,
    bit_size: u64,
}

/// An enum whose signedness is decided once its underlying type is known.
struct EnumFixup {
    id: TypeId,
    underlying: Option<TypeId>,
    /// Raw values: (value, width in bytes of the form, was signed form).
    raw: Vec<(u64, u8, bool)>,
}

/// A variable definition that names its declaration (`DW_AT_specification`).
struct VarFixup {
    decl: usize,
    addr: u64,
    rank: u8,
    ty: Option<TypeId>,
}

struct Builder<'a, 'd> {
    dwarf: &'a gimli::Dwarf<R<'d>>,
    types: Vec<Type>,
    by_offset: OffsetMap<TypeId>,
    declarations: HashSet<TypeId>,
    signatures: HashMap<TypeId, Signature>,
    functions: HashMap<String, (bool, FunctionInfo)>,
    variables: HashMap<String, (u8, u64, TypeId)>,
    var_decls: OffsetMap<(Option<String>, Option<TypeId>)>,
    bit_fixups: Vec<BitFixup>,
    enum_fixups: Vec<EnumFixup>,
    var_fixups: Vec<VarFixup>,
    pointer_size: u64,
}

/// Arena slot 0: `void`, the type of anything without a `DW_AT_type`.
const VOID: TypeId = 0;

impl<'a, 'd> Builder<'a, 'd> {
    fn new(dwarf: &'a gimli::Dwarf<R<'d>>) -> Self {
        Builder {
            dwarf,
            types: vec![Type::Void],
            by_offset: OffsetMap::default(),
            declarations: HashSet::new(),
            signatures: HashMap::new(),
            functions: HashMap::new(),
            variables: HashMap::new(),
            var_decls: OffsetMap::default(),
            bit_fixups: Vec::new(),
            enum_fixups: Vec::new(),
            var_fixups: Vec::new(),
            pointer_size: 8,
        }
    }

    /// The arena slot of the type DIE at a `.debug_info` offset, created
    /// (as `void`) on first reference so forward references work.
    fn id_at(&mut self, offset: usize) -> TypeId {
        if let Some(&id) = self.by_offset.get(&offset) {
            return id;
        }
        let id = self.push(Type::Void);
        self.by_offset.insert(offset, id);
        id
    }

    fn push(&mut self, t: Type) -> TypeId {
        self.types.push(t);
        self.types.len() - 1
    }

    fn type_of(&mut self, a: &Attrs<'_>) -> Option<TypeId> {
        a.ty.map(|o| self.id_at(o))
    }

    fn attrs(
        &self,
        unit: &Unit<'d>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, R<'d>>,
    ) -> gimli::Result<Attrs<'d>> {
        let mut a = Attrs::default();
        let mut it = entry.attrs();
        while let Some(attr) = it.next()? {
            let v = attr.value();
            match attr.name() {
                dw::DW_AT_name => a.name = Some(v),
                dw::DW_AT_type => a.ty = global_ref(unit, v),
                dw::DW_AT_byte_size => a.byte_size = v.udata_value(),
                dw::DW_AT_encoding => {
                    if let AttributeValue::Encoding(e) = v {
                        a.encoding = Some(e);
                    }
                }
                dw::DW_AT_declaration => a.declaration = matches!(v, AttributeValue::Flag(true)),
                dw::DW_AT_external => a.external = matches!(v, AttributeValue::Flag(true)),
                dw::DW_AT_data_member_location => a.member_location = Some(v),
                dw::DW_AT_data_bit_offset => a.data_bit_offset = attr.raw_value().udata_value(),
                dw::DW_AT_bit_offset => a.bit_offset = attr.raw_value().sdata_value(),
                dw::DW_AT_bit_size => a.bit_size = v.udata_value(),
                dw::DW_AT_upper_bound => a.upper_bound = Some(attr.raw_value()),
                dw::DW_AT_lower_bound => a.lower_bound = attr.raw_value().sdata_value(),
                dw::DW_AT_count => a.count = Some(attr.raw_value()),
                dw::DW_AT_const_value => a.const_value = Some(attr.raw_value()),
                dw::DW_AT_location => a.location = Some(v),
                dw::DW_AT_specification | dw::DW_AT_abstract_origin => {
                    a.specification = global_ref(unit, v)
                }
                _ => {}
            }
        }
        Ok(a)
    }

    /// The attributes of `node`'s direct children tagged `tag`, in order.
    fn tagged_children(
        &self,
        unit: &Unit<'d>,
        node: Node<'_, '_, '_, 'd>,
        tag: gimli::DwTag,
    ) -> gimli::Result<Vec<Attrs<'d>>> {
        let mut out = Vec::new();
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            if e.tag() == tag {
                out.push(self.attrs(unit, e)?);
            }
        }
        Ok(out)
    }

    /// A name attribute as text.
    fn text(&self, unit: &Unit<'d>, v: Option<AttributeValue<R<'d>>>) -> Option<String> {
        let s = self.dwarf.attr_string(unit, v?).ok()?;
        Some(s.to_string_lossy().into_owned())
    }

    fn walk(
        &mut self,
        unit: &Unit<'d>,
        node: Node<'_, '_, '_, 'd>,
        scope: Scope,
    ) -> gimli::Result<()> {
        let entry = node.entry();
        let tag = entry.tag();
        // Nothing below these defines a type or a static variable.
        if matches!(
            tag,
            dw::DW_TAG_inlined_subroutine
                | dw::DW_TAG_call_site
                | dw::DW_TAG_GNU_call_site
                | dw::DW_TAG_formal_parameter
                | dw::DW_TAG_label
                | dw::DW_TAG_member
                | dw::DW_TAG_enumerator
                | dw::DW_TAG_subrange_type
        ) {
            return Ok(());
        }
        let off = entry
            .offset()
            .to_debug_info_offset(&unit.header)
            .map_or(usize::MAX, |o| o.0);
        let a = self.attrs(unit, entry)?;
        match tag {
            dw::DW_TAG_base_type => {
                let id = self.id_at(off);
                self.types[id] = Type::Base {
                    name: self.text(unit, a.name).unwrap_or_else(|| "<base>".into()),
                    size: a.byte_size.unwrap_or(0),
                    encoding: encoding(a.encoding),
                };
            }
            dw::DW_TAG_pointer_type
            | dw::DW_TAG_reference_type
            | dw::DW_TAG_rvalue_reference_type => {
                let id = self.id_at(off);
                let pointee = self.type_of(&a);
                self.types[id] = Type::Pointer { pointee };
            }
            dw::DW_TAG_const_type
            | dw::DW_TAG_volatile_type
            | dw::DW_TAG_restrict_type
            | dw::DW_TAG_atomic_type => {
                let id = self.id_at(off);
                let qual = match tag {
                    dw::DW_TAG_const_type => Qualifier::Const,
                    dw::DW_TAG_volatile_type => Qualifier::Volatile,
                    dw::DW_TAG_restrict_type => Qualifier::Restrict,
                    _ => Qualifier::Atomic,
                };
                let ty = self.type_of(&a);
                self.types[id] = Type::Qualified { qual, ty };
            }
            dw::DW_TAG_typedef => {
                let id = self.id_at(off);
                let ty = self.type_of(&a);
                self.types[id] = Type::Typedef {
                    name: self
                        .text(unit, a.name)
                        .unwrap_or_else(|| "<typedef>".into()),
                    ty,
                };
            }
            dw::DW_TAG_unspecified_type => {
                self.id_at(off);
            }
            dw::DW_TAG_structure_type | dw::DW_TAG_class_type | dw::DW_TAG_union_type => {
                let kind = if tag == dw::DW_TAG_union_type {
                    StructKind::Union
                } else {
                    StructKind::Struct
                };
                self.structure(unit, node, off, a, kind, scope)?;
            }
            dw::DW_TAG_enumeration_type => self.enumeration(unit, node, off, a)?,
            dw::DW_TAG_array_type => self.array(unit, node, off, a)?,
            dw::DW_TAG_subroutine_type => self.subroutine(unit, node, off, a)?,
            dw::DW_TAG_subprogram => self.subprogram(unit, node, a)?,
            dw::DW_TAG_variable => self.variable(unit, off, a, scope),
            _ => {
                let mut children = node.children();
                while let Some(child) = children.next()? {
                    self.walk(unit, child, scope)?;
                }
            }
        }
        Ok(())
    }

    fn structure(
        &mut self,
        unit: &Unit<'d>,
        node: Node<'_, '_, '_, 'd>,
        off: usize,
        a: Attrs<'d>,
        kind: StructKind,
        scope: Scope,
    ) -> gimli::Result<()> {
        let id = self.id_at(off);
        let mut members = Vec::new();
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            if e.tag() != dw::DW_TAG_member {
                self.walk(unit, child, scope)?;
                continue;
            }
            let m = self.attrs(unit, e)?;
            // C++ static data members live elsewhere.
            if m.declaration && m.external {
                continue;
            }
            let ty = self.type_of(&m).unwrap_or(VOID);
            let location = match &m.member_location {
                Some(v) => constant_location(v, unit.encoding()).unwrap_or(0),
                None => 0,
            };
            let mut member = Member {
                name: self.text(unit, m.name),
                ty,
                offset: location,
                bit_offset: None,
                bit_size: None,
            };
            if let Some(bits) = m.bit_size {
                let total = match (m.data_bit_offset, m.bit_offset) {
                    (Some(dbo), _) => Some(location * 8 + dbo),
                    (None, Some(bo)) => match m.byte_size {
                        Some(storage) => Some(big_endian_bits(location, storage, bo, bits)),
                        None => {
                            self.bit_fixups.push(BitFixup {
                                id,
                                index: members.len(),
                                location,
                                bit_offset: bo,
                                bit_size: bits,
                            });
                            None
                        }
                    },
                    (None, None) => Some(location * 8),
                };
                if let Some(total) = total {
                    member.offset = total / 8;
                    member.bit_offset = Some((total % 8) as u32);
                }
                member.bit_size = Some(bits as u32);
            }
            members.push(member);
        }
        if a.declaration {
            self.declarations.insert(id);
        }
        self.types[id] = Type::Struct {
            kind,
            name: self.text(unit, a.name),
            size: a.byte_size.unwrap_or(0),
            members,
        };
        Ok(())
    }

    fn enumeration(
        &mut self,
        unit: &Unit<'d>,
        node: Node<'_, '_, '_, 'd>,
        off: usize,
        a: Attrs<'d>,
    ) -> gimli::Result<()> {
        let id = self.id_at(off);
        let underlying = self.type_of(&a);
        let mut names = Vec::new();
        let mut raw = Vec::new();
        for m in self.tagged_children(unit, node, dw::DW_TAG_enumerator)? {
            let value = match m.const_value {
                Some(AttributeValue::Data1(v)) => (u64::from(v), 1, false),
                Some(AttributeValue::Data2(v)) => (u64::from(v), 2, false),
                Some(AttributeValue::Data4(v)) => (u64::from(v), 4, false),
                Some(AttributeValue::Data8(v)) => (v, 8, false),
                Some(AttributeValue::Sdata(v)) => (v as u64, 8, true),
                Some(AttributeValue::Udata(v)) => (v, 8, false),
                _ => (0, 8, false),
            };
            names.push(self.text(unit, m.name).unwrap_or_default());
            raw.push(value);
        }
        if a.declaration {
            self.declarations.insert(id);
        }
        self.types[id] = Type::Enum {
            name: self.text(unit, a.name),
            size: a.byte_size.unwrap_or(4),
            signed: false,
            variants: names.into_iter().map(|n| (n, 0)).collect(),
        };
        self.enum_fixups.push(EnumFixup {
            id,
            underlying,
            raw,
        });
        Ok(())
    }

    fn array(
        &mut self,
        unit: &Unit<'d>,
        node: Node<'_, '_, '_, 'd>,
        off: usize,
        a: Attrs<'d>,
    ) -> gimli::Result<()> {
        let id = self.id_at(off);
        let elem = self.type_of(&a).unwrap_or(VOID);
        let mut dims: Vec<Option<u64>> = self
            .tagged_children(unit, node, dw::DW_TAG_subrange_type)?
            .iter()
            .map(dimension)
            .collect();
        if dims.is_empty() {
            dims.push(None);
        }
        // `int m[2][3]` is one DIE with two subranges: an array of arrays.
        let mut inner = elem;
        for &count in dims[1..].iter().rev() {
            inner = self.push(Type::Array { elem: inner, count });
        }
        self.types[id] = Type::Array {
            elem: inner,
            count: dims[0],
        };
        Ok(())
    }

    fn subroutine(
        &mut self,
        unit: &Unit<'d>,
        node: Node<'_, '_, '_, 'd>,
        off: usize,
        a: Attrs<'d>,
    ) -> gimli::Result<()> {
        let id = self.id_at(off);
        let mut sig = Signature {
            ret: self.type_of(&a),
            ..Signature::default()
        };
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            match e.tag() {
                dw::DW_TAG_formal_parameter => {
                    let p = self.attrs(unit, e)?;
                    let ty = self.type_of(&p).unwrap_or(VOID);
                    sig.params.push(ty);
                }
                dw::DW_TAG_unspecified_parameters => sig.variadic = true,
                _ => {}
            }
        }
        self.types[id] = Type::Function;
        self.signatures.insert(id, sig);
        Ok(())
    }

    fn subprogram(
        &mut self,
        unit: &Unit<'d>,
        node: Node<'_, '_, '_, 'd>,
        a: Attrs<'d>,
    ) -> gimli::Result<()> {
        let ret = self.type_of(&a);
        let mut params = Vec::new();
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            if e.tag() == dw::DW_TAG_formal_parameter {
                let p = self.attrs(unit, e)?;
                let ty = self.type_of(&p).unwrap_or(VOID);
                let name = self
                    .text(unit, p.name)
                    .unwrap_or_else(|| format!("arg{}", params.len()));
                params.push(Param { name, ty });
            } else {
                self.walk(unit, child, Scope::Function)?;
            }
        }
        // Concrete out-of-line copies (-O2) have no name: their abstract
        // origin, walked on its own, carries the name and parameters.
        let Some(name) = self.text(unit, a.name) else {
            return Ok(());
        };
        let definition = !a.declaration;
        let replace = match self.functions.get(&name) {
            None => true,
            Some((had_definition, _)) => definition && !had_definition,
        };
        if replace {
            self.functions.insert(
                name.clone(),
                (definition, FunctionInfo { name, params, ret }),
            );
        }
        Ok(())
    }

    fn variable(&mut self, unit: &Unit<'d>, off: usize, a: Attrs<'d>, scope: Scope) {
        let ty = self.type_of(&a);
        if a.declaration {
            let name = self.text(unit, a.name);
            self.var_decls.insert(off, (name, ty));
            return;
        }
        let Some(addr) = a
            .location
            .as_ref()
            .and_then(|l| static_address(self.dwarf, unit, l))
        else {
            return;
        };
        let rank = match (scope, a.external) {
            (Scope::Unit, true) => 0,
            (Scope::Unit, false) => 1,
            (Scope::Function, _) => 2,
        };
        match (self.text(unit, a.name), a.specification) {
            (Some(name), _) => self.add_variable(name, rank, addr, ty.unwrap_or(VOID)),
            (None, Some(decl)) => self.var_fixups.push(VarFixup {
                decl,
                addr,
                rank,
                ty,
            }),
            (None, None) => {}
        }
    }

    fn add_variable(&mut self, name: String, rank: u8, addr: u64, ty: TypeId) {
        let better = self.variables.get(&name).is_none_or(|(r, _, _)| rank < *r);
        if better {
            self.variables.insert(name, (rank, addr, ty));
        }
    }

    fn finish(mut self, path: &Path) -> DebugInfo {
        for f in std::mem::take(&mut self.var_fixups) {
            if let Some((Some(name), decl_ty)) = self.var_decls.get(&f.decl).cloned() {
                let ty = f.ty.or(decl_ty).unwrap_or(VOID);
                self.add_variable(name, f.rank, f.addr, ty);
            }
        }
        let mut info = DebugInfo {
            path: path.to_path_buf(),
            binary: path.to_path_buf(),
            types: std::mem::take(&mut self.types),
            incomplete: HashSet::new(),
            signatures: std::mem::take(&mut self.signatures),
            names: HashMap::new(),
            functions: self.functions.drain().map(|(k, (_, f))| (k, f)).collect(),
            variables: self
                .variables
                .drain()
                .map(|(k, (_, a, t))| (k, (a, t)))
                .collect(),
            pointer_size: self.pointer_size,
        };
        for f in &self.bit_fixups {
            let storage = match &info.types[f.id] {
                Type::Struct { members, .. } => {
                    members.get(f.index).and_then(|m| info.size_of(m.ty))
                }
                _ => None,
            }
            .unwrap_or(4);
            let total = big_endian_bits(f.location, storage, f.bit_offset, f.bit_size);
            if let Type::Struct { members, .. } = &mut info.types[f.id]
                && let Some(m) = members.get_mut(f.index)
            {
                m.offset = total / 8;
                m.bit_offset = Some((total % 8) as u32);
            }
        }
        for f in &self.enum_fixups {
            let signed = match f.underlying.map(|u| &info.types[info.strip(u)]) {
                Some(Type::Base { encoding, .. }) => {
                    matches!(encoding, Encoding::Signed | Encoding::SignedChar)
                }
                _ => f.raw.iter().any(|&(v, _, s)| s && (v as i64) < 0),
            };
            let values: Vec<i64> = f
                .raw
                .iter()
                .map(|&(v, width, _)| {
                    if signed {
                        sign_extend(v, width)
                    } else {
                        v as i64
                    }
                })
                .collect();
            if let Type::Enum {
                signed: s,
                variants,
                ..
            } = &mut info.types[f.id]
            {
                *s = signed;
                for (slot, v) in variants.iter_mut().zip(values) {
                    slot.1 = v;
                }
            }
        }
        // The name index: the first complete definition of each name.
        let mut names: HashMap<String, TypeId> = HashMap::new();
        for (id, t) in info.types.iter().enumerate() {
            let key = match t {
                Type::Struct { .. } | Type::Enum { .. } => match super::tag_key(t) {
                    Some(k) => k,
                    None => continue,
                },
                Type::Typedef { name, .. } => name.clone(),
                Type::Base { name, .. } => base_key(name).unwrap_or_else(|| name.clone()),
                _ => continue,
            };
            match names.get(&key) {
                Some(&old) if !self.declarations.contains(&old) => {}
                Some(_) if self.declarations.contains(&id) => {}
                _ => {
                    names.insert(key, id);
                }
            }
        }
        // `struct foo;` in one unit is the `struct foo` another defines.
        for &decl in &self.declarations {
            let Some(key) = super::tag_key(&info.types[decl]) else {
                info.incomplete.insert(decl);
                continue;
            };
            match names.get(&key) {
                Some(&def) if !self.declarations.contains(&def) => {
                    info.types[decl] = info.types[def].clone();
                }
                _ => {
                    info.incomplete.insert(decl);
                }
            }
        }
        info.names = names;
        info
    }
}

/// A reference attribute as a `.debug_info` offset.
fn global_ref(unit: &Unit<'_>, v: AttributeValue<R<'_>>) -> Option<usize> {
    match v {
        AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header).map(|o| o.0),
        AttributeValue::DebugInfoRef(o) => Some(o.0),
        _ => None,
    }
}

fn encoding(e: Option<gimli::DwAte>) -> Encoding {
    match e {
        Some(dw::DW_ATE_signed) | Some(dw::DW_ATE_signed_fixed) => Encoding::Signed,
        Some(dw::DW_ATE_signed_char) => Encoding::SignedChar,
        Some(dw::DW_ATE_unsigned_char) => Encoding::UnsignedChar,
        Some(dw::DW_ATE_boolean) => Encoding::Bool,
        Some(dw::DW_ATE_float)
        | Some(dw::DW_ATE_complex_float)
        | Some(dw::DW_ATE_decimal_float) => Encoding::Float,
        _ => Encoding::Unsigned,
    }
}

/// A member offset given as a constant or as a constant expression
/// (`DW_OP_plus_uconst N`, `DW_OP_constu N`).
fn constant_location(v: &AttributeValue<R<'_>>, enc: gimli::Encoding) -> Option<u64> {
    match v {
        AttributeValue::Exprloc(expr) => {
            let mut ops = expr.operations(enc);
            let mut value: u64 = 0;
            while let Ok(Some(op)) = ops.next() {
                match op {
                    gimli::Operation::PlusConstant { value: v } => value = value.wrapping_add(v),
                    gimli::Operation::UnsignedConstant { value: v } => value = v,
                    gimli::Operation::SignedConstant { value: v } => value = v as u64,
                    _ => return None,
                }
            }
            Some(value)
        }
        v => v.udata_value(),
    }
}

/// The fixed address of a static variable (`DW_OP_addr`, `DW_OP_addrx`);
/// `None` for registers, the stack, TLS and location lists.
fn static_address(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &Unit<'_>,
    loc: &AttributeValue<R<'_>>,
) -> Option<u64> {
    let AttributeValue::Exprloc(expr) = loc else {
        return None;
    };
    let mut ops = expr.operations(unit.encoding());
    let addr = match ops.next().ok()?? {
        gimli::Operation::Address { address } => address,
        gimli::Operation::AddressIndex { index } => dwarf.address(unit, index).ok()?,
        _ => return None,
    };
    // Anything after the address (TLS, pieces) makes it not a plain global.
    matches!(ops.next(), Ok(None)).then_some(addr)
}

/// An array dimension's element count from `DW_AT_count` or the bounds.
fn dimension(s: &Attrs<'_>) -> Option<u64> {
    if let Some(c) = &s.count {
        return c.udata_value();
    }
    let ub = s.upper_bound.as_ref()?;
    let upper: i128 = match *ub {
        AttributeValue::Sdata(v) => i128::from(v),
        // gcc spells `int a[0]` as an upper bound of -1.
        AttributeValue::Data8(v) if v == u64::MAX => -1,
        ref v => i128::from(v.udata_value()?),
    };
    let lower = i128::from(s.lower_bound.unwrap_or(0));
    Some((upper - lower + 1).max(0) as u64)
}

/// DWARF 4's `DW_AT_bit_offset` counts from the most significant bit of
/// the storage unit; the result counts bits from the start of the struct,
/// least significant first (little-endian).
fn big_endian_bits(location: u64, storage: u64, bit_offset: i64, bit_size: u64) -> u64 {
    let from_lsb = storage as i64 * 8 - bit_offset - bit_size as i64;
    (location as i64 * 8 + from_lsb).max(0) as u64
}

fn sign_extend(v: u64, width: u8) -> i64 {
    match width {
        1 => i64::from(v as u8 as i8),
        2 => i64::from(v as u16 as i16),
        4 => i64::from(v as u32 as i32),
        _ => v as i64,
    }
}

/// The canonical spelling of a C base type name, so `unsigned long`,
/// `long unsigned int` and `unsigned long int` meet: `unsigned long int`.
pub(super) fn base_key(name: &str) -> Option<String> {
    let (mut unsigned, mut signed, mut short, mut longs) = (false, false, false, 0);
    let mut base: Option<&str> = None;
    for w in name.split_whitespace() {
        match w {
            "unsigned" => unsigned = true,
            "signed" => signed = true,
            "short" => short = true,
            "long" => longs += 1,
            "int" | "char" | "float" | "double" | "_Bool" | "bool" | "__int128" => {
                if base.is_some() {
                    return None;
                }
                base = Some(if w == "bool" { "_Bool" } else { w });
            }
            _ => return None,
        }
    }
    let base = base.unwrap_or("int");
    let sign = if unsigned { "unsigned " } else { "" };
    Some(match base {
        "char" if signed => "signed char".into(),
        "char" => format!("{sign}char"),
        "int" => {
            let len = match (short, longs) {
                (true, _) => "short ",
                (false, 0) => "",
                (false, 1) => "long ",
                _ => "long long ",
            };
            format!("{sign}{len}int")
        }
        "__int128" => format!("{sign}__int128"),
        "double" if longs > 0 => "long double".into(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_meet() {
        assert_eq!(base_key("long unsigned int").unwrap(), "unsigned long int");
        assert_eq!(base_key("unsigned long").unwrap(), "unsigned long int");
        assert_eq!(base_key("unsigned").unwrap(), "unsigned int");
        assert_eq!(base_key("long long int").unwrap(), "long long int");
        assert_eq!(base_key("signed char").unwrap(), "signed char");
        assert_eq!(base_key("char").unwrap(), "char");
        assert_eq!(
            base_key("short unsigned int").unwrap(),
            "unsigned short int"
        );
        assert_eq!(base_key("__int128 unsigned").unwrap(), "unsigned __int128");
        assert_eq!(base_key("bool").unwrap(), "_Bool");
        assert!(base_key("m0_time_t").is_none());
    }

    #[test]
    fn dwarf4_bit_offsets() {
        // unsigned a:3 at the start of a 4-byte unit: DWARF 4 says bit 29.
        assert_eq!(big_endian_bits(0, 4, 29, 3), 0);
        // unsigned c:12 after 8 bits: bit_offset 32 - 8 - 12 = 12.
        assert_eq!(big_endian_bits(0, 4, 12, 12), 8);
    }
}
