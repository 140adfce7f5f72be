//! `ri fid`: Motr file identifiers. `decode` explains a fid (type, container,
//! key, device of a cob, the object a cob belongs to); `of` maps an object
//! name to its id, fid and cob fids the way the motr-shaped service does.
//!
//! A `struct m0_fid { f_container, f_key }` prints as `<container:key>` in
//! hex. The top 8 bits of the container are a type character: `G` for a
//! global object, `C` for a component object (cob), whose 24-bit device id
//! sits at bit 32 of the container.

use serde_json::{Value, json};

/// Errors parsing a fid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FidError {
    /// Not `<hex:hex>`.
    #[error("bad fid '{0}': expected <container:key> in hex, e.g. <4700000000000001:2a>")]
    Syntax(String),
}

/// A Motr fid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fid {
    /// `f_container`.
    pub container: u64,
    /// `f_key`.
    pub key: u64,
}

/// Type character of global object fids.
pub const GOB: u8 = b'G';
/// Type character of cob fids.
pub const COB: u8 = b'C';

impl Fid {
    /// Parses `<hex:hex>` (brackets and `0x` optional).
    pub fn parse(s: &str) -> Result<Fid, FidError> {
        let bad = || FidError::Syntax(s.to_string());
        let t = s.trim().trim_start_matches('<').trim_end_matches('>');
        let (c, k) = t.split_once(':').ok_or_else(bad)?;
        let hex =
            |x: &str| u64::from_str_radix(x.trim().trim_start_matches("0x"), 16).map_err(|_| bad());
        Ok(Fid {
            container: hex(c)?,
            key: hex(k)?,
        })
    }

    /// The type character (top 8 bits of the container).
    pub fn tag(self) -> u8 {
        (self.container >> 56) as u8
    }

    /// The object fid a name's id makes (`m0_fid_gob_make`).
    pub fn gob(hi: u64, lo: u64) -> Fid {
        Fid {
            container: (GOB as u64) << 56 | (hi & 0xffff_ffff),
            key: lo,
        }
    }

    /// The cob fid of an object on a device (`m0_fid_convert_gob2cob`).
    pub fn cob(self, device: u32) -> Fid {
        Fid {
            container: (COB as u64) << 56
                | ((device as u64 & 0xff_ffff) << 32)
                | (self.container & 0xffff_ffff),
            key: self.key,
        }
    }

    /// What a fid says about itself.
    pub fn decode(self) -> Value {
        let tag = self.tag();
        let kind = match tag {
            GOB => "global object",
            COB => "component object (cob)",
            _ => "other",
        };
        let mut v = json!({
            "fid": self.to_string(),
            "type": if tag.is_ascii_graphic() { (tag as char).to_string() } else { format!("{tag:#04x}") },
            "kind": kind,
            "container": format!("{:#x}", self.container & 0x00ff_ffff_ffff_ffff),
            "key": format!("{:#x}", self.key),
        });
        if tag == COB {
            v["device"] = json!((self.container >> 32) & 0xff_ffff);
            v["object"] = json!(Fid::gob(self.container & 0xffff_ffff, self.key).to_string());
        }
        v
    }
}

impl std::fmt::Display for Fid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{:x}:{:x}>", self.container, self.key)
    }
}

/// FNV-1a 64 of `data` from `basis`.
fn fnv1a64(basis: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(basis, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The motr-shaped service's name → id mapping (`struct m0_uint128`): FNV-1a
/// 64 of the name with the standard basis for `u_lo`, and with the basis's
/// 32-bit halves swapped for `u_hi`. Real Motr clients choose ids themselves.
pub fn id_of(name: &str) -> (u64, u64) {
    (
        fnv1a64(0x8422_2325_cbf2_9ce4, name.as_bytes()),
        fnv1a64(0xcbf2_9ce4_8422_2325, name.as_bytes()),
    )
}

/// A name's id, object fid and the cob fids on `devices` data devices plus
/// the parity device.
pub fn of(name: &str, devices: u32) -> Value {
    let (hi, lo) = id_of(name);
    let gob = Fid::gob(hi, lo);
    let cobs: Vec<Value> = (0..=devices)
        .map(|d| json!({"device": d, "parity": d == devices, "cob_fid": gob.cob(d).to_string()}))
        .collect();
    json!({"name": name, "id": format!("{hi:x}:{lo:x}"), "fid": gob.to_string(), "cobs": cobs})
}

/// Text rendering: one `key: value` line per field, cobs indented.
pub fn to_text(v: &Value) -> String {
    let mut out = String::new();
    if let Some(map) = v.as_object() {
        for (k, x) in map {
            match x {
                Value::Array(items) => {
                    out.push_str(&format!("{k}:\n"));
                    for it in items {
                        let parts: Vec<String> = it
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(a, b)| {
                                format!("{a}={}", b.as_str().map_or(b.to_string(), str::to_string))
                            })
                            .collect();
                        out.push_str(&format!("  {}\n", parts.join(" ")));
                    }
                }
                Value::String(s) => out.push_str(&format!("{k}: {s}\n")),
                other => out.push_str(&format!("{k}: {other}\n")),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_to_fid_matches_the_service() {
        let v = of("foo", 3);
        assert_eq!(v["id"], "61c00df73298beac:dcb27518fed9d577");
        assert_eq!(v["fid"], "<470000003298beac:dcb27518fed9d577>");
        assert_eq!(
            v["cobs"][1]["cob_fid"],
            "<430000013298beac:dcb27518fed9d577>"
        );
        assert_eq!(v["cobs"][3]["parity"], true);
    }

    #[test]
    fn decode_a_cob() {
        let f = Fid::parse("<430000023298beac:dcb27518fed9d577>").unwrap();
        let d = f.decode();
        assert_eq!(
            (d["type"].as_str(), d["device"].as_u64()),
            (Some("C"), Some(2))
        );
        assert_eq!(d["object"], "<470000003298beac:dcb27518fed9d577>");
        assert!(Fid::parse("nope").is_err());
        assert_eq!(
            Fid::parse("0x1:0x2").unwrap(),
            Fid {
                container: 1,
                key: 2
            }
        );
    }
}
