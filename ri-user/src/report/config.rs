//! The `config` section: command-line flags, the environment the process
//! started with (values of secret-looking names redacted), and the
//! configuration files it holds open.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{net::FdTable, procfs, why};

/// Parts of a variable name that mark its value as a secret
/// (case-insensitive substrings).
pub const SECRET_MARKERS: [&str; 7] = [
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "KEY",
    "SECRET",
    "CREDENTIAL",
    "AUTH",
];
/// What a redacted value is shown as.
pub const REDACTED: &str = "<redacted>";
/// File name endings of configuration files.
const CONFIG_EXTENSIONS: [&str; 7] = [".conf", ".cfg", ".ini", ".toml", ".yaml", ".yml", ".json"];

/// Configuration.
#[derive(Debug, Default, Serialize)]
pub struct ConfigSection {
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment at start, by name; secrets redacted.
    pub env: BTreeMap<String, String>,
    /// Names whose values were redacted.
    pub redacted: Vec<String>,
    /// Open configuration files: (descriptor, path).
    pub config_files: Vec<ConfigFile>,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

/// An open configuration file.
#[derive(Debug, Serialize)]
pub struct ConfigFile {
    /// Descriptor.
    pub fd: u32,
    /// Path.
    pub path: String,
}

/// True when a variable's value should not be shown.
pub fn is_secret(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| up.contains(m))
}

/// True for a path that looks like configuration.
fn is_config(path: &str) -> bool {
    path.starts_with("/etc/") || CONFIG_EXTENSIONS.iter().any(|e| path.ends_with(e))
}

/// Builds the `config` section.
pub fn section(pid: u32, fds: Option<&FdTable>) -> ConfigSection {
    let mut s = ConfigSection::default();
    match procfs::cmdline(pid) {
        Ok(c) => s.args = c.into_iter().skip(1).collect(),
        Err(e) => s.notes.push(why("cmdline", &e)),
    }
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(bytes) => {
            for var in bytes.split(|&b| b == 0).filter(|v| !v.is_empty()) {
                let var = String::from_utf8_lossy(var);
                let (name, value) = var.split_once('=').unwrap_or((&var, ""));
                let value = if is_secret(name) {
                    s.redacted.push(name.to_string());
                    REDACTED.to_string()
                } else {
                    value.to_string()
                };
                s.env.insert(name.to_string(), value);
            }
            s.redacted.sort();
            if s.env.is_empty() {
                s.notes.push(
                    "the environment is empty: the process cleared or overwrote it (PostgreSQL, \
                     for one, reuses it for its process title)"
                        .into(),
                );
            }
        }
        Err(e) => s.notes.push(why("environment", &e)),
    }
    match fds {
        Some(Ok(fds)) => {
            s.config_files = fds
                .iter()
                .filter(|f| f.kind == "file" && is_config(&f.target))
                .map(|f| ConfigFile {
                    fd: f.fd,
                    path: f.target.clone(),
                })
                .collect();
        }
        Some(Err(e)) => s.notes.push(e.clone()),
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        for n in [
            "DB_PASSWORD",
            "api_token",
            "AWS_SECRET_ACCESS_KEY",
            "Ssh_Key",
            "PGPASSWD",
        ] {
            assert!(is_secret(n), "{n}");
        }
        for n in ["PATH", "HOME", "LANG", "PGPORT"] {
            assert!(!is_secret(n), "{n}");
        }
    }

    #[test]
    fn config_paths() {
        assert!(is_config("/etc/hosts"));
        assert!(is_config("/srv/app/settings.yaml"));
        assert!(is_config("/var/lib/pg/postgresql.auto.conf"));
        assert!(!is_config("/var/log/app.log"));
    }
}
