//! The raw `bpf(2)` commands ri issues itself: loading BTF and programs
//! (with the attach type each attachment needs), and writing a global
//! data map's initial value.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

/// Errors from a raw `bpf(2)` command.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// `BPF_BTF_LOAD` failed.
    #[error("loading BTF: {0}")]
    Btf(std::io::Error),
    /// `BPF_PROG_LOAD` failed (the verifier log's last line attached).
    #[error("loading program {name}: {reason}")]
    Prog {
        /// Program name.
        name: String,
        /// Why, from the error and the verifier log.
        reason: String,
        /// The error number, to tell a privilege problem apart.
        errno: Option<i32>,
    },
    /// Writing or freezing a map failed.
    #[error("{call}: {err}")]
    Map {
        /// The command.
        call: &'static str,
        /// The error.
        err: std::io::Error,
    },
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_MAP_FREEZE: libc::c_long = 22;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_PROG_TYPE_KPROBE` (uprobes are kprobe-type).
pub const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
pub const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `line_info_cnt`.
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

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM` and `BPF_MAP_FREEZE`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_MAP_LOOKUP_BATCH`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `bpf(2)` command `cmd` with `attr`, for the fd it returns.
pub fn bpf_fd<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    let ret = bpf(cmd, attr)?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// The `bpf(2)` command `cmd` with `attr`, for its return value.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: callers pass a zero-padded bpf_attr prefix whose pointers
    // outlive the call; the size is the struct's own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

/// One `BPF_MAP_LOOKUP_BATCH` call: up to `count` entries after the cursor
/// `from` (None: from the start) into the buffers at `keys` and `values`.
/// Gives the entries read, the cursor to go on from, and the call's error
/// (ENOENT: the map has no more).
fn lookup_batch_once(
    map: BorrowedFd<'_>,
    from: Option<u32>,
    keys: *mut u8,
    values: *mut u8,
    count: u32,
) -> (usize, u32, Option<std::io::Error>) {
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        in_batch: from.as_ref().map_or(0, |f| f as *const u32 as u64),
        out_batch: &mut out_batch as *mut u32 as u64,
        keys: keys as u64,
        values: values as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: the caller's buffers hold `count` keys and values; the kernel
    // writes the count read back into `attr`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    let err = (ret < 0).then(std::io::Error::last_os_error);
    ((attr.count as usize).min(count as usize), out_batch, err)
}

/// Slots `0..n` of the per-CPU array `map` (values of `value_size` bytes,
/// `cpus` possible CPUs) in few `BPF_MAP_LOOKUP_BATCH` calls, where one
/// lookup each took 5,000 syscalls for a 5,000-site count: each slot's
/// per-CPU values, each padded to 8 bytes, slot after slot.
pub fn lookup_per_cpu_batch(
    map: BorrowedFd<'_>,
    n: usize,
    value_size: usize,
    cpus: usize,
) -> std::io::Result<Vec<u8>> {
    let stride = value_size.div_ceil(8) * 8 * cpus;
    let mut keys = vec![0u32; n];
    let mut values = vec![0u8; n * stride];
    let mut out = vec![0u8; n * stride];
    let (mut done, mut next) = (0usize, 0u32);
    while done < n {
        let (got, out_batch, err) = lookup_batch_once(
            map,
            (done > 0).then_some(next),
            keys[done..].as_mut_ptr() as *mut u8,
            values[done * stride..].as_mut_ptr(),
            (n - done) as u32,
        );
        if let Some(e) = &err
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            return Err(err.expect("checked"));
        }
        done += got.min(n - done);
        if err.is_some() || got == 0 {
            break;
        }
        next = out_batch;
    }
    // Arrays come back in key order; placed by key all the same.
    for (i, key) in keys[..done].iter().enumerate() {
        let k = *key as usize;
        if k < n {
            out[k * stride..(k + 1) * stride]
                .copy_from_slice(&values[i * stride..(i + 1) * stride]);
        }
    }
    Ok(out)
}

/// Every entry of the hash map `map` (keys of `key_size` bytes, per-CPU
/// values of `value_size` bytes over `cpus` CPUs) by `BPF_MAP_LOOKUP_BATCH`
/// into `keys` and `values`, buffers the caller keeps (grown as needed):
/// the number of entries read. 10,000 keys take a few syscalls, where
/// iterating takes two per key.
pub fn lookup_hash_batch(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    cpus: usize,
    keys: &mut Vec<u8>,
    values: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let stride = value_size.div_ceil(8) * 8 * cpus.max(1);
    let mut cap = (keys.len() / key_size.max(1)).max(1024);
    keys.resize(cap * key_size, 0);
    values.resize(cap * stride, 0);
    let (mut done, mut next) = (0usize, 0u32);
    loop {
        if done == cap {
            cap *= 2;
            keys.resize(cap * key_size, 0);
            values.resize(cap * stride, 0);
        }
        let (got, out_batch, err) = lookup_batch_once(
            map,
            (done > 0).then_some(next),
            keys[done * key_size..].as_mut_ptr(),
            values[done * stride..].as_mut_ptr(),
            (cap - done) as u32,
        );
        done += got;
        if let Some(e) = err {
            match e.raw_os_error() {
                Some(libc::ENOENT) => return Ok(done),
                // A bucket larger than the room left: more room.
                Some(libc::ENOSPC) if got == 0 && cap < 1 << 24 => {
                    cap *= 2;
                    keys.resize(cap * key_size, 0);
                    values.resize(cap * stride, 0);
                    continue;
                }
                _ => return Err(e),
            }
        }
        if got == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        next = out_batch;
    }
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

/// `BPF_RAW_TRACEPOINT_OPEN`: attaches raw tracepoint program `prog` to
/// tracepoint `name` (no tracefs needed) until the returned fd closes.
pub fn raw_tracepoint_open(prog: BorrowedFd<'_>, name: &str) -> std::io::Result<OwnedFd> {
    let name = CString::new(name).map_err(std::io::Error::other)?;
    let attr = RawTracepointAttr {
        name: name.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &attr)
}

/// `BPF_BTF_LOAD` of an object's (sanitized) BTF.
pub fn load_btf(bytes: &[u8]) -> Result<OwnedFd, SysError> {
    let attr = BtfLoadAttr {
        btf: bytes.as_ptr() as u64,
        size: bytes.len() as u32,
        ..Default::default()
    };
    bpf_fd(BPF_BTF_LOAD, &attr).map_err(SysError::Btf)
}

/// Writes `data` as the one value of global data map `map`, then freezes it
/// when `freeze` (`.rodata`).
pub fn set_global_data(map: BorrowedFd<'_>, data: &[u8], freeze: bool) -> Result<(), SysError> {
    let key = 0u32;
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: data.as_ptr() as u64,
        ..Default::default()
    };
    if !data.is_empty() {
        bpf(BPF_MAP_UPDATE_ELEM, &attr).map_err(|err| SysError::Map {
            call: "bpf_map_update_elem",
            err,
        })?;
    }
    if freeze {
        let attr = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_FREEZE, &attr).map_err(|err| SysError::Map {
            call: "bpf_map_freeze",
            err,
        })?;
    }
    Ok(())
}

/// `BPF_PROG_LOAD` of one program of `prog_type` with `attach_type` (0 for perf events, `BPF_TRACE_UPROBE_MULTI` for
/// multi-uprobe links); on failure, loads again with a verifier log to say
/// why.
pub fn load_program(
    name: &str,
    func: &aya_obj::Function,
    license: &CString,
    btf: BorrowedFd<'_>,
    prog_type: u32,
    attach_type: u32,
) -> Result<OwnedFd, SysError> {
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
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: attach_type,
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
    Err(SysError::Prog {
        name: name.to_string(),
        reason: if text.is_empty() {
            err.to_string()
        } else {
            format!("{err}: {text}")
        },
        errno: err.raw_os_error(),
    })
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::{MapElemAttr, ProgLoadAttr};

    #[test]
    fn attrs_match_the_kernels_bpf_attr() {
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(ProgLoadAttr, prog_btf_fd), 72);
        assert_eq!(offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(offset_of!(ProgLoadAttr, line_info), 96);
        assert_eq!(offset_of!(ProgLoadAttr, line_info_cnt), 104);
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, flags), 24);
    }
}
