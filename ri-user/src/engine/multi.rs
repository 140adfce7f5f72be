//! Multi-uprobe links (`BPF_LINK_TYPE_UPROBE_MULTI`, kernel ≥ 6.6): many
//! offsets of one file attached in one syscall with a cookie each, and
//! detached together after one grace period. aya 0.14 has no API for them;
//! their programs are loaded with the `BPF_TRACE_UPROBE_MULTI` attach type
//! the kernel demands (see `object.rs`).

use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

/// Errors creating a link.
#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    /// The path cannot be passed to the kernel.
    #[error("preparing the multi-uprobe link: {0}")]
    Prepare(String),
    /// `BPF_LINK_CREATE` failed.
    #[error("multi-uprobe link: {0}")]
    Link(std::io::Error),
}

const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_TRACE_UPROBE_MULTI` attach type.
pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `BPF_F_UPROBE_MULTI_RETURN`: the link's sites are return probes.
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;

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
    super::sys::bpf_fd(BPF_LINK_CREATE, &attr).map_err(MultiError::Link)
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::LinkCreateAttr;

    #[test]
    fn link_attr_matches_the_kernels_bpf_attr() {
        assert_eq!(offset_of!(LinkCreateAttr, path), 16);
        assert_eq!(offset_of!(LinkCreateAttr, cookies), 40);
        assert_eq!(offset_of!(LinkCreateAttr, cnt), 48);
        assert_eq!(offset_of!(LinkCreateAttr, pid), 56);
    }
}
