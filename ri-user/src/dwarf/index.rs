//! The name index of a binary's DWARF: which compilation unit defines each
//! type name, function and variable, found by one quick pass over the DIEs
//! (names and flags only, no types built), so a lookup parses only the units
//! it needs. Saved per build-id by `cache`.

use std::collections::HashMap;

use gimli::{AttributeValue, constants as dw};

use super::forms::{R, base_key, global_ref, static_address};

/// What a type name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A base type (`int`, `unsigned long int`).
    Base = 0,
    /// A struct, union or enum tag (`struct x`).
    Tag = 1,
    /// A typedef.
    Typedef = 2,
}

impl Kind {
    pub(super) fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Base),
            1 => Some(Kind::Tag),
            2 => Some(Kind::Typedef),
            _ => None,
        }
    }
}

/// Where a type name is defined: the unit of the first complete definition
/// (else of the first declaration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TypeEntry {
    pub unit: u32,
    pub kind: Kind,
    pub complete: bool,
}

/// Where a function is: the unit of its first definition (else declaration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FunctionEntry {
    pub unit: u32,
    pub definition: bool,
}

/// Where a variable is: the unit of its best-ranked definition (global,
/// then file static, then function static) and its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VariableEntry {
    pub unit: u32,
    pub rank: u8,
    pub addr: u64,
}

/// Names to compilation units (by their `.debug_info` offsets).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Index {
    /// Unit header offsets in `.debug_info`, ascending.
    pub units: Vec<usize>,
    /// Bytes of a pointer (the first unit's address size).
    pub pointer_size: u64,
    /// `struct x`, `union x`, `enum x`, typedef `x`, canonical base names.
    pub types: HashMap<String, TypeEntry>,
    pub functions: HashMap<String, FunctionEntry>,
    pub variables: HashMap<String, VariableEntry>,
}

impl Index {
    /// The unit (its position in `units`) holding a `.debug_info` offset.
    pub fn unit_of(&self, offset: usize) -> Option<usize> {
        self.units.partition_point(|&u| u <= offset).checked_sub(1)
    }

    /// Merges one unit's names, keeping the rules of the full parse: the
    /// first complete type, the first function definition, the best rank.
    fn add_type(&mut self, key: String, e: TypeEntry) {
        match self.types.get(&key) {
            Some(old) if old.complete || !e.complete => {}
            _ => {
                self.types.insert(key, e);
            }
        }
    }

    fn add_function(&mut self, name: String, e: FunctionEntry) {
        match self.functions.get(&name) {
            Some(old) if old.definition || !e.definition => {}
            _ => {
                self.functions.insert(name, e);
            }
        }
    }

    fn add_variable(&mut self, name: String, e: VariableEntry) {
        if self
            .variables
            .get(&name)
            .is_none_or(|old| e.rank < old.rank)
        {
            self.variables.insert(name, e);
        }
    }
}

/// DIEs below which the full parse reads no type, function or variable.
fn leaf(tag: gimli::DwTag) -> bool {
    matches!(
        tag,
        dw::DW_TAG_inlined_subroutine
            | dw::DW_TAG_call_site
            | dw::DW_TAG_GNU_call_site
            | dw::DW_TAG_formal_parameter
            | dw::DW_TAG_label
            | dw::DW_TAG_member
            | dw::DW_TAG_enumerator
            | dw::DW_TAG_subrange_type
            | dw::DW_TAG_enumeration_type
            | dw::DW_TAG_array_type
            | dw::DW_TAG_subroutine_type
            | dw::DW_TAG_base_type
            | dw::DW_TAG_pointer_type
            | dw::DW_TAG_reference_type
            | dw::DW_TAG_rvalue_reference_type
            | dw::DW_TAG_const_type
            | dw::DW_TAG_volatile_type
            | dw::DW_TAG_restrict_type
            | dw::DW_TAG_atomic_type
            | dw::DW_TAG_typedef
            | dw::DW_TAG_unspecified_type
            | dw::DW_TAG_variable
    )
}

/// Builds the index with one pass over every unit's DIEs.
pub(super) fn scan(dwarf: &gimli::Dwarf<R<'_>>) -> gimli::Result<Index> {
    let mut index = Index {
        pointer_size: 8,
        ..Index::default()
    };
    let mut headers = dwarf.units();
    let mut first_error = None;
    while let Some(header) = headers.next()? {
        let Some(offset) = header.offset().as_debug_info_offset() else {
            continue;
        };
        let ui = index.units.len() as u32;
        index.units.push(offset.0);
        if ui == 0 {
            index.pointer_size = u64::from(header.address_size());
        }
        // One unit ri cannot read does not hide the others.
        let res = dwarf
            .unit(header)
            .and_then(|unit| scan_unit(dwarf, &unit, ui, &mut index));
        if let Err(e) = res {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) if index.types.is_empty() && index.functions.is_empty() => Err(e),
        _ => Ok(index),
    }
}

/// The attributes the index reads.
#[derive(Default)]
struct Flags<'d> {
    name: Option<AttributeValue<R<'d>>>,
    declaration: bool,
    external: bool,
    location: Option<AttributeValue<R<'d>>>,
    specification: Option<usize>,
}

fn scan_unit(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    ui: u32,
    index: &mut Index,
) -> gimli::Result<()> {
    let mut entries = unit.entries_raw(None)?;
    // Entries deeper than this are skipped; entries deeper than `in_fn`
    // are inside a function (their variables rank as function statics).
    let mut skip: Option<isize> = None;
    let mut in_fn: Option<isize> = None;
    let mut var_decls: HashMap<usize, String> = HashMap::new();
    while !entries.is_empty() {
        let depth = entries.next_depth();
        let at = entries.next_offset();
        let Some(abbrev) = entries.read_abbreviation()? else {
            continue;
        };
        if skip.is_some_and(|d| depth > d) {
            entries.skip_attributes(abbrev.attributes())?;
            continue;
        }
        skip = None;
        if in_fn.is_some_and(|d| depth <= d) {
            in_fn = None;
        }
        let tag = abbrev.tag();
        let wanted = matches!(
            tag,
            dw::DW_TAG_base_type
                | dw::DW_TAG_typedef
                | dw::DW_TAG_structure_type
                | dw::DW_TAG_class_type
                | dw::DW_TAG_union_type
                | dw::DW_TAG_enumeration_type
                | dw::DW_TAG_subprogram
                | dw::DW_TAG_variable
        );
        if !wanted {
            entries.skip_attributes(abbrev.attributes())?;
        } else {
            let mut f = Flags::default();
            for spec in abbrev.attributes() {
                let attr = entries.read_attribute(*spec)?;
                let v = attr.value();
                match attr.name() {
                    dw::DW_AT_name => f.name = Some(v),
                    dw::DW_AT_declaration => {
                        f.declaration = matches!(v, AttributeValue::Flag(true))
                    }
                    dw::DW_AT_external => f.external = matches!(v, AttributeValue::Flag(true)),
                    dw::DW_AT_location => f.location = Some(v),
                    dw::DW_AT_specification | dw::DW_AT_abstract_origin => {
                        f.specification = global_ref(unit, v)
                    }
                    _ => {}
                }
            }
            let name = f
                .name
                .and_then(|v| dwarf.attr_string(unit, v).ok())
                .map(|s| s.to_string_lossy().into_owned());
            let off = at.to_debug_info_offset(&unit.header).map_or(0, |o| o.0);
            record(
                dwarf,
                unit,
                ui,
                tag,
                name,
                &f,
                off,
                in_fn.is_some(),
                &mut var_decls,
                index,
            );
        }
        if abbrev.has_children() {
            if leaf(tag) {
                skip = Some(depth);
            } else if tag == dw::DW_TAG_subprogram && in_fn.is_none() {
                in_fn = Some(depth);
            }
        }
    }
    Ok(())
}

/// Adds one named DIE to the index.
#[allow(clippy::too_many_arguments)]
fn record(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    ui: u32,
    tag: gimli::DwTag,
    name: Option<String>,
    f: &Flags<'_>,
    off: usize,
    in_fn: bool,
    var_decls: &mut HashMap<usize, String>,
    index: &mut Index,
) {
    let complete = !f.declaration;
    let ty = |kind| TypeEntry {
        unit: ui,
        kind,
        complete,
    };
    match tag {
        dw::DW_TAG_base_type => {
            if let Some(n) = name {
                let key = base_key(&n).unwrap_or(n);
                index.add_type(key, ty(Kind::Base));
            }
        }
        dw::DW_TAG_typedef => {
            if let Some(n) = name {
                index.add_type(n, ty(Kind::Typedef));
            }
        }
        dw::DW_TAG_structure_type | dw::DW_TAG_class_type => {
            if let Some(n) = name {
                index.add_type(format!("struct {n}"), ty(Kind::Tag));
            }
        }
        dw::DW_TAG_union_type => {
            if let Some(n) = name {
                index.add_type(format!("union {n}"), ty(Kind::Tag));
            }
        }
        dw::DW_TAG_enumeration_type => {
            if let Some(n) = name {
                index.add_type(format!("enum {n}"), ty(Kind::Tag));
            }
        }
        dw::DW_TAG_subprogram => {
            if let Some(n) = name {
                index.add_function(
                    n,
                    FunctionEntry {
                        unit: ui,
                        definition: complete,
                    },
                );
            }
        }
        dw::DW_TAG_variable => {
            if f.declaration {
                if let Some(n) = name {
                    var_decls.insert(off, n);
                }
                return;
            }
            let Some(addr) = f
                .location
                .as_ref()
                .and_then(|l| static_address(dwarf, unit, l))
            else {
                return;
            };
            let rank = match (in_fn, f.external) {
                (false, true) => 0,
                (false, false) => 1,
                (true, _) => 2,
            };
            let name = name.or_else(|| var_decls.get(&f.specification?).cloned());
            if let Some(n) = name {
                index.add_variable(
                    n,
                    VariableEntry {
                        unit: ui,
                        rank,
                        addr,
                    },
                );
            }
        }
        _ => {}
    }
}
