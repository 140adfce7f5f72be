//! Guards the rule "no dependency circles between modules": walks the
//! crate's module tree from `lib.rs`, collects each file's `crate::MODULE`
//! (and `super::`) references between top-level modules, and fails on a
//! circle. `cargo test -p ri-user --lib module_deps -- --nocapture` prints
//! the graph's circles and the files that make them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// Circles among top-level modules in non-test code, known and not yet
/// broken (each sorted). A new circle fails the test; so does a circle
/// listed here that is gone (then remove it from the list).
///
/// `capture`, `remote` and `serve` parse instruments' command lines with
/// `cli::Cli` while `cli` builds their options (and holds `remote`'s
/// `FleetArgs`); the way out is `cli` parsing for them (as it does for
/// `pack` with `cli::instrument_command`).
const KNOWN: &[&[&str]] = &[&["capture", "cli", "remote", "serve"]];

/// One reference: the top-level module of the file, the one referred to,
/// the file, and whether it is test-only code.
#[derive(Clone, Debug)]
struct Ref {
    from: String,
    to: String,
    file: String,
    test: bool,
}

/// Collects the references of one file.
struct Refs<'a> {
    /// Module path of the code being visited (`["agg", "live"]`).
    module: Vec<String>,
    file: &'a str,
    test: bool,
    top: &'a BTreeSet<String>,
    out: Vec<Ref>,
}

/// Whether the attributes hold `#[cfg(test)]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string() == "test")
    })
}

impl Refs<'_> {
    /// Records a path's target given its leading segments.
    fn record(&mut self, segs: &[String]) {
        let rest: &[String] = match segs.first().map(String::as_str) {
            Some("crate") => &segs[1..],
            Some("super") => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                if ups >= self.module.len() {
                    &segs[ups..]
                } else {
                    return;
                }
            }
            _ => return,
        };
        let (Some(to), Some(from)) = (rest.first(), self.module.first()) else {
            return;
        };
        if to != from && self.top.contains(to) {
            self.out.push(Ref {
                from: from.clone(),
                to: to.clone(),
                file: self.file.to_string(),
                test: self.test,
            });
        }
    }

    /// `crate :: NAME` inside a macro's tokens.
    fn scan_tokens(&mut self, tokens: proc_macro2::TokenStream) {
        use proc_macro2::TokenTree;
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tt) in tts.iter().enumerate() {
            match tt {
                TokenTree::Group(g) => self.scan_tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" || id == "super" => {
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (tts.get(j), tts.get(j + 1))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        match tts.get(j + 2) {
                            Some(TokenTree::Ident(n)) => segs.push(n.to_string()),
                            _ => break,
                        }
                        j += 3;
                    }
                    self.record(&segs);
                }
                _ => {}
            }
        }
    }

    /// Every path a `use` tree names, from its root.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, n.ident.to_string()),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, r.ident.to_string()),
            syn::UseTree::Glob(_) => self.record(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &mut Vec<String>, name: String) {
        prefix.push(name);
        self.record(prefix);
        prefix.pop();
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segs);
        syn::visit::visit_path(self, p);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let was = self.test;
        self.test |= is_test(&u.attrs);
        self.use_tree(&mut Vec::new(), &u.tree);
        self.test = was;
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.scan_tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let was = self.test;
        self.test |= is_test(&m.attrs);
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
        self.test = was;
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let was = self.test;
        self.test |= is_test(&f.attrs);
        syn::visit::visit_item_fn(self, f);
        self.test = was;
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        let was = self.test;
        self.test |= is_test(&i.attrs);
        syn::visit::visit_item_impl(self, i);
        self.test = was;
    }
}

/// Reads the module at `file` (module path `module`) and every file module
/// it declares.
fn walk(
    src: &Path,
    file: &Path,
    module: Vec<String>,
    test: bool,
    top: &BTreeSet<String>,
    out: &mut Vec<Ref>,
) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let rel = file.strip_prefix(src).unwrap_or(file).display().to_string();
    let mut refs = Refs {
        module: module.clone(),
        file: &rel,
        test,
        top,
        out: Vec::new(),
    };
    refs.visit_file(&ast);
    out.append(&mut refs.out);
    // A `mod NAME;` lives in DIR/NAME.rs or DIR/NAME/mod.rs, where DIR is
    // this file's folder for mod.rs/lib.rs, else the folder named after it.
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs") => file.parent().expect("in src").to_path_buf(),
        _ => file.with_extension(""),
    };
    for item in &ast.items {
        let syn::Item::Mod(m) = item else { continue };
        if m.content.is_some() || m.ident == "module_deps" {
            continue;
        }
        let name = m.ident.to_string();
        let path = [
            dir.join(format!("{name}.rs")),
            dir.join(&name).join("mod.rs"),
        ]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no file for mod {name} in {}", dir.display()));
        let mut sub = module.clone();
        sub.push(name);
        walk(src, &path, sub, test || is_test(&m.attrs), top, out);
    }
}

/// The crate's top-level modules as declared in `lib.rs`, but `error`: the
/// root's `Error` wraps every module's error enum, and modules name it as
/// `crate::Error`.
fn top_modules(lib: &Path) -> BTreeSet<String> {
    let ast = syn::parse_file(&std::fs::read_to_string(lib).expect("lib.rs")).expect("lib.rs");
    ast.items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) if m.ident != "error" && m.ident != "module_deps" => {
                Some(m.ident.to_string())
            }
            _ => None,
        })
        .collect()
}

/// Groups of modules that each reach every other (strongly connected
/// components with more than one module), each sorted.
fn circles(edges: &BTreeSet<(String, String)>) -> BTreeSet<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(n) = todo.pop() {
            for &m in next.get(n).into_iter().flatten() {
                if seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<&str>> = next.keys().map(|&n| (n, reach(n))).collect();
    let mut out = BTreeSet::new();
    for (&n, r) in &reaches {
        let group: Vec<String> = (r.iter())
            .filter(|&&m| m == n || reaches.get(m).is_some_and(|rm| rm.contains(n)))
            .map(|m| m.to_string())
            .collect();
        if group.len() > 1 {
            out.insert(group);
        }
    }
    out
}

/// Text listing each circle's edges and the files that make them.
fn describe(circles: &BTreeSet<Vec<String>>, refs: &[&Ref]) -> String {
    let mut s = String::new();
    for group in circles {
        s += &format!("circle: {}\n", group.join(", "));
        let mut files: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
        for r in refs {
            if group.contains(&r.from) && group.contains(&r.to) {
                files.entry((&r.from, &r.to)).or_default().insert(&r.file);
            }
        }
        for ((a, b), f) in files {
            let f: Vec<&str> = f.into_iter().collect();
            s += &format!("  {a} -> {b}: {}\n", f.join(", "));
        }
    }
    s
}

#[test]
fn no_circles_between_top_level_modules() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = src.join("lib.rs");
    let top = top_modules(&lib);
    let mut refs = Vec::new();
    walk(&src, &lib, Vec::new(), false, &top, &mut refs);
    assert!(
        refs.iter().any(|r| r.from == "agg" && !r.test),
        "no references found: the walk is broken"
    );
    let code: Vec<&Ref> = refs.iter().filter(|r| !r.test).collect();
    let all: Vec<&Ref> = refs.iter().collect();
    let edges = |rs: &[&Ref]| -> BTreeSet<(String, String)> {
        rs.iter().map(|r| (r.from.clone(), r.to.clone())).collect()
    };
    let found = circles(&edges(&code));
    let with_tests = circles(&edges(&all));
    println!("{}", describe(&found, &code));
    let test_only: BTreeSet<_> = with_tests.difference(&found).cloned().collect();
    if !test_only.is_empty() {
        println!("with test code also:\n{}", describe(&test_only, &all));
    }
    let known: BTreeSet<Vec<String>> = (KNOWN.iter())
        .map(|g| g.iter().map(|s| s.to_string()).collect())
        .collect();
    let new: BTreeSet<_> = found.difference(&known).cloned().collect();
    assert!(
        new.is_empty(),
        "dependency circles between modules:\n{}",
        describe(&new, &code)
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "circles in KNOWN no longer exist, remove them: {gone:?}"
    );
}
