//! Reading DWARF attribute forms and expressions into plain values:
//! references, encodings, member offsets, static addresses,
//! bit offsets, base type names; and a file's DWARF sections.

use std::{borrow::Cow, collections::HashMap, path::Path};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, constants as dw};
use object::{Object, ObjectSection};

use super::{DwarfError, Encoding};

/// DWARF bytes as gimli reads them.
pub(super) type R<'d> = EndianSlice<'d, RunTimeEndian>;
/// A compilation unit.
pub(super) type Unit<'d> = gimli::Unit<R<'d>>;

/// A DWARF file's sections, borrowed from its bytes (or decompressed).
pub(super) type Sections<'d> = gimli::DwarfSections<Cow<'d, [u8]>>;

/// Decompressed copies of a file's compressed DWARF sections (`-gz`,
/// `.zdebug_*`), by their `.debug_*` name: made once per file, not per load.
pub(super) fn inflate(data: &[u8]) -> HashMap<String, Vec<u8>> {
    let Ok(file) = object::File::parse(data) else {
        return HashMap::new();
    };
    file.sections()
        .filter_map(|s| {
            let name = s.name().ok()?;
            let name = match name.strip_prefix(".zdebug_") {
                Some(rest) => format!(".debug_{rest}"),
                None if name.starts_with(".debug_") => name.to_string(),
                None => return None,
            };
            match s.uncompressed_data().ok()? {
                Cow::Owned(v) => Some((name, v)),
                Cow::Borrowed(_) => None,
            }
        })
        .collect()
}

/// The sections of a DWARF file and its byte order; compressed sections
/// come from `inflated` when it has them.
pub(super) fn sections<'d>(
    path: &Path,
    data: &'d [u8],
    inflated: &'d HashMap<String, Vec<u8>>,
) -> Result<(Sections<'d>, RunTimeEndian), DwarfError> {
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
    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'d, [u8]>, DwarfError> {
        if let Some(v) = inflated.get(id.name()) {
            return Ok(Cow::Borrowed(&v[..]));
        }
        match file.section_by_name(id.name()) {
            Some(s) => s
                .uncompressed_data()
                .map_err(|e| malformed(format!("{}: {e}", id.name()))),
            None => Ok(Cow::Borrowed(&[][..])),
        }
    })?;
    Ok((sections, endian))
}

/// A reference attribute as a `.debug_info` offset.
pub(super) fn global_ref(unit: &Unit<'_>, v: AttributeValue<R<'_>>) -> Option<usize> {
    match v {
        AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header).map(|o| o.0),
        AttributeValue::DebugInfoRef(o) => Some(o.0),
        _ => None,
    }
}

pub(super) fn encoding(e: Option<gimli::DwAte>) -> Encoding {
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
pub(super) fn constant_location(v: &AttributeValue<R<'_>>, enc: gimli::Encoding) -> Option<u64> {
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
pub(super) fn static_address(
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

/// DWARF 4's `DW_AT_bit_offset` counts from the most significant bit of
/// the storage unit; the result counts bits from the start of the struct,
/// least significant first (little-endian).
pub(super) fn big_endian_bits(location: u64, storage: u64, bit_offset: i64, bit_size: u64) -> u64 {
    let from_lsb = storage as i64 * 8 - bit_offset - bit_size as i64;
    (location as i64 * 8 + from_lsb).max(0) as u64
}

pub(super) fn sign_extend(v: u64, width: u8) -> i64 {
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
