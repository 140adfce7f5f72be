//! A process's listening Unix sockets, read from `/proc/PID/fd` and
//! `/proc/net/unix`: control sockets wherever the target put them.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// Inodes of the sockets `pid` holds open (`socket:[INODE]` links).
fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Listening sockets with a file path in a `/proc/net/unix` table: (inode,
/// path). Columns: Num RefCount Protocol Flags Type St Inode Path; a
/// listening socket has the `__SO_ACCEPTCON` flag (`00010000`).
fn listening(table: &str) -> Vec<(u64, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            let inode = cols.get(6)?.parse().ok()?;
            let path = *cols.get(7)?;
            (flags & 0x10000 != 0 && !path.starts_with('@')).then(|| (inode, path.to_string()))
        })
        .collect()
}

/// The paths of the Unix sockets `pid` listens on (relative paths taken
/// from its working directory), in inode order.
pub fn listening_paths(pid: i32) -> Vec<PathBuf> {
    let inodes = socket_inodes(pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) else {
        return Vec::new();
    };
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    let mut found: Vec<(u64, PathBuf)> = listening(&table)
        .into_iter()
        .filter(|(inode, _)| inodes.contains(inode))
        .map(|(inode, p)| (inode, cwd.join(Path::new(&p))))
        .collect();
    found.sort();
    found.dedup();
    found.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_rows() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/x/m0d.7.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 4343 /run/x/conn\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4444 @abstract\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4545\n";
        assert_eq!(listening(table), vec![(4242, "/run/x/m0d.7.sock".into())]);
    }

    #[test]
    fn finds_own_listening_socket() {
        let dir = std::env::temp_dir().join(format!("ri-procsock-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("t.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let found = listening_paths(std::process::id() as i32);
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(found.contains(&path), "{found:?}");
    }
}
