//! Loading a [`DebugInfo`] lazily: the name index (from the cache, else a
//! quick scan) says which compilation units define a name; a lookup parses
//! those units, the units their types refer to and the units defining the
//! structs they only declare, then adds them to the arena.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, RwLock},
};

use gimli::EndianSlice;
use object::{Object, ObjectSection};

use super::{
    DebugInfo, DwarfError, TypeId, cache, forms,
    index::{self, Index},
    parse::Builder,
    part::{OffsetMap, Part},
};

/// The DWARF file's bytes, its index, and which units are loaded.
pub(super) struct Source {
    data: super::load::Data,
    /// Compressed sections, decompressed on the first parse.
    inflated: OnceLock<HashMap<String, Vec<u8>>>,
    pub(super) index: Index,
    state: Mutex<State>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("bytes", &self.data.len())
            .field("units", &self.index.units.len())
            .finish()
    }
}

#[derive(Default)]
struct State {
    /// Units (positions in `index.units`) parsed into the arena.
    loaded: HashSet<usize>,
    /// The arena ids of the loaded type DIEs.
    offsets: OffsetMap<TypeId>,
}

/// The index of the DWARF in `data`: the cached one when its build-id,
/// size and checksum match, else a fresh scan (then saved).
fn index_of(
    path: &Path,
    data: &[u8],
    inflated: &OnceLock<HashMap<String, Vec<u8>>>,
) -> Result<Index, DwarfError> {
    let malformed = |reason: String| DwarfError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let file = object::File::parse(data).map_err(|e| malformed(e.to_string()))?;
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
    // Unit offsets count in the decompressed section.
    let info_size = file
        .section_by_name(".debug_info")
        .and_then(|s| s.compressed_file_range().ok())
        .map_or(0, |r| r.uncompressed_size);
    if let Some(id) = &build_id
        && let Some(index) = cache::read(id, info_size)
    {
        return Ok(index);
    }
    let inflated = inflated.get_or_init(|| forms::inflate(data));
    let (sections, endian) = forms::sections(path, data, inflated)?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let index = index::scan(&dwarf).map_err(|e| malformed(e.to_string()))?;
    if let Some(id) = &build_id {
        cache::write(id, info_size, &index);
    }
    Ok(index)
}

impl DebugInfo {
    /// A handle on the DWARF in `data` (from `path`) with nothing parsed yet.
    pub(super) fn open(
        path: PathBuf,
        binary: &Path,
        data: super::load::Data,
    ) -> Result<Self, DwarfError> {
        let inflated = OnceLock::new();
        let index = index_of(&path, &data, &inflated)?;
        let info = DebugInfo {
            path,
            binary: binary.to_path_buf(),
            types: boxcar::Vec::new(),
            incomplete: RwLock::default(),
            signatures: RwLock::default(),
            names: RwLock::default(),
            functions: RwLock::default(),
            function_list: boxcar::Vec::new(),
            variables: RwLock::default(),
            pointer_size: index.pointer_size,
            source: Source {
                data,
                inflated,
                index,
                state: Mutex::default(),
            },
        };
        info.types.push(super::Type::Void);
        Ok(info)
    }

    /// Parses every unit (what a full scan of the types needs).
    pub fn load_all(&self) {
        self.load_units((0..self.source.index.units.len()).collect());
    }

    /// Loads the unit defining a type name key (`struct x`, `x`).
    pub(super) fn ensure_type(&self, key: &str) {
        if let Some(e) = self.source.index.types.get(key) {
            self.load_units(vec![e.unit as usize]);
        }
    }

    pub(super) fn ensure_function(&self, name: &str) {
        if let Some(e) = self.source.index.functions.get(name) {
            self.load_units(vec![e.unit as usize]);
        }
    }

    pub(super) fn ensure_variable(&self, name: &str) {
        if let Some(e) = self.source.index.variables.get(name) {
            self.load_units(vec![e.unit as usize]);
        }
    }

    /// Parses `want` and what they need, then adds it all to the arena.
    /// Units that fail to parse are skipped, as a full parse would.
    fn load_units(&self, mut want: Vec<usize>) {
        let mut state = self.source.state.lock().unwrap_or_else(|e| e.into_inner());
        want.retain(|u| !state.loaded.contains(u));
        if want.is_empty() {
            return;
        }
        let index = &self.source.index;
        let data = &self.source.data;
        let inflated = self.source.inflated.get_or_init(|| forms::inflate(data));
        let Ok((sections, endian)) = forms::sections(&self.path, data, inflated) else {
            state.loaded.extend(want);
            return;
        };
        let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
        let mut b = Builder::new(&dwarf, &self.types, &state.offsets);
        let mut done: HashSet<usize> = HashSet::new();
        while !want.is_empty() {
            for u in std::mem::take(&mut want) {
                if state.loaded.contains(&u) || !done.insert(u) {
                    continue;
                }
                let _ = b.walk_unit(index.units[u], u);
            }
            let open = |u: &usize| !state.loaded.contains(u) && !done.contains(u);
            for off in b.referenced() {
                if let Some(u) = index.unit_of(off).filter(open) {
                    want.push(u);
                }
            }
            for key in b.declared() {
                if let Some(e) = index.types.get(&key).filter(|e| e.complete)
                    && open(&(e.unit as usize))
                {
                    want.push(e.unit as usize);
                }
            }
            want.sort_unstable();
            want.dedup();
        }
        let part = b.finish(
            |key| {
                let names = self.names.read().unwrap_or_else(|e| e.into_inner());
                let id = *names.get(key)?;
                let incomplete = self.incomplete.read().unwrap_or_else(|e| e.into_inner());
                (!incomplete.contains(&id)).then_some(id)
            },
            |key| index.types.get(key).map(|e| e.unit as usize),
        );
        state.loaded.extend(done);
        self.publish(part, &mut state.offsets);
    }

    /// Adds a parsed part: types (in id order), then names, functions and
    /// variables by the full parse's rules (complete types over declarations,
    /// definitions over declarations, better-ranked variables).
    fn publish(&self, part: Part, offsets: &mut OffsetMap<TypeId>) {
        let Part {
            base,
            types,
            incomplete,
            signatures,
            names,
            functions,
            variables,
            by_offset,
        } = part;
        debug_assert_eq!(self.types.count(), base);
        for t in types {
            self.types.push(t);
        }
        offsets.extend(by_offset);
        let mut inc = self.incomplete.write().unwrap_or_else(|e| e.into_inner());
        inc.extend(incomplete);
        drop(inc);
        self.signatures
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(signatures);
        let mut map = self.names.write().unwrap_or_else(|e| e.into_inner());
        let incomplete = self.incomplete.read().unwrap_or_else(|e| e.into_inner());
        for (key, id, complete) in names {
            let replace = match map.get(&key) {
                None => true,
                Some(old) => complete && incomplete.contains(old),
            };
            if replace {
                map.insert(key, id);
            }
        }
        drop(incomplete);
        drop(map);
        let mut fns = self.functions.write().unwrap_or_else(|e| e.into_inner());
        let index = &self.source.index;
        // Same-named statics: only the unit the index names counts.
        for (unit, definition, f) in functions {
            if index
                .functions
                .get(&f.name)
                .is_some_and(|e| e.unit as usize != unit)
            {
                continue;
            }
            let replace = match fns.get(&f.name) {
                None => true,
                Some((had, _)) => definition && !had,
            };
            if replace {
                let name = f.name.clone();
                let i = self.function_list.push(f);
                fns.insert(name, (definition, i));
            }
        }
        drop(fns);
        let mut vars = self.variables.write().unwrap_or_else(|e| e.into_inner());
        for (name, unit, rank, addr, ty) in variables {
            if index
                .variables
                .get(&name)
                .is_some_and(|e| e.unit as usize != unit)
            {
                continue;
            }
            if vars.get(&name).is_none_or(|(r, _, _)| rank < *r) {
                vars.insert(name, (rank, addr, ty));
            }
        }
    }
}
