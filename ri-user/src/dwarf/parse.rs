//! Walking compilation units with gimli into a [`Part`] of the arena, then
//! fix-ups that need all of them (declarations resolved to definitions by
//! name, enum signedness, DWARF 4 bit offsets whose storage size comes from
//! the member's type).

use std::collections::{HashMap, HashSet};

use gimli::{AttributeValue, constants as dw};

use super::{
    Encoding, FunctionInfo, Member, Param, Qualifier, Signature, StructKind, Type, TypeId,
    forms::{
        R, Unit, base_key, big_endian_bits, constant_location, encoding, global_ref, sign_extend,
        static_address,
    },
    part::{OffsetMap, Part},
};

type Node<'a, 'b, 'c, 'd> = gimli::EntriesTreeNode<'a, 'b, 'c, R<'d>>;

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
    unit: usize,
    addr: u64,
    rank: u8,
    ty: Option<TypeId>,
}

/// Parses units into a [`Part`], on top of the types already loaded.
pub(super) struct Builder<'a, 'd> {
    dwarf: &'a gimli::Dwarf<R<'d>>,
    /// Id of `types[0]`.
    base: TypeId,
    /// Types loaded before, and their DIE offsets.
    loaded: &'a boxcar::Vec<Type>,
    loaded_offsets: &'a OffsetMap<TypeId>,
    /// Where writes to an already loaded type go (never read).
    scratch: Type,
    /// (first type id, unit position) of each unit walked, in order.
    unit_starts: Vec<(TypeId, usize)>,
    types: Vec<Type>,
    by_offset: OffsetMap<TypeId>,
    declarations: HashSet<TypeId>,
    signatures: HashMap<TypeId, Signature>,
    /// The unit being walked.
    unit: usize,
    /// By (name, unit): same-named statics differ by unit.
    functions: HashMap<(String, usize), (bool, FunctionInfo)>,
    variables: HashMap<(String, usize), (u8, u64, TypeId)>,
    var_decls: OffsetMap<(Option<String>, Option<TypeId>)>,
    bit_fixups: Vec<BitFixup>,
    enum_fixups: Vec<EnumFixup>,
    var_fixups: Vec<VarFixup>,
}

/// Arena slot 0: `void`, the type of anything without a `DW_AT_type`.
pub(super) const VOID: TypeId = 0;

impl<'a, 'd> Builder<'a, 'd> {
    pub(super) fn new(
        dwarf: &'a gimli::Dwarf<R<'d>>,
        loaded: &'a boxcar::Vec<Type>,
        loaded_offsets: &'a OffsetMap<TypeId>,
    ) -> Self {
        Builder {
            dwarf,
            base: loaded.count(),
            loaded,
            loaded_offsets,
            scratch: Type::Void,
            unit_starts: Vec::new(),
            types: Vec::new(),
            by_offset: OffsetMap::default(),
            declarations: HashSet::new(),
            signatures: HashMap::new(),
            unit: 0,
            functions: HashMap::new(),
            variables: HashMap::new(),
            var_decls: OffsetMap::default(),
            bit_fixups: Vec::new(),
            enum_fixups: Vec::new(),
            var_fixups: Vec::new(),
        }
    }

    /// Parses the unit whose header is at `offset` in `.debug_info` (at
    /// position `unit` in the index).
    pub(super) fn walk_unit(&mut self, offset: usize, unit: usize) -> gimli::Result<()> {
        self.unit_starts.push((self.base + self.types.len(), unit));
        self.unit = unit;
        let header = self
            .dwarf
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(offset))?;
        let unit = self.dwarf.unit(header)?;
        let mut tree = unit.entries_tree(None)?;
        let root = tree.root()?;
        self.walk(&unit, root, Scope::Unit)
    }

    /// Offsets referred to but not parsed (in units not walked yet).
    pub(super) fn referenced(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_offset
            .iter()
            .filter(|(_, id)| matches!(self.types[**id - self.base], Type::Void))
            .map(|(off, _)| *off)
    }

    /// Name keys of the struct, union and enum declarations parsed.
    pub(super) fn declared(&self) -> Vec<String> {
        self.declarations
            .iter()
            .filter_map(|&id| super::tag_key(self.get(id)))
            .collect()
    }

    /// The unit whose walk created type `id`.
    fn unit_at(&self, id: TypeId) -> Option<usize> {
        let i = self.unit_starts.partition_point(|&(start, _)| start <= id);
        Some(self.unit_starts.get(i.checked_sub(1)?)?.1)
    }

    fn get(&self, id: TypeId) -> &Type {
        if id < self.base {
            &self.loaded[id]
        } else {
            &self.types[id - self.base]
        }
    }

    fn slot(&mut self, id: TypeId) -> &mut Type {
        if id < self.base {
            &mut self.scratch
        } else {
            &mut self.types[id - self.base]
        }
    }

    /// The arena slot of the type DIE at a `.debug_info` offset, created
    /// (as `void`) on first reference so forward references work.
    fn id_at(&mut self, offset: usize) -> TypeId {
        if let Some(&id) = self.by_offset.get(&offset) {
            return id;
        }
        if let Some(&id) = self.loaded_offsets.get(&offset) {
            return id;
        }
        let id = self.push(Type::Void);
        self.by_offset.insert(offset, id);
        id
    }

    fn push(&mut self, t: Type) -> TypeId {
        self.types.push(t);
        self.base + self.types.len() - 1
    }

    fn strip(&self, id: TypeId) -> TypeId {
        let mut id = id;
        for _ in 0..64 {
            match self.get(id) {
                Type::Typedef { ty: Some(t), .. } | Type::Qualified { ty: Some(t), .. } => id = *t,
                _ => return id,
            }
        }
        id
    }

    /// Size of a type for the bitfield fix-up (pointers count 8).
    fn size_of(&self, id: TypeId) -> Option<u64> {
        match self.get(self.strip(id)) {
            Type::Base { size, .. } | Type::Struct { size, .. } | Type::Enum { size, .. } => {
                Some(*size)
            }
            Type::Pointer { .. } => Some(8),
            Type::Array { elem, count } => Some(self.size_of(*elem)?.checked_mul((*count)?)?),
            _ => None,
        }
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
                *self.slot(id) = Type::Base {
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
                *self.slot(id) = Type::Pointer { pointee };
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
                *self.slot(id) = Type::Qualified { qual, ty };
            }
            dw::DW_TAG_typedef => {
                let id = self.id_at(off);
                let ty = self.type_of(&a);
                *self.slot(id) = Type::Typedef {
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
        *self.slot(id) = Type::Struct {
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
        *self.slot(id) = Type::Enum {
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
        *self.slot(id) = Type::Array {
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
        *self.slot(id) = Type::Function;
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
        let key = (name, self.unit);
        let replace = match self.functions.get(&key) {
            None => true,
            Some((had_definition, _)) => definition && !had_definition,
        };
        if replace {
            let name = key.0.clone();
            self.functions
                .insert(key, (definition, FunctionInfo { name, params, ret }));
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
            (Some(name), _) => self.add_variable(name, self.unit, rank, addr, ty.unwrap_or(VOID)),
            (None, Some(decl)) => self.var_fixups.push(VarFixup {
                decl,
                unit: self.unit,
                addr,
                rank,
                ty,
            }),
            (None, None) => {}
        }
    }

    fn add_variable(&mut self, name: String, unit: usize, rank: u8, addr: u64, ty: TypeId) {
        let key = (name, unit);
        let better = self.variables.get(&key).is_none_or(|(r, _, _)| rank < *r);
        if better {
            self.variables.insert(key, (rank, addr, ty));
        }
    }

    /// Applies the fix-ups that need every parsed unit; `defined` finds
    /// the loaded complete definition of a tag name (`struct foo;` here is
    /// the `struct foo` another unit defines); `canonical` says which unit's
    /// copy of a name is the one names lead to (the first unit defining it,
    /// as a full parse would pick: same-named types may differ by unit).
    pub(super) fn finish(
        mut self,
        defined: impl Fn(&str) -> Option<TypeId>,
        canonical: impl Fn(&str) -> Option<usize>,
    ) -> Part {
        for f in std::mem::take(&mut self.var_fixups) {
            if let Some((Some(name), decl_ty)) = self.var_decls.get(&f.decl).cloned() {
                let ty = f.ty.or(decl_ty).unwrap_or(VOID);
                self.add_variable(name, f.unit, f.rank, f.addr, ty);
            }
        }
        for f in std::mem::take(&mut self.bit_fixups) {
            let storage = match self.get(f.id) {
                Type::Struct { members, .. } => {
                    members.get(f.index).and_then(|m| self.size_of(m.ty))
                }
                _ => None,
            }
            .unwrap_or(4);
            let total = big_endian_bits(f.location, storage, f.bit_offset, f.bit_size);
            if let Type::Struct { members, .. } = self.slot(f.id)
                && let Some(m) = members.get_mut(f.index)
            {
                m.offset = total / 8;
                m.bit_offset = Some((total % 8) as u32);
            }
        }
        for f in std::mem::take(&mut self.enum_fixups) {
            let signed = match f.underlying.map(|u| self.get(self.strip(u))) {
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
            } = self.slot(f.id)
            {
                *s = signed;
                for (slot, v) in variants.iter_mut().zip(values) {
                    slot.1 = v;
                }
            }
        }
        // The name index: the first complete definition of each name in
        // the unit that defines it first.
        let mut names: HashMap<String, TypeId> = HashMap::new();
        let mut order = Vec::new();
        for (i, t) in self.types.iter().enumerate() {
            let id = self.base + i;
            let key = match t {
                Type::Struct { .. } | Type::Enum { .. } => match super::tag_key(t) {
                    Some(k) => k,
                    None => continue,
                },
                Type::Typedef { name, .. } => name.clone(),
                Type::Base { name, .. } => base_key(name).unwrap_or_else(|| name.clone()),
                _ => continue,
            };
            if let Some(unit) = canonical(&key)
                && self.unit_at(id) != Some(unit)
            {
                continue;
            }
            match names.get(&key) {
                Some(&old) if !self.declarations.contains(&old) => {}
                Some(_) if self.declarations.contains(&id) => {}
                Some(_) => {
                    names.insert(key, id);
                }
                None => {
                    order.push(key.clone());
                    names.insert(key, id);
                }
            }
        }
        let mut incomplete = Vec::new();
        let mut decls: Vec<TypeId> = self.declarations.iter().copied().collect();
        decls.sort_unstable();
        for decl in decls {
            let Some(key) = super::tag_key(self.get(decl)) else {
                incomplete.push(decl);
                continue;
            };
            let def = match names.get(&key) {
                Some(&def) if !self.declarations.contains(&def) => Some(def),
                _ => defined(&key),
            };
            match def {
                Some(def) => {
                    let t = self.get(def).clone();
                    *self.slot(decl) = t;
                }
                None => incomplete.push(decl),
            }
        }
        let open: HashSet<TypeId> = incomplete.iter().copied().collect();
        let names = order
            .into_iter()
            .map(|k| {
                let id = names[&k];
                (k, id, !open.contains(&id))
            })
            .collect();
        Part {
            base: self.base,
            types: self.types,
            incomplete,
            signatures: self.signatures,
            names,
            functions: self
                .functions
                .into_iter()
                .map(|((_, u), (d, f))| (u, d, f))
                .collect(),
            variables: self
                .variables
                .into_iter()
                .map(|((k, u), (r, a, t))| (k, u, r, a, t))
                .collect(),
            by_offset: self.by_offset,
        }
    }
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
