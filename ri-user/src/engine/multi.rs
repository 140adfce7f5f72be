//! Multi-uprobe links (`BPF_LINK_TYPE_UPROBE_MULTI`, kernel ≥ 6.6): many
//! offsets of one file attached in one syscall with a cookie each, and
//! detached together after one grace period. aya 0.14 has no API for them
//! and loads uprobe programs without the `BPF_TRACE_UPROBE_MULTI` attach
//! type the kernel demands, so ri loads a second copy of its programs
//! itself: the same object parsed by aya-obj, relocated against the maps
//! aya already created (so both copies share them), then `BPF_PROG_LOAD`.

use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::maps::Map;

/// Errors loading a multi-uprobe program or creating a link.
#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    /// The object could not be parsed or relocated.
    #[error("preparing the multi-uprobe program: {0}")]
    Prepare(String),
    /// `BPF_PROG_LOAD` failed (verifier log's last line attached).
    #[error("loading the multi-uprobe program: {0}")]
    Load(String),
    /// `BPF_LINK_CREATE` failed.
    #[error("multi-uprobe link: {0}")]
    Link(std::io::Error),
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_TRACE_UPROBE_MULTI` attach type.
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `BPF_F_UPROBE_MULTI_RETURN`: the link's sites are return probes.
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    _rest: [u32; 7],
}

/// `union bpf_attr` for `BPF_BTF_LOAD`.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    log_buf: u64,
    size: u32,
    log_size: u32,
    log_level: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with its `uprobe_multi` member.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

/// The descriptor of a map ri's object uses (the kinds it declares).
pub(super) fn map_fd(map: &Map) -> Option<BorrowedFd<'_>> {
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

/// Loads the programs `names` of `object` with the multi-uprobe attach type,
/// their map references pointing at `bpf`'s maps. Returns the fds in the
/// order of `names`.
pub fn load_programs(
    object: &[u8],
    bpf: &aya::Ebpf,
    names: &[&str],
) -> Result<Vec<OwnedFd>, MultiError> {
    let prep = |e: &dyn std::fmt::Display| MultiError::Prepare(e.to_string());
    let mut obj = aya_obj::Object::parse(object).map_err(|e| prep(&e))?;
    // The kernel wants BTF function info for programs with subprograms
    // (bpf_loop callbacks); every BTF feature is there on kernels that
    // have multi-uprobe links.
    let all = aya_obj::btf::BtfFeatures::new(true, true, true, true, true, true, true, true);
    let btf = match obj.fixup_and_sanitize_btf(&all).map_err(|e| prep(&e))? {
        Some(btf) => load_btf(&btf.to_bytes())?,
        None => return Err(MultiError::Prepare("the object has no BTF".into())),
    };
    let maps: Vec<(String, aya_obj::Map)> = obj
        .maps
        .iter()
        .map(|(n, m)| (n.clone(), m.clone()))
        .collect();
    let mut with_fds: Vec<(&str, RawFd, &aya_obj::Map)> = Vec::new();
    for (name, m) in &maps {
        let fd = bpf
            .map(name)
            .and_then(map_fd)
            .ok_or_else(|| MultiError::Prepare(format!("map {name} unavailable")))?;
        with_fds.push((name.as_str(), fd.as_raw_fd(), m));
    }
    let text: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    obj.relocate_maps(with_fds.into_iter(), &text)
        .map_err(|e| prep(&e))?;
    obj.relocate_calls(&text).map_err(|e| prep(&e))?;
    let license = CString::new(obj.license.as_bytes()).map_err(|e| prep(&e))?;
    names
        .iter()
        .map(|name| {
            let prog = obj
                .programs
                .get(*name)
                .ok_or_else(|| MultiError::Prepare(format!("program {name} missing")))?;
            let func = obj
                .functions
                .get(&prog.function_key())
                .ok_or_else(|| MultiError::Prepare(format!("program {name} has no code")))?;
            load_one(name, func, &license, btf.as_fd())
        })
        .collect()
}

/// The `bpf(2)` command `cmd` with `attr`, for the fd it returns.
fn bpf_fd<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: callers pass a zero-padded bpf_attr prefix whose pointers
    // outlive the call; the size is the struct's own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_BTF_LOAD` of the object's (sanitized) BTF.
fn load_btf(bytes: &[u8]) -> Result<OwnedFd, MultiError> {
    let attr = BtfLoadAttr {
        btf: bytes.as_ptr() as u64,
        size: bytes.len() as u32,
        ..Default::default()
    };
    bpf_fd(BPF_BTF_LOAD, &attr).map_err(|e| MultiError::Load(format!("BTF: {e}")))
}

/// `BPF_PROG_LOAD` of one kprobe-type program with the multi-uprobe attach
/// type; on failure, loads again with a verifier log to say why.
fn load_one(
    name: &str,
    func: &aya_obj::Function,
    license: &CString,
    btf: BorrowedFd<'_>,
) -> Result<OwnedFd, MultiError> {
    let insns = &func.instructions;
    let func_info = func.func_info.func_info_bytes();
    let line_info = func.line_info.line_info_bytes();
    let mut attr = ProgLoadAttr {
        prog_btf_fd: btf.as_raw_fd() as u32,
        func_info_rec_size: func.func_info_rec_size as u32,
        func_info: func_info.as_ptr() as u64,
        func_info_cnt: func.func_info.len() as u32,
        line_info_rec_size: func.line_info_rec_size as u32,
        line_info: line_info.as_ptr() as u64,
        line_info_cnt: func.line_info.len() as u32,
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..Default::default()
    };
    for (d, s) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let err = match bpf_fd(BPF_PROG_LOAD, &attr) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; 1 << 20];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    if let Ok(fd) = bpf_fd(BPF_PROG_LOAD, &attr) {
        return Ok(fd);
    }
    let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)])
        .trim()
        .lines()
        .rfind(|l| !l.starts_with("processed ") && !l.starts_with("verification time"))
        .unwrap_or_default()
        .to_string();
    Err(MultiError::Load(if text.is_empty() {
        err.to_string()
    } else {
        format!("{err}: {text}")
    }))
}

/// Attaches `prog` at every `(offset, cookie)` of `path` (file offsets), at
/// returns when `ret`, for `pid` or (None) all processes: one link.
pub fn attach(
    prog: BorrowedFd<'_>,
    path: &Path,
    sites: &[(u64, u64)],
    ret: bool,
    pid: Option<u32>,
) -> Result<OwnedFd, MultiError> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| MultiError::Prepare("path with a NUL byte".into()))?;
    let offsets: Vec<u64> = sites.iter().map(|s| s.0).collect();
    let cookies: Vec<u64> = sites.iter().map(|s| s.1).collect();
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_TRACE_UPROBE_MULTI,
        path: cpath.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cookies: cookies.as_ptr() as u64,
        cnt: sites.len() as u32,
        multi_flags: if ret { BPF_F_UPROBE_MULTI_RETURN } else { 0 },
        pid: pid.unwrap_or(0),
        ..Default::default()
    };
    bpf_fd(BPF_LINK_CREATE, &attr).map_err(MultiError::Link)
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::{LinkCreateAttr, ProgLoadAttr};

    #[test]
    fn attrs_match_the_kernels_bpf_attr() {
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(ProgLoadAttr, prog_btf_fd), 72);
        assert_eq!(offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(offset_of!(ProgLoadAttr, line_info), 96);
        assert_eq!(offset_of!(ProgLoadAttr, line_info_cnt), 104);
        assert_eq!(offset_of!(LinkCreateAttr, path), 16);
        assert_eq!(offset_of!(LinkCreateAttr, cookies), 40);
        assert_eq!(offset_of!(LinkCreateAttr, cnt), 48);
        assert_eq!(offset_of!(LinkCreateAttr, pid), 56);
    }
}
