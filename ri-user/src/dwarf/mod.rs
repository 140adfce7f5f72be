//! DWARF types: a binary's structs, unions, enums, typedefs, functions and
//! global variables, in an arena that the rest of ri queries by name
//! (`peek`, `types`, typed captures). `load` finds the debug info (the file
//! itself, its debuglink or build-id file); `index` says which compilation
//! unit defines each name (`cache` keeps it per build-id); `store` parses
//! units as lookups need them, with `parse` (gimli) and `forms`; `value`
//! renders bytes of a type as a tree, text or JSON.

mod cache;
mod forms;
mod index;
mod load;
mod parse;
mod part;
mod store;
#[cfg(test)]
mod tests;
pub mod value;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{PoisonError, RwLock, RwLockReadGuard},
};

use crate::elf::glob_match;

/// Errors loading debug info or looking things up in it.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    /// The binary or a debug file is missing, unreadable or not ELF.
    #[error(transparent)]
    File(#[from] crate::elf::FileError),
    /// Neither the binary nor a separate debug file has DWARF.
    #[error("no debug info for {path}: {hint}")]
    NoDebugInfo {
        /// The binary.
        path: PathBuf,
        /// Where ri looked and how to get debug info.
        hint: String,
    },
    /// The DWARF is malformed or uses something ri cannot read.
    #[error("bad DWARF in {path}: {reason}")]
    Malformed {
        /// The file the DWARF came from.
        path: PathBuf,
        /// What gimli said.
        reason: String,
    },
    /// No type of that name.
    #[error("unknown type '{name}' in {path}{}", suggest(.close))]
    UnknownType {
        /// What was asked for.
        name: String,
        /// The file searched.
        path: PathBuf,
        /// Close names that do exist.
        close: Vec<String>,
    },
    /// A glob that matched no type.
    #[error("no type matches '{pattern}' in {path}{}", suggest(.close))]
    NoMatchingType {
        /// The glob.
        pattern: String,
        /// The file searched.
        path: PathBuf,
        /// Close names that do exist.
        close: Vec<String>,
    },
    /// No global or static variable of that name.
    #[error("unknown variable '{name}' in {path}{}", suggest(.close))]
    UnknownVariable {
        /// What was asked for.
        name: String,
        /// The file searched.
        path: PathBuf,
        /// Close names that do exist.
        close: Vec<String>,
    },
    /// A member that the struct or union does not have.
    #[error("{ty} has no member '{member}' (members: {})", .members.join(", "))]
    UnknownMember {
        /// The struct's C name.
        ty: String,
        /// What was asked for.
        member: String,
        /// The members it has.
        members: Vec<String>,
    },
    /// A member asked of something that is not a struct or union.
    #[error("'{ty}' is not a struct or union, it has no member '{member}'")]
    NotAStruct {
        /// The type's C name.
        ty: String,
        /// What was asked for.
        member: String,
    },
}

/// ` (did you mean a, b?)`, or nothing without close names.
pub(crate) fn suggest(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", close.join(", "))
    }
}

/// The name-index key of a named struct, union or enum: `struct foo`.
pub(crate) fn tag_key(ty: &Type) -> Option<String> {
    match ty {
        Type::Struct {
            kind: StructKind::Struct,
            name: Some(n),
            ..
        } => Some(format!("struct {n}")),
        Type::Struct {
            kind: StructKind::Union,
            name: Some(n),
            ..
        } => Some(format!("union {n}")),
        Type::Enum { name: Some(n), .. } => Some(format!("enum {n}")),
        _ => None,
    }
}

/// Index of a type in a [`DebugInfo`]'s arena.
pub type TypeId = usize;

/// How a base type's bytes are interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Two's complement integer.
    Signed,
    /// Unsigned integer.
    Unsigned,
    /// `char`, `signed char`.
    SignedChar,
    /// `unsigned char`.
    UnsignedChar,
    /// `_Bool`.
    Bool,
    /// IEEE float (4, 8) or x87 extended (16).
    Float,
}

/// Struct or union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructKind {
    /// `struct` (or C++ `class`).
    Struct,
    /// `union`.
    Union,
}

/// A type qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualifier {
    /// `const`.
    Const,
    /// `volatile`.
    Volatile,
    /// `restrict`.
    Restrict,
    /// `_Atomic`.
    Atomic,
}

/// A member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `None` for an anonymous struct or union member.
    pub name: Option<String>,
    /// Its type.
    pub ty: TypeId,
    /// Bytes from the start of the struct.
    pub offset: u64,
    /// For a bitfield: first bit, counted from the least significant bit of
    /// the byte at `offset` (little-endian).
    pub bit_offset: Option<u32>,
    /// For a bitfield: its width in bits.
    pub bit_size: Option<u32>,
}

/// A type, as the arena stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// `void` (and anything ri does not model).
    Void,
    /// An integer, character, boolean or floating type.
    Base {
        /// DWARF's name (`long unsigned int`).
        name: String,
        /// Bytes.
        size: u64,
        /// Interpretation.
        encoding: Encoding,
    },
    /// A pointer; `None` is `void *`.
    Pointer {
        /// What it points at.
        pointee: Option<TypeId>,
    },
    /// A struct or union.
    Struct {
        /// Which one.
        kind: StructKind,
        /// Tag; `None` when anonymous.
        name: Option<String>,
        /// Bytes.
        size: u64,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// An array; `count` is `None` for a flexible array member.
    Array {
        /// Element type (an array again for each further dimension).
        elem: TypeId,
        /// Number of elements.
        count: Option<u64>,
    },
    /// An enumeration.
    Enum {
        /// Tag; `None` when anonymous.
        name: Option<String>,
        /// Bytes.
        size: u64,
        /// Whether the values are signed.
        signed: bool,
        /// Enumerators in declaration order.
        variants: Vec<(String, i64)>,
    },
    /// A typedef; `None` is `typedef void name`.
    Typedef {
        /// The new name.
        name: String,
        /// The type it names.
        ty: Option<TypeId>,
    },
    /// A qualified type; `None` is qualified `void`.
    Qualified {
        /// The qualifier.
        qual: Qualifier,
        /// The qualified type.
        ty: Option<TypeId>,
    },
    /// A function (subroutine) type: what function pointers point at.
    Function,
}

/// A function's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Its name.
    pub name: String,
    /// Formal parameters in order.
    pub params: Vec<Param>,
    /// Return type; `None` is `void`.
    pub ret: Option<TypeId>,
}

/// A formal parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name (`argN` when the DWARF has none).
    pub name: String,
    /// Its type.
    pub ty: TypeId,
}

/// Where a member is, as [`DebugInfo::member`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRef {
    /// The member's type.
    pub ty: TypeId,
    /// Bytes from the start of the outer struct.
    pub offset: u64,
    /// For a bitfield: first bit, from the least significant bit of the byte
    /// at `offset`.
    pub bit_offset: Option<u32>,
    /// For a bitfield: width in bits.
    pub bit_size: Option<u32>,
}

/// Parameter and return types of a function type, for spelling it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signature {
    pub(crate) ret: Option<TypeId>,
    pub(crate) params: Vec<TypeId>,
    pub(crate) variadic: bool,
}

/// The debug info of one binary: every type, function and global variable,
/// parsed a compilation unit at a time as lookups need them.
#[derive(Debug)]
pub struct DebugInfo {
    /// The file the DWARF came from.
    path: PathBuf,
    /// The binary asked for.
    binary: PathBuf,
    /// Append-only, so references handed out stay valid as units load.
    types: boxcar::Vec<Type>,
    /// Struct/union/enum declarations no CU defines.
    incomplete: RwLock<HashSet<TypeId>>,
    /// Function types' signatures.
    signatures: RwLock<HashMap<TypeId, Signature>>,
    /// `struct x`, `union x`, `enum x`, typedef `x`, canonical base names.
    names: RwLock<HashMap<String, TypeId>>,
    /// Name → (is a definition, position in `function_list`).
    functions: RwLock<HashMap<String, (bool, usize)>>,
    function_list: boxcar::Vec<FunctionInfo>,
    /// Name → (rank, address, type).
    variables: RwLock<HashMap<String, (u8, u64, TypeId)>>,
    pointer_size: u64,
    source: store::Source,
}

/// A read guard, whether or not a writer panicked.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

impl DebugInfo {
    /// Debug info for a binary: the file itself, else its `.gnu_debuglink`
    /// file (same directory, `.debug/`, `/usr/lib/debug/<dir>/`), else
    /// `/usr/lib/debug/.build-id/xx/yyyy.debug`. Only the name index is
    /// read here (from `$XDG_CACHE_HOME/ri` when this build's is there);
    /// units are parsed when a lookup needs them.
    pub fn load(binary: &Path) -> Result<DebugInfo, DwarfError> {
        let (path, data) = load::find(binary)?;
        DebugInfo::open(path, binary, data)
    }

    /// A looked-up name's type id.
    fn name_id(&self, key: &str) -> Option<TypeId> {
        if let Some(&id) = read(&self.names).get(key) {
            return Some(id);
        }
        self.ensure_type(key);
        read(&self.names).get(key).copied()
    }

    /// Whether the index knows this type name key.
    fn has_name(&self, key: &str) -> bool {
        self.source.index.types.contains_key(key) || read(&self.names).contains_key(key)
    }

    /// Type name keys of structs, unions, enums and typedefs.
    fn named_type_keys(&self) -> impl Iterator<Item = &str> {
        self.source
            .index
            .types
            .iter()
            .filter(|(_, e)| e.kind != index::Kind::Base)
            .map(|(k, _)| k.as_str())
    }

    /// Like [`DebugInfo::load`], but `None` for a binary without debug
    /// info (without looking up how to get it): for searching every file a
    /// process maps.
    pub fn load_if_any(binary: &Path) -> Result<Option<DebugInfo>, DwarfError> {
        let Ok((path, data)) = load::locate(binary)? else {
            return Ok(None);
        };
        DebugInfo::open(path, binary, data).map(Some)
    }

    /// The file the DWARF came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The binary this debug info describes (as given to [`DebugInfo::load`]).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// A function's formal parameters in order, and its return type.
    pub fn function(&self, name: &str) -> Option<&FunctionInfo> {
        self.ensure_function(name);
        let (_, i) = *read(&self.functions).get(name)?;
        self.function_list.get(i)
    }

    /// A type by C name: `struct m0_fom`, `m0_fom` (struct, union or enum tag,
    /// or typedef), `int`, `unsigned long`, `m0_time_t`, and pointers to
    /// those (`struct m0_fom *`) when the binary has such a pointer type.
    pub fn type_by_name(&self, name: &str) -> Option<TypeId> {
        let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
        let stars = name.len() - name.trim_end_matches(['*', ' ']).len();
        if stars > 0 {
            let base = name.trim_end_matches(['*', ' ']);
            let levels = name[base.len()..].matches('*').count();
            let mut id = self.type_by_name(base)?;
            for _ in 0..levels {
                id = self.pointer_to(id)?;
            }
            return Some(id);
        }
        for kw in ["struct ", "union ", "enum "] {
            if name.starts_with(kw) {
                return self.name_id(&name);
            }
        }
        if let Some(tag) = name.strip_prefix("class ") {
            return self.name_id(&format!("struct {tag}"));
        }
        if self.has_name(&name) {
            return self.name_id(&name);
        }
        if let Some(key) = forms::base_key(&name)
            && self.has_name(&key)
        {
            return self.name_id(&key);
        }
        ["struct", "union", "enum"]
            .iter()
            .map(|kw| format!("{kw} {name}"))
            .find(|k| self.has_name(k))
            .and_then(|k| self.name_id(&k))
    }

    /// Like [`DebugInfo::type_by_name`], with an error that suggests close
    /// names.
    pub fn resolve_type(&self, name: &str) -> Result<TypeId, DwarfError> {
        self.type_by_name(name)
            .ok_or_else(|| DwarfError::UnknownType {
                name: name.to_string(),
                path: self.binary.clone(),
                close: self.close_type_names(name),
            })
    }

    /// A pointer type whose pointee is the type `id` (or one of the same
    /// name from another compilation unit).
    fn pointer_to(&self, id: TypeId) -> Option<TypeId> {
        let want = self.type_name(id);
        self.types.iter().find_map(|(i, t)| match t {
            Type::Pointer { pointee: Some(p) } if *p == id || self.type_name(*p) == want => Some(i),
            Type::Pointer { pointee: None } if want == "void" => Some(i),
            _ => None,
        })
    }

    /// Names of the structs, unions, enums (`struct x`, ...) and typedefs
    /// (`x`) whose name or tag matches a glob, sorted.
    pub fn type_names(&self, pattern: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .named_type_keys()
            .filter(|k| glob_match(pattern, k) || glob_match(pattern, bare(k)))
            .map(str::to_string)
            .collect();
        out.sort_by(|a, b| bare(a).cmp(bare(b)).then(a.cmp(b)));
        out
    }

    /// Up to three type names close to `name` (for "did you mean").
    pub fn close_type_names(&self, name: &str) -> Vec<String> {
        let want = bare(name.trim_end_matches(['*', ' '])).replace(['*', '?'], "");
        close(&want, self.named_type_keys())
    }

    /// A global or static variable: its address (file virtual address) and
    /// type.
    pub fn variable(&self, name: &str) -> Option<(u64, TypeId)> {
        self.ensure_variable(name);
        read(&self.variables).get(name).map(|&(_, a, t)| (a, t))
    }

    /// The variable whose address is `addr` (for ELF aliases such as
    /// `program_invocation_short_name` of `__progname`).
    pub fn variable_at(&self, addr: u64) -> Option<(&str, TypeId)> {
        let name = self
            .source
            .index
            .variables
            .iter()
            .filter(|(_, e)| e.addr == addr)
            .map(|(n, _)| n.as_str())
            .min()?;
        let (_, ty) = self.variable(name)?;
        Some((name, ty))
    }

    /// Like [`DebugInfo::variable`], with an error that suggests close names.
    pub fn resolve_variable(&self, name: &str) -> Result<(u64, TypeId), DwarfError> {
        self.variable(name)
            .ok_or_else(|| DwarfError::UnknownVariable {
                name: name.to_string(),
                path: self.binary.clone(),
                close: close(name, self.source.index.variables.keys().map(|k| k.as_str())),
            })
    }

    /// The type with this id.
    pub fn ty(&self, id: TypeId) -> &Type {
        &self.types[id]
    }

    /// Strips typedefs and const/volatile/restrict/atomic qualifiers (a
    /// typedef or qualifier of `void` is returned as is).
    pub fn strip(&self, id: TypeId) -> TypeId {
        let mut id = id;
        for _ in 0..64 {
            match &self.types[id] {
                Type::Typedef { ty: Some(t), .. } | Type::Qualified { ty: Some(t), .. } => id = *t,
                _ => return id,
            }
        }
        id
    }

    /// Whether the type is a struct, union or enum that no compilation unit
    /// defines (only `struct foo;` was seen).
    pub fn is_incomplete(&self, id: TypeId) -> bool {
        read(&self.incomplete).contains(&self.strip(id))
    }

    /// Size in bytes; `None` for `void`, functions, flexible arrays.
    pub fn size_of(&self, id: TypeId) -> Option<u64> {
        let id = self.strip(id);
        match &self.types[id] {
            Type::Base { size, .. } => Some(*size),
            Type::Pointer { .. } => Some(self.pointer_size),
            Type::Struct { size, .. } | Type::Enum { size, .. } => {
                (!read(&self.incomplete).contains(&id)).then_some(*size)
            }
            Type::Array { elem, count } => Some(self.size_of(*elem)?.checked_mul((*count)?)?),
            Type::Void | Type::Function | Type::Typedef { .. } | Type::Qualified { .. } => None,
        }
    }

    /// Bytes of a pointer in this binary.
    pub fn pointer_size(&self) -> u64 {
        self.pointer_size
    }

    /// C spelling: `struct m0_fop *`, `uint64_t`, `int[4]`, `int (*)(int)`.
    pub fn type_name(&self, id: TypeId) -> String {
        self.declaration(id, "")
    }

    /// A C declaration of `name` with type `id`: `char name[16]`,
    /// `int (*cb)(int)`, `struct node *next`.
    pub fn declaration(&self, id: TypeId, name: &str) -> String {
        self.spell(Some(id), name.to_string(), 0)
    }

    /// Composes a C declarator the way C reads it: the base type on the
    /// left, pointers, arrays and parameter lists around `inner`.
    fn spell(&self, id: Option<TypeId>, inner: String, depth: u32) -> String {
        let join = |base: &str, inner: &str| {
            if inner.is_empty() {
                base.to_string()
            } else if inner.starts_with('[') {
                format!("{base}{inner}")
            } else {
                format!("{base} {inner}")
            }
        };
        let Some(id) = id else {
            return join("void", &inner);
        };
        if depth > 32 {
            return join("...", &inner);
        }
        match &self.types[id] {
            Type::Void => join("void", &inner),
            Type::Base { name, .. } | Type::Typedef { name, .. } => join(name, &inner),
            Type::Struct { kind, name, .. } => {
                let kw = match kind {
                    StructKind::Struct => "struct",
                    StructKind::Union => "union",
                };
                join(
                    &format!("{kw} {}", name.as_deref().unwrap_or("{...}")),
                    &inner,
                )
            }
            Type::Enum { name, .. } => join(
                &format!("enum {}", name.as_deref().unwrap_or("{...}")),
                &inner,
            ),
            Type::Pointer { pointee } => {
                let inner = format!("*{inner}");
                let wrap = pointee
                    .is_some_and(|p| matches!(self.types[p], Type::Array { .. } | Type::Function));
                let inner = if wrap { format!("({inner})") } else { inner };
                self.spell(*pointee, inner, depth + 1)
            }
            Type::Array { elem, count } => {
                let dim = match count {
                    Some(n) => format!("[{n}]"),
                    None => "[]".to_string(),
                };
                self.spell(Some(*elem), format!("{inner}{dim}"), depth + 1)
            }
            Type::Qualified { qual, ty } => {
                let q = match qual {
                    Qualifier::Const => "const",
                    Qualifier::Volatile => "volatile",
                    Qualifier::Restrict => "restrict",
                    Qualifier::Atomic => "_Atomic",
                };
                let on_pointer = ty.is_some_and(|t| matches!(self.types[t], Type::Pointer { .. }));
                if on_pointer {
                    // `char *const p`: the qualifier binds to the pointer.
                    let inner = if inner.is_empty() {
                        q.to_string()
                    } else {
                        format!("{q} {inner}")
                    };
                    self.spell(*ty, inner, depth + 1)
                } else {
                    format!("{q} {}", self.spell(*ty, inner, depth + 1))
                }
            }
            Type::Function => {
                let sig = read(&self.signatures).get(&id).cloned().unwrap_or_default();
                let mut params: Vec<String> = sig
                    .params
                    .iter()
                    .map(|p| self.spell(Some(*p), String::new(), depth + 1))
                    .collect();
                if sig.variadic {
                    params.push("...".into());
                }
                if params.is_empty() {
                    params.push("void".into());
                }
                self.spell(
                    sig.ret,
                    format!("{inner}({})", params.join(", ")),
                    depth + 1,
                )
            }
        }
    }

    /// A member of a struct or union (after [`DebugInfo::strip`]), searching
    /// anonymous struct/union members too; the offset is from the start of
    /// the outer struct.
    pub fn member(&self, id: TypeId, name: &str) -> Result<MemberRef, DwarfError> {
        let sid = self.strip(id);
        if !matches!(self.types[sid], Type::Struct { .. }) {
            return Err(DwarfError::NotAStruct {
                ty: self.type_name(id),
                member: name.to_string(),
            });
        }
        self.find_member(sid, name, 0)
            .ok_or_else(|| DwarfError::UnknownMember {
                ty: self.type_name(id),
                member: name.to_string(),
                members: self.member_names(sid),
            })
    }

    fn find_member(&self, sid: TypeId, name: &str, base: u64) -> Option<MemberRef> {
        let Type::Struct { members, .. } = &self.types[sid] else {
            return None;
        };
        for m in members {
            match &m.name {
                Some(n) if n == name => {
                    return Some(MemberRef {
                        ty: m.ty,
                        offset: base + m.offset,
                        bit_offset: m.bit_offset,
                        bit_size: m.bit_size,
                    });
                }
                None => {
                    if let Some(r) = self.find_member(self.strip(m.ty), name, base + m.offset) {
                        return Some(r);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Names reachable as `s.name`, including those of anonymous members.
    pub fn member_names(&self, id: TypeId) -> Vec<String> {
        let mut out = Vec::new();
        if let Type::Struct { members, .. } = &self.types[self.strip(id)] {
            for m in members {
                match &m.name {
                    Some(n) => out.push(n.clone()),
                    None => out.extend(self.member_names(m.ty)),
                }
            }
        }
        out
    }

    /// The arena entry that the name index holds for a named struct, union
    /// or enum (so one type from several compilation units compares equal);
    /// other types are returned stripped.
    pub fn canonical(&self, id: TypeId) -> TypeId {
        let id = self.strip(id);
        match tag_key(&self.types[id]) {
            Some(key) => self.name_id(&key).unwrap_or(id),
            None => id,
        }
    }

    /// Number of types in the arena (every loaded compilation unit's copy).
    pub fn type_count(&self) -> usize {
        self.types.count()
    }
}

/// `struct x` → `x`; other names unchanged.
fn bare(name: &str) -> &str {
    ["struct ", "union ", "enum "]
        .iter()
        .find_map(|kw| name.strip_prefix(kw))
        .unwrap_or(name)
}

/// Up to three of `names` close to `want` by edit distance or containment.
fn close<'a>(want: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = names
        .map(|n| (strsim::levenshtein(want, bare(n)), n))
        .filter(|(d, n)| *d <= (want.len() / 3).max(2) || (want.len() > 3 && n.contains(want)))
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, n)| n.to_string())
        .collect()
}
