//! The flight recorder: an instrument's last N seconds (or bytes) of
//! output lines, kept in memory and written only when a trigger dumps it,
//! as `perf record`'s snapshot mode does.

use std::{collections::VecDeque, time::Instant};

use super::file::Keep;

/// Lines with the time they arrived, oldest first.
#[derive(Debug)]
pub struct Recorder {
    keep: Keep,
    lines: VecDeque<(Instant, String)>,
    bytes: u64,
    /// Lines pushed out of the window (not an error: the window moved).
    pub aged_out: u64,
}

impl Recorder {
    /// An empty recorder keeping `keep`.
    pub fn new(keep: Keep) -> Self {
        Recorder {
            keep,
            lines: VecDeque::new(),
            bytes: 0,
            aged_out: 0,
        }
    }

    /// Adds a line that arrived at `at`, dropping what falls out of the
    /// window.
    pub fn push(&mut self, at: Instant, line: String) {
        self.bytes += line.len() as u64 + 1;
        self.lines.push_back((at, line));
        self.trim(at);
    }

    /// Drops lines older than the window (time) or past its size.
    pub fn trim(&mut self, now: Instant) {
        while let Some((t, l)) = self.lines.front() {
            let out = match self.keep {
                Keep::Time(d) => now.saturating_duration_since(*t) > d,
                Keep::Bytes(b) => self.bytes > b,
            };
            if !out {
                break;
            }
            self.bytes -= l.len() as u64 + 1;
            self.lines.pop_front();
            self.aged_out += 1;
        }
    }

    /// The window's lines, oldest first, as of `now`.
    pub fn window(&mut self, now: Instant) -> impl Iterator<Item = &(Instant, String)> {
        self.trim(now);
        self.lines.iter()
    }

    /// How long the window is, for the manifest.
    pub fn describe(&self) -> String {
        match self.keep {
            Keep::Time(d) => format!("{}s", d.as_secs_f64()),
            Keep::Bytes(b) => format!("{b} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keeps_only_the_window() {
        let t0 = Instant::now();
        let mut r = Recorder::new(Keep::Time(Duration::from_secs(10)));
        for s in 0..30 {
            r.push(t0 + Duration::from_secs(s), s.to_string());
        }
        let kept: Vec<&str> = r
            .window(t0 + Duration::from_secs(29))
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(kept.first(), Some(&"19"));
        assert_eq!(kept.len(), 11);
        let mut b = Recorder::new(Keep::Bytes(6));
        for s in ["aa", "bb", "cc"] {
            b.push(t0, s.into());
        }
        assert_eq!(b.window(t0).count(), 2);
    }
}
