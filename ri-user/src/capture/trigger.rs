//! Trigger conditions and actions: parsed from the session file's strings,
//! and the per-trigger state that makes a sustained condition fire once.

use std::time::Duration;

use serde_json::Value;

use super::file::{parse_bytes, parse_duration};

/// Comparison of an instrument's value with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Cmp {
    fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Cmp::Gt => v > t,
            Cmp::Ge => v >= t,
            Cmp::Lt => v < t,
            Cmp::Le => v <= t,
        }
    }
}

/// When a trigger fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `INSTRUMENT.FIELD OP VALUE`: checked at each interval on the
    /// instrument's last print (any entry's FIELD; `entries`/`in_flight`:
    /// how many entries; `events`: events in the interval).
    Value {
        /// The instrument.
        inst: String,
        /// The field.
        field: String,
        /// The comparison.
        cmp: Cmp,
        /// The threshold (durations in ns, sizes in bytes).
        threshold: f64,
    },
    /// `fired NAME`: the trace instrument NAME printed an event (its probe
    /// filter decides which).
    Fired(String),
    /// `signal USR1` (or USR2, HUP): ri received the signal.
    Signal(i32),
    /// `after 30s`: that long after the session started.
    After(Duration),
}

impl Condition {
    /// Parses a condition string.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let s = s.trim();
        let (head, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        let rest = rest.trim();
        match head {
            "fired" if !rest.is_empty() => return Ok(Condition::Fired(rest.to_string())),
            "signal" => {
                let sig = match rest.trim_start_matches("SIG") {
                    "USR1" => libc::SIGUSR1,
                    "USR2" => libc::SIGUSR2,
                    "HUP" => libc::SIGHUP,
                    _ => return Err(format!("'{s}': the signal is USR1, USR2 or HUP")),
                };
                return Ok(Condition::Signal(sig));
            }
            "after" => return parse_duration(rest).map(Condition::After),
            _ => {}
        }
        let ops = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ];
        let Some((at, op, cmp)) = ops
            .iter()
            .find_map(|(op, c)| s.find(op).map(|at| (at, *op, *c)))
        else {
            return Err(format!(
                "'{s}': expected INSTRUMENT.FIELD > VALUE, fired INSTRUMENT, signal USR1 or after DURATION"
            ));
        };
        let lhs = s[..at].trim();
        let rhs = s[at + op.len()..].trim();
        let Some((inst, field)) = lhs.split_once('.') else {
            return Err(format!(
                "'{lhs}': expected INSTRUMENT.FIELD (e.g. fops.p99)"
            ));
        };
        Ok(Condition::Value {
            inst: inst.to_string(),
            field: field.to_string(),
            cmp,
            threshold: threshold(rhs)?,
        })
    }

    /// The instrument the condition watches, if any.
    pub fn instrument(&self) -> Option<&str> {
        match self {
            Condition::Value { inst, .. } | Condition::Fired(inst) => Some(inst),
            _ => None,
        }
    }
}

/// A threshold: a plain number, a duration in ns or a size in bytes.
fn threshold(s: &str) -> Result<f64, String> {
    if let Ok(n) = s.parse::<f64>() {
        return Ok(n);
    }
    if s.ends_with('B') {
        return parse_bytes(s).map(|b| b as f64);
    }
    parse_duration(s).map(|d| d.as_nanos() as f64)
}

/// What a trigger does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `start NAME [for 10s]`.
    Start(String, Option<Duration>),
    /// `stop NAME`.
    Stop(String),
    /// `report`: a `ri report` of every target process.
    Report,
    /// `ctl COMMAND [ARGS]`: a control command on every target.
    Ctl(Vec<String>),
    /// `snapshot`: every aggregation's last print.
    Snapshot,
    /// `dump [NAME]`: a flight recorder (default: all of them).
    Dump(Option<String>),
}

impl Action {
    /// Parses an action string.
    pub fn parse(s: &str) -> Result<Action, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["start", name] => Action::Start(name.to_string(), None),
            ["start", name, "for", d] => Action::Start(name.to_string(), Some(parse_duration(d)?)),
            ["stop", name] => Action::Stop(name.to_string()),
            ["report"] => Action::Report,
            ["ctl", cmd @ ..] if !cmd.is_empty() => {
                Action::Ctl(cmd.iter().map(|w| w.to_string()).collect())
            }
            ["snapshot"] => Action::Snapshot,
            ["dump"] => Action::Dump(None),
            ["dump", name] => Action::Dump(Some(name.to_string())),
            _ => {
                return Err(format!(
                    "action '{s}': expected start NAME [for DURATION], stop NAME, report, ctl COMMAND [ARGS], snapshot or dump [NAME]"
                ));
            }
        })
    }

    /// The instrument the action names, if any.
    pub fn instrument(&self) -> Option<&str> {
        match self {
            Action::Start(n, _) | Action::Stop(n) | Action::Dump(Some(n)) => Some(n),
            _ => None,
        }
    }
}

/// The value a `Value` condition reads from an instrument's last print:
/// the largest FIELD among its entries (or the entry count).
pub fn value_of(print: &Value, field: &str) -> Option<f64> {
    let entries = print.get("entries")?.as_array()?;
    if matches!(field, "entries" | "in_flight") {
        return Some(entries.len() as f64);
    }
    entries
        .iter()
        .filter_map(|e| e.get(field).and_then(Value::as_f64))
        .reduce(f64::max)
}

/// A trigger's state between intervals.
#[derive(Debug, Default)]
pub struct Armed {
    /// Intervals in a row the condition held.
    pub held: u32,
    /// Fired, and the condition has not gone away since.
    pub latched: bool,
}

impl Armed {
    /// Takes one observation of the condition; true when the trigger fires
    /// now: it held `need` times in a row and had not fired since it last
    /// did not hold.
    pub fn observe(&mut self, holds: bool, need: u32) -> bool {
        if !holds {
            self.held = 0;
            self.latched = false;
            return false;
        }
        self.held += 1;
        if self.held >= need && !self.latched {
            self.latched = true;
            return true;
        }
        false
    }
}

/// Whether `cmp threshold` holds for `v`.
pub fn holds(cmp: Cmp, v: Option<f64>, threshold: f64) -> bool {
    v.is_some_and(|v| cmp.holds(v, threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse() {
        assert_eq!(
            Condition::parse("fops.p99 > 20ms"),
            Ok(Condition::Value {
                inst: "fops".into(),
                field: "p99".into(),
                cmp: Cmp::Gt,
                threshold: 20e6
            })
        );
        assert!(matches!(
            Condition::parse("queue.in_flight >= 100"),
            Ok(Condition::Value { cmp: Cmp::Ge, .. })
        ));
        assert_eq!(
            Condition::parse("signal USR1"),
            Ok(Condition::Signal(libc::SIGUSR1))
        );
        assert!(Condition::parse("fops.p99 ~ 3").is_err());
    }

    #[test]
    fn a_sustained_condition_fires_once() {
        let mut a = Armed::default();
        let fired: Vec<bool> = [true, true, true, true, false, true, true]
            .iter()
            .map(|&h| a.observe(h, 2))
            .collect();
        assert_eq!(fired, [false, true, false, false, false, false, true]);
    }

    #[test]
    fn values_are_the_largest_entry() {
        let p: Value = serde_json::json!({"entries": [{"p99": 5}, {"p99": 30}]});
        assert_eq!(value_of(&p, "p99"), Some(30.0));
        assert_eq!(value_of(&p, "in_flight"), Some(2.0));
    }
}
