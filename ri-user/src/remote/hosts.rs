//! `-H` host lists: `h1,h2,...`, or `@FILE` / `@FILE:GROUP` inventories with
//! one host per line under `[group]` sections (Ansible/ClusterShell style).

use std::path::Path;

use super::RemoteError;

/// The hosts a `-H` value names, in order, without duplicates.
pub fn parse(spec: &str) -> Result<Vec<String>, RemoteError> {
    let hosts = match spec.strip_prefix('@') {
        Some(rest) => {
            let (file, group) = split_group(rest);
            let text = std::fs::read_to_string(file).map_err(|e| RemoteError::Inventory {
                path: file.into(),
                reason: e.to_string(),
            })?;
            inventory(&text, group).map_err(|reason| RemoteError::Inventory {
                path: file.into(),
                reason,
            })?
        }
        None => spec
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect(),
    };
    let mut seen = Vec::new();
    for h in hosts {
        check_name(&h)?;
        if !seen.contains(&h) {
            seen.push(h);
        }
    }
    if seen.is_empty() {
        return Err(RemoteError::NoHosts(spec.into()));
    }
    Ok(seen)
}

/// `FILE:GROUP` → (FILE, Some(GROUP)) when FILE alone does not exist.
fn split_group(rest: &str) -> (&str, Option<&str>) {
    match rest.rsplit_once(':') {
        Some((f, g)) if !Path::new(rest).exists() && !g.is_empty() => (f, Some(g)),
        _ => (rest, None),
    }
}

/// The hosts of an inventory: every host line, or those of one group.
/// Comments start with `#` or `;`; a host line's first word is the host
/// (Ansible's `host var=value` lines keep working).
fn inventory(text: &str, group: Option<&str>) -> Result<Vec<String>, String> {
    let mut current: Option<String> = None;
    let mut found = group.is_none();
    let mut hosts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            found |= group == current.as_deref();
            continue;
        }
        if group.is_some() && group != current.as_deref() {
            continue;
        }
        if let Some(host) = line.split_whitespace().next() {
            hosts.push(host.to_string());
        }
    }
    match group {
        Some(g) if !found => Err(format!("no group [{g}]")),
        _ => Ok(hosts),
    }
}

/// A host name ssh will take as a destination, not as an option.
fn check_name(h: &str) -> Result<(), RemoteError> {
    let ok = !h.starts_with('-')
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@[]%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::BadHost(h.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_groups() {
        assert_eq!(parse("a, b,a").unwrap(), ["a", "b"]);
        assert!(matches!(parse(","), Err(RemoteError::NoHosts(_))));
        assert!(matches!(parse("-oProxy=x"), Err(RemoteError::BadHost(_))));
        let inv = "# cluster\nhead\n[io]\nio1 ansible_host=x\nio2\n\n[md]\nmd1\n";
        assert_eq!(inventory(inv, None).unwrap(), ["head", "io1", "io2", "md1"]);
        assert_eq!(inventory(inv, Some("io")).unwrap(), ["io1", "io2"]);
        assert!(inventory(inv, Some("x")).unwrap_err().contains("[x]"));
    }
}
