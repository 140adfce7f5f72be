//! Small helpers for the words of human-readable output.

/// `n` and `word`, plural unless `n` is 1: "1 key", "3 keys".
pub fn counted(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Writes `line` and a newline to stderr in one `write`, so that a child
/// process writing to the same stderr cannot land inside it (`eprintln!`
/// writes each formatted piece separately).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn counted() {
        assert_eq!(super::counted(1u32, "key"), "1 key");
        assert_eq!(super::counted(0u32, "key"), "0 keys");
        assert_eq!(super::counted(3u64, "bit"), "3 bits");
    }
}
