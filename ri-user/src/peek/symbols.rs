//! ELF symbols of every file a process maps, at their addresses in the
//! process: names pointers (`0x7f2bf9b5f890 <conf_node_create>`).

use std::path::Path;

use object::{Object, ObjectSymbol, SymbolKind};

/// Function and data symbols by address in one process.
#[derive(Debug, Default)]
pub struct Symbols {
    /// (address, size, name), sorted by address.
    syms: Vec<(u64, u64, String)>,
}

impl Symbols {
    /// Adds the symbols of `path`, loaded `bias` bytes above its virtual
    /// addresses (`.symtab`, else `.dynsym`).
    pub fn add(&mut self, path: &Path, bias: u64) {
        let Ok(data) = std::fs::read(path) else {
            return;
        };
        let Ok(file) = object::File::parse(&*data) else {
            return;
        };
        let mut add = |s: object::Symbol<'_, '_>| {
            let named = matches!(s.kind(), SymbolKind::Text | SymbolKind::Data);
            if let (true, Ok(name)) = (named && s.address() != 0, s.name())
                && !name.is_empty()
            {
                self.syms
                    .push((s.address().wrapping_add(bias), s.size(), name.to_string()));
            }
        };
        file.symbols().for_each(&mut add);
        file.dynamic_symbols().for_each(&mut add);
    }

    /// Sorts the symbols once all files are added.
    pub fn finish(&mut self) {
        self.syms.sort();
        self.syms.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    }

    /// `name` or `name+0x10` for an address inside a symbol.
    pub fn name(&self, addr: u64) -> Option<String> {
        let i = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (start, size, name) = &self.syms[i];
        let off = addr - start;
        match off {
            0 => Some(name.clone()),
            o if o < *size => Some(format!("{name}+{o:#x}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Symbols;

    #[test]
    fn names_inside_symbols_only() {
        let mut s = Symbols {
            syms: vec![(0x2000, 8, "g".into()), (0x1000, 0x20, "f".into())],
        };
        s.finish();
        assert_eq!(s.name(0x1000).as_deref(), Some("f"));
        assert_eq!(s.name(0x1010).as_deref(), Some("f+0x10"));
        assert_eq!(s.name(0x1020), None);
        assert_eq!(s.name(0x2000).as_deref(), Some("g"));
        assert_eq!(s.name(0xfff), None);
    }
}
