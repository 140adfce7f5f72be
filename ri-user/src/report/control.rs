//! The `control` section: when the target runs the ri-control library, the
//! report sections it registered (its `report` command).

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// How long to wait for the target's answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What cooperating targets said.
#[derive(Debug, Default, Serialize)]
pub struct ControlSection {
    /// One entry per control socket of the process.
    pub targets: Vec<ControlTarget>,
    /// Why there is nothing, when there is nothing.
    pub notes: Vec<String>,
}

/// One control socket's report.
#[derive(Debug, Serialize)]
pub struct ControlTarget {
    /// The name the target registered.
    pub name: String,
    /// The socket.
    pub socket: String,
    /// Its report sections, by name.
    pub sections: Map<String, Value>,
    /// Why the sections are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Builds the `control` section.
pub fn section(pid: u32) -> ControlSection {
    let mut s = ControlSection::default();
    let found: Vec<_> = ri_control::discover()
        .into_iter()
        .filter(|i| i.pid == pid as i32)
        .collect();
    if found.is_empty() {
        s.notes
            .push("the target does not run ri-control (no control socket found)".into());
        return s;
    }
    for info in found {
        let mut t = ControlTarget {
            name: info.name.clone(),
            socket: info.path.display().to_string(),
            sections: Map::new(),
            error: None,
        };
        let got = ri_control::Client::connect_path(&info.path).and_then(|mut c| {
            c.set_timeout(Some(TIMEOUT))?;
            c.call("report", json!({}), false)
        });
        match got {
            Ok(Value::Object(m)) => t.sections = m,
            Ok(other) => {
                t.sections.insert("report".into(), other);
            }
            Err(e) => t.error = Some(e.to_string()),
        }
        s.targets.push(t);
    }
    s
}
