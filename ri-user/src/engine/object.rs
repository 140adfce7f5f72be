//! ri's eBPF object loaded without aya's `Ebpf`: parsed once, its maps
//! created at the sizes a command asks for, each program loaded only when
//! first attached and for the attach type used. (aya's loader first reads
//! and parses the kernel's 5 MB BTF, a quarter of a one-probe run; ri's
//! programs have no CO-RE relocations, so they need none of it.)

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
};

use aya::maps::{Map, MapData};

use super::sys::{self, SysError};

/// Errors preparing the object or creating its maps.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object could not be parsed, patched or relocated.
    #[error("preparing ri's eBPF object: {0}")]
    Prepare(String),
    /// Creating a map failed.
    #[error("creating map {name}: {reason}")]
    Map {
        /// Map name.
        name: String,
        /// Why.
        reason: String,
        /// The error number, to tell a privilege problem apart.
        errno: Option<i32>,
    },
    /// A raw bpf command failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// The object, relocated against its created maps.
pub struct Object {
    obj: aya_obj::Object,
    btf: OwnedFd,
    license: CString,
    maps: HashMap<String, Map>,
}

/// The descriptor of a map ri's object uses (the kinds it declares).
pub fn map_fd(map: &Map) -> Option<BorrowedFd<'_>> {
    match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::PerCpuHashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::RingBuf(d)
        | Map::StackTraceMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::Stack(d) => Some(d.fd().as_fd()),
        _ => None,
    }
}

/// The error number behind a map error, if any.
fn map_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        cur = err.source();
    }
    None
}

impl Object {
    /// Parses `bytes`, sets the global variables `globals` (name, value),
    /// creates every map (`max_entries` from `sizes` where named) and
    /// relocates the programs against them.
    pub fn load(
        bytes: &[u8],
        globals: &[(&str, &[u8])],
        sizes: &[(&str, u32)],
    ) -> Result<Self, ObjectError> {
        let prep = |e: &dyn std::fmt::Display| ObjectError::Prepare(e.to_string());
        let mut obj = aya_obj::Object::parse(bytes).map_err(|e| prep(&e))?;
        obj.patch_map_data(globals.iter().map(|(n, v)| (*n, (*v, true))).collect())
            .map_err(|e| prep(&e))?;
        // Every BTF feature is there on kernels that have bpf_loop, which
        // ri's programs need anyway.
        let all = aya_obj::btf::BtfFeatures::new(true, true, true, true, true, true, true, true);
        let btf = match obj.fixup_and_sanitize_btf(&all).map_err(|e| prep(&e))? {
            Some(btf) => sys::load_btf(&btf.to_bytes())?,
            None => return Err(ObjectError::Prepare("the object has no BTF".into())),
        };
        let defs: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
        let mut maps = HashMap::new();
        for (name, mut def) in defs.iter().cloned() {
            if let Some((_, n)) = sizes.iter().find(|(s, _)| *s == name) {
                def.set_max_entries(*n);
            }
            let kind = def.section_kind();
            let data = def.data().to_vec();
            let fail = |e: &(dyn std::error::Error + 'static)| ObjectError::Map {
                name: name.clone(),
                reason: super::chain(e),
                errno: map_errno(e),
            };
            let created = MapData::create(def, &name, Some(btf.as_fd())).map_err(|e| fail(&e))?;
            use aya_obj::EbpfSectionKind as K;
            if matches!(kind, K::Data | K::Rodata | K::Bss) {
                sys::set_global_data(created.fd().as_fd(), &data, kind == K::Rodata)?;
            }
            let map = Map::from_map_data(created).map_err(|e| fail(&e))?;
            maps.insert(name, map);
        }
        let mut with_fds: Vec<(&str, RawFd, &aya_obj::Map)> = Vec::new();
        for (name, def) in &defs {
            let fd = maps
                .get(name)
                .and_then(map_fd)
                .ok_or_else(|| ObjectError::Prepare(format!("map {name} unavailable")))?;
            with_fds.push((name.as_str(), fd.as_raw_fd(), def));
        }
        let text: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_maps(with_fds.into_iter(), &text)
            .map_err(|e| prep(&e))?;
        obj.relocate_calls(&text).map_err(|e| prep(&e))?;
        let license = CString::new(obj.license.as_bytes()).map_err(|e| prep(&e))?;
        Ok(Object {
            obj,
            btf,
            license,
            maps,
        })
    }

    /// Loads uprobe program `name` for `attach_type` (0: perf events).
    pub fn load_program(&self, name: &str, attach_type: u32) -> Result<OwnedFd, ObjectError> {
        self.load_typed(name, sys::BPF_PROG_TYPE_KPROBE, attach_type)
    }

    /// Loads program `name` as `prog_type` for `attach_type`.
    pub fn load_typed(
        &self,
        name: &str,
        prog_type: u32,
        attach_type: u32,
    ) -> Result<OwnedFd, ObjectError> {
        let prog = self
            .obj
            .programs
            .get(name)
            .ok_or_else(|| ObjectError::Prepare(format!("program {name} missing")))?;
        let func = self
            .obj
            .functions
            .get(&prog.function_key())
            .ok_or_else(|| ObjectError::Prepare(format!("program {name} has no code")))?;
        Ok(sys::load_program(
            name,
            func,
            &self.license,
            self.btf.as_fd(),
            prog_type,
            attach_type,
        )?)
    }

    /// A map by name.
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.get(name)
    }

    /// A map by name, to write.
    pub fn map_mut(&mut self, name: &str) -> Option<&mut Map> {
        self.maps.get_mut(name)
    }

    /// Takes a map out (the ring buffer, owned by its reader).
    pub fn take_map(&mut self, name: &str) -> Option<Map> {
        self.maps.remove(name)
    }
}
