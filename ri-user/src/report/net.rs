//! The `files` and `sockets` sections: open descriptors from
//! `/proc/PID/fd`, and each socket matched by inode to the target's own
//! network tables (`/proc/PID/net/{tcp,tcp6,udp,udp6,unix,netlink}`), so
//! addresses are those of its network namespace. Unix peers come from
//! `sock_diag` when ri shares that namespace.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use serde::Serialize;

use super::{read_proc, why};

/// Open descriptors.
#[derive(Debug, Default, Serialize)]
pub struct FilesSection {
    /// Number of descriptors.
    pub count: usize,
    /// Each descriptor, by number.
    pub fds: Vec<Fd>,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

/// One descriptor.
#[derive(Debug, Clone, Serialize)]
pub struct Fd {
    /// Number.
    pub fd: u32,
    /// What it refers to (a path, `socket:[INODE]`, `pipe:[INODE]`, ...).
    pub target: String,
    /// `file`, `dir`, `device`, `socket`, `pipe`, `anon` or `other`.
    pub kind: String,
    /// Access mode: `r`, `w` or `rw`.
    pub mode: Option<String>,
    /// File position.
    pub pos: Option<u64>,
}

/// Sockets.
#[derive(Debug, Default, Serialize)]
pub struct SocketsSection {
    /// Each socket descriptor, by number.
    pub sockets: Vec<Socket>,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

/// One socket.
#[derive(Debug, Clone, Serialize)]
pub struct Socket {
    /// Descriptor number.
    pub fd: u32,
    /// Socket inode.
    pub inode: u64,
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`, `netlink` or `unknown`.
    pub proto: String,
    /// Local address (`IP:PORT`, `[IP6]:PORT`, a Unix path, `@abstract`).
    pub local: Option<String>,
    /// Peer address, when connected.
    pub peer: Option<String>,
    /// State: `LISTEN`, `ESTABLISHED`, ... (Unix: `LISTEN`, `CONNECTED`,
    /// `UNCONNECTED`).
    pub state: Option<String>,
    /// Unix socket type: `stream`, `dgram`, `seqpacket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Bytes queued to send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_queue: Option<u64>,
    /// Bytes queued to read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_queue: Option<u64>,
}

/// The descriptor table, read once for files, sockets and config.
pub type FdTable = Result<Vec<Fd>, String>;

/// Reads `/proc/PID/fd` and `fdinfo`.
pub fn read_fds(pid: u32) -> FdTable {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| why("descriptors", &e))?;
    let mut fds: Vec<Fd> = dir
        .flatten()
        .filter_map(|e| {
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?.display().to_string();
            let info = read_proc(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            let mode = field("flags:")
                .and_then(|f| u32::from_str_radix(&f, 8).ok())
                .map(|f| match f & 3 {
                    0 => "r",
                    1 => "w",
                    _ => "rw",
                })
                .map(str::to_string);
            let kind = fd_kind(&target, pid, fd);
            Some(Fd {
                fd,
                pos: field("pos:").and_then(|p| p.parse().ok()),
                mode,
                kind,
                target,
            })
        })
        .collect();
    fds.sort_by_key(|f| f.fd);
    Ok(fds)
}

fn fd_kind(target: &str, pid: u32, fd: u32) -> String {
    if target.starts_with("socket:") {
        "socket"
    } else if target.starts_with("pipe:") {
        "pipe"
    } else if target.starts_with("anon_inode:") {
        "anon"
    } else if target.starts_with("/dev/") {
        "device"
    } else if target.starts_with('/') {
        match std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            Ok(m) if m.is_dir() => "dir",
            _ => "file",
        }
    } else {
        "other"
    }
    .to_string()
}

/// Builds the `files` section.
pub fn files_section(fds: &FdTable) -> FilesSection {
    match fds {
        Ok(fds) => FilesSection {
            count: fds.len(),
            fds: fds.clone(),
            notes: Vec::new(),
        },
        Err(e) => FilesSection {
            notes: vec![e.clone()],
            ..Default::default()
        },
    }
}

/// An IPv4 or IPv6 address as `/proc/net/tcp*` prints it: the address
/// words in host order, then the port.
fn inet_addr(s: &str) -> Option<(String, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => Ipv4Addr::from(u32::from_str_radix(a, 16).ok()?.to_ne_bytes()).to_string(),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&a[i * 8..i * 8 + 8], 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => format!("[::ffff:{v4}]"),
                None => format!("[{v6}]"),
            }
        }
        _ => return None,
    };
    Some((ip, port))
}

fn tcp_state(n: u8) -> &'static str {
    match n {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Parses one `tcp`/`udp` table into sockets by inode.
fn parse_inet(text: &str, proto: &str, out: &mut HashMap<u64, Socket>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        let local = inet_addr(f[1]);
        let peer = inet_addr(f[2]);
        let st = u8::from_str_radix(f[3], 16).unwrap_or(0);
        let (tx, rx) = f[4].split_once(':').unwrap_or(("0", "0"));
        let udp = proto.starts_with("udp");
        let state = match (udp, st) {
            (true, 7) => "UNCONN".to_string(),
            _ => tcp_state(st).to_string(),
        };
        let connected = peer.as_ref().is_some_and(|(_, port)| *port != 0);
        out.insert(
            inode,
            Socket {
                fd: 0,
                inode,
                proto: proto.to_string(),
                local: local.map(|(ip, p)| format!("{ip}:{p}")),
                peer: peer
                    .filter(|_| connected)
                    .map(|(ip, p)| format!("{ip}:{p}")),
                state: Some(state),
                kind: None,
                tx_queue: u64::from_str_radix(tx, 16).ok(),
                rx_queue: u64::from_str_radix(rx, 16).ok(),
            },
        );
    }
}

/// Parses `/proc/net/unix` into sockets by inode.
fn parse_unix(text: &str, out: &mut HashMap<u64, Socket>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 7 {
            continue;
        }
        let Ok(inode) = f[6].parse::<u64>() else {
            continue;
        };
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        let kind = match f[4] {
            "0001" => "stream",
            "0002" => "dgram",
            "0005" => "seqpacket",
            _ => "other",
        };
        // __SO_ACCEPTCON marks a listening socket.
        let state = if flags & 0x10000 != 0 {
            "LISTEN"
        } else {
            match f[5] {
                "01" => "UNCONNECTED",
                "02" => "CONNECTING",
                "03" => "CONNECTED",
                "04" => "DISCONNECTING",
                _ => "UNKNOWN",
            }
        };
        // The path is the rest of the line (it may hold spaces).
        let path = rest_after(line, 7).map(str::to_string);
        out.insert(
            inode,
            Socket {
                fd: 0,
                inode,
                proto: "unix".into(),
                local: path,
                peer: None,
                state: Some(state.into()),
                kind: Some(kind.into()),
                tx_queue: None,
                rx_queue: None,
            },
        );
    }
}

/// What follows the first `n` whitespace-separated fields, trimmed.
fn rest_after(line: &str, n: usize) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then(|| rest.trim_end())
}

/// Parses `/proc/net/netlink` into sockets by inode.
fn parse_netlink(text: &str, out: &mut HashMap<u64, Socket>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(proto), Some(inode)) = (f.get(1), f.get(9).and_then(|i| i.parse::<u64>().ok()))
        else {
            continue;
        };
        out.insert(
            inode,
            Socket {
                fd: 0,
                inode,
                proto: "netlink".into(),
                local: Some(format!(
                    "protocol {proto}, port {}",
                    f.get(2).unwrap_or(&"?")
                )),
                peer: None,
                state: None,
                kind: None,
                tx_queue: None,
                rx_queue: None,
            },
        );
    }
}

/// Builds the `sockets` section.
pub fn sockets_section(pid: u32, fds: &FdTable) -> SocketsSection {
    let mut s = SocketsSection::default();
    let fds = match fds {
        Ok(f) => f,
        Err(e) => {
            s.notes.push(e.clone());
            return s;
        }
    };
    let inodes: Vec<(u32, u64)> = fds
        .iter()
        .filter_map(|f| {
            let ino = f.target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some((f.fd, ino.parse().ok()?))
        })
        .collect();
    if inodes.is_empty() {
        return s;
    }
    let mut table = HashMap::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        match read_proc(format!("/proc/{pid}/net/{proto}")) {
            Ok(t) => parse_inet(&t, proto, &mut table),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                s.notes.push(why(&format!("/proc/{pid}/net/{proto}"), &e));
            }
            Err(_) => {}
        }
    }
    match read_proc(format!("/proc/{pid}/net/unix")) {
        Ok(t) => parse_unix(&t, &mut table),
        Err(e) => s.notes.push(why(&format!("/proc/{pid}/net/unix"), &e)),
    }
    if let Ok(t) = read_proc(format!("/proc/{pid}/net/netlink")) {
        parse_netlink(&t, &mut table);
    }
    let want_peers = inodes.iter().any(|(_, i)| {
        table
            .get(i)
            .is_some_and(|s| s.proto == "unix" && s.state.as_deref() == Some("CONNECTED"))
    });
    let peers = if want_peers && same_netns(pid) {
        match unix_peers() {
            Ok(p) => p,
            Err(e) => {
                s.notes
                    .push(format!("Unix socket peers unknown: sock_diag: {e}"));
                HashMap::new()
            }
        }
    } else {
        HashMap::new()
    };
    for (fd, inode) in inodes {
        let mut sock = table.get(&inode).cloned().unwrap_or(Socket {
            fd,
            inode,
            proto: "unknown".into(),
            local: None,
            peer: None,
            state: None,
            kind: None,
            tx_queue: None,
            rx_queue: None,
        });
        sock.fd = fd;
        if sock.proto == "unix"
            && let Some(&peer) = peers.get(&inode)
            && peer != 0
        {
            let name = table.get(&peer).and_then(|p| p.local.clone());
            sock.peer = Some(match name {
                Some(n) => format!("{n} (socket:[{peer}])"),
                None => format!("socket:[{peer}]"),
            });
        }
        s.sockets.push(sock);
    }
    s
}

/// True when ri and the target share a network namespace.
fn same_netns(pid: u32) -> bool {
    match (
        std::fs::read_link("/proc/self/ns/net"),
        std::fs::read_link(format!("/proc/{pid}/ns/net")),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Peer inode of every Unix socket in ri's network namespace, by inode
/// (`NETLINK_SOCK_DIAG`, `UDIAG_SHOW_PEER`).
fn unix_peers() -> std::io::Result<HashMap<u64, u64>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UNIX_DIAG_PEER: u16 = 2;
    #[repr(C)]
    struct Req {
        nlh: libc::nlmsghdr,
        family: u8,
        protocol: u8,
        pad: u16,
        states: u32,
        ino: u32,
        show: u32,
        cookie: [u32; 2],
    }
    // SAFETY: plain socket creation; the descriptor is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let req = Req {
        nlh: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Req>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: libc::AF_UNIX as u8,
        protocol: 0,
        pad: 0,
        states: u32::MAX,
        ino: 0,
        show: UDIAG_SHOW_PEER,
        cookie: [u32::MAX; 2],
    };
    // SAFETY: sends the bytes of a local repr(C) struct.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            (&req as *const Req).cast(),
            std::mem::size_of::<Req>(),
            0,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut peers = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
    loop {
        // SAFETY: receives into our own buffer of the given length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let data = &buf[..n as usize];
        if data.is_empty() {
            return Ok(peers);
        }
        let mut off = 0usize;
        while off + 16 <= data.len() {
            let len = u32_at(data, off) as usize;
            let ty = u16_at(data, off + 4);
            if len < 16 || off + len > data.len() {
                break;
            }
            if ty == libc::NLMSG_DONE as u16 {
                return Ok(peers);
            }
            if ty == libc::NLMSG_ERROR as u16 {
                let code = data
                    .get(off + 16..off + 20)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .unwrap_or(-libc::EIO);
                return Err(std::io::Error::from_raw_os_error(-code));
            }
            // unix_diag_msg: family, type, state, pad, ino, cookie[2].
            let msg = &data[off + 16..off + len];
            if msg.len() >= 16 {
                let ino = u32_at(msg, 4) as u64;
                let mut a = 16usize;
                while a + 4 <= msg.len() {
                    let alen = u16_at(msg, a) as usize;
                    let aty = u16_at(msg, a + 2);
                    if alen < 4 || a + alen > msg.len() {
                        break;
                    }
                    if aty == UNIX_DIAG_PEER && alen >= 8 {
                        peers.insert(ino, u32_at(msg, a + 4) as u64);
                    }
                    a += alen.div_ceil(4) * 4;
                }
            }
            off += len.div_ceil(4) * 4;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_addresses() {
        assert_eq!(
            inet_addr("0100007F:1F90"),
            Some(("127.0.0.1".to_string(), 8080))
        );
        assert_eq!(
            inet_addr("00000000000000000000000001000000:0016"),
            Some(("[::1]".to_string(), 22))
        );
        assert_eq!(
            inet_addr("0000000000000000FFFF00000100007F:0050"),
            Some(("[::ffff:127.0.0.1]".to_string(), 80))
        );
    }

    #[test]
    fn tables() {
        let mut t = HashMap::new();
        parse_inet(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 4242 1 0 100 0 0 10 0\n\
             1: 0100007F:1538 0100007F:D3A2 01 00000010:00000000 00:00000000 00000000   101        0 4243 1 0 100 0 0 10 0",
            "tcp",
            &mut t,
        );
        assert_eq!(t[&4242].state.as_deref(), Some("LISTEN"));
        assert_eq!(t[&4242].local.as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(t[&4242].peer, None);
        assert_eq!(t[&4243].peer.as_deref(), Some("127.0.0.1:54178"));
        assert_eq!(t[&4243].tx_queue, Some(16));
        parse_unix(
            "Num       RefCount Protocol Flags    Type St Inode Path\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 5151 /tmp/.s.PGSQL.5432\n\
             0000000000000000: 00000003 00000000 00000000 0001 03 5152 /tmp/a b\n\
             0000000000000000: 00000003 00000000 00000000 0001 03 5153",
            &mut t,
        );
        assert_eq!(t[&5151].state.as_deref(), Some("LISTEN"));
        assert_eq!(t[&5151].local.as_deref(), Some("/tmp/.s.PGSQL.5432"));
        assert_eq!(t[&5152].local.as_deref(), Some("/tmp/a b"));
        assert_eq!(t[&5153].local, None);
        assert_eq!(t[&5153].state.as_deref(), Some("CONNECTED"));
    }

    #[test]
    fn own_unix_pair_has_peers() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = |s: &std::os::unix::net::UnixStream| {
            use std::os::fd::AsRawFd;
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
                .unwrap()
                .ino()
        };
        let peers = unix_peers().unwrap();
        assert_eq!(peers.get(&ino(&a)), Some(&ino(&b)));
    }
}
