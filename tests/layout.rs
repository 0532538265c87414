//! The host's modules depend on each other in one direction: the layers
//! named in `host/src/lib.rs` from the top down, and no loop between any
//! two of the library's files. Read from the source as Rust (with `syn`): a
//! path that names a module of the host (`crate::`, `super::`, `self::`, a
//! child module, or a name a module-level `use` bound to one, directly or
//! through a glob; in code, and in macro arguments) is a dependency of the
//! file it is written in. Visibility paths (`pub(in crate::x)`) are not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// The layers, from the top down: each may use only those after it.
const LAYERS: &[&str] = &[
    "app", "cli", "ops", "tenancy", "registry", "runtime", "wasi", "limits", "policy", "config",
    "account",
];

type Module = Vec<String>;

/// Every `.rs` file of the host's library, by module path.
fn files(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                // src/bin/ holds other binaries, not the library.
                if !(prefix.is_empty() && name == "bin") {
                    let mut inner = prefix.to_vec();
                    inner.push(name);
                    walk(&path, &inner, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut module = prefix.to_vec();
                match name.as_str() {
                    "mod" => {}
                    "lib" | "main" if prefix.is_empty() => continue,
                    _ => module.push(name),
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// Inline modules (`mod tests { .. }`) of a file whose module is `at`.
struct Inline<'a> {
    at: Module,
    out: &'a mut BTreeSet<Module>,
}

impl<'ast> Visit<'ast> for Inline<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if item.content.is_some() {
            self.at.push(item.ident.to_string());
            self.out.insert(self.at.clone());
            syn::visit::visit_item_mod(self, item);
            self.at.pop();
        }
    }
}

/// The module paths one file's code names.
struct Scan<'a> {
    modules: &'a BTreeSet<Module>,
    /// The module being read (the file's, or an inline one in it).
    at: Module,
    /// Names `use` bound to modules, per module scope.
    aliases: Vec<BTreeMap<String, Module>>,
    /// Modules glob-imported (`use m::*`), per module scope.
    globs: Vec<Vec<Module>>,
    found: Vec<Module>,
    unresolved: Vec<String>,
}

impl Scan<'_> {
    /// The module (or item in one) that `segments` names from here, if it
    /// is the host's.
    fn resolve(&self, segments: &[String]) -> Option<Module> {
        let (first, rest) = segments.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.at.clone(),
            "super" => {
                let mut base = self.at.clone();
                base.pop();
                let mut rest = rest;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                return Some(base);
            }
            _ => {
                let mut child = self.at.clone();
                child.push(first.clone());
                let through_glob = self.globs.iter().flatten().find_map(|glob| {
                    let mut inner = glob.clone();
                    inner.push(first.clone());
                    self.modules.contains(&inner).then_some(inner)
                });
                if self.modules.contains(&child) {
                    child
                } else if let Some(target) = self.aliases.iter().rev().find_map(|a| a.get(first)) {
                    target.clone()
                } else {
                    through_glob?
                }
            }
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// Records a path, failing the check if it climbs out of the crate.
    fn record(&mut self, segments: Vec<String>) {
        let relative = matches!(
            segments.first().map(String::as_str),
            Some("crate" | "super" | "self")
        );
        // A relative path must name a module below the crate root (or the
        // root itself, as `use crate::*` does).
        match self.resolve(&segments) {
            Some(target) if target.is_empty() => {}
            Some(target) if known_prefix(self.modules, &target).is_some_and(|m| !m.is_empty()) => {
                self.found.push(target);
            }
            _ if relative => self.unresolved.push(segments.join("::")),
            _ => {}
        }
    }

    /// Every full path of a `use` tree under `prefix`, with the name each
    /// binds (`None` for a glob).
    fn use_paths(
        tree: &syn::UseTree,
        prefix: Vec<String>,
        out: &mut Vec<(Vec<String>, Option<String>)>,
    ) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut next = prefix;
                next.push(p.ident.to_string());
                Self::use_paths(&p.tree, next, out);
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let mut full = prefix;
                if name != "self" {
                    full.push(name.clone());
                }
                let bound = if name == "self" {
                    full.last().cloned()
                } else {
                    Some(name)
                };
                out.push((full, bound));
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix;
                full.push(r.ident.to_string());
                out.push((full, Some(r.rename.to_string())));
            }
            syn::UseTree::Glob(_) => out.push((prefix, None)),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    Self::use_paths(item, prefix.clone(), out);
                }
            }
        }
    }
}

/// The longest known module `path` starts with.
fn known_prefix(modules: &BTreeSet<Module>, path: &[String]) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

impl Scan<'_> {
    /// Binds the names a module's `use` items bring in, before its code is
    /// read (a `use` may follow the code that relies on it).
    fn bind(&mut self, items: &[syn::Item]) {
        for item in items {
            let syn::Item::Use(item) = item else { continue };
            let mut paths = Vec::new();
            Self::use_paths(&item.tree, Vec::new(), &mut paths);
            for (path, bound) in paths {
                let Some(target) = self.resolve(&path) else {
                    continue;
                };
                if !self.modules.contains(&target) {
                    continue;
                }
                match bound {
                    Some(name) => {
                        self.aliases.last_mut().unwrap().insert(name, target);
                    }
                    None => self.globs.last_mut().unwrap().push(target),
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Scan<'_> {
    fn visit_file(&mut self, file: &'ast syn::File) {
        self.bind(&file.items);
        syn::visit::visit_file(self, file);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if let Some((_, items)) = &item.content {
            self.at.push(item.ident.to_string());
            self.aliases.push(BTreeMap::new());
            self.globs.push(Vec::new());
            self.bind(items);
            syn::visit::visit_item_mod(self, item);
            self.globs.pop();
            self.aliases.pop();
            self.at.pop();
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        Self::use_paths(&item.tree, Vec::new(), &mut paths);
        for (path, _) in paths {
            self.record(path);
        }
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(in crate::x)` says who may see an item, not what it uses.
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Macro arguments are tokens, not syntax: every `a :: b :: c` not
        // itself after a `::` (or a `$`) is a path, resolved as any other.
        let tokens: Vec<String> = mac
            .tokens
            .to_string()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let ident = |t: &String| t.chars().all(|c| c.is_alphanumeric() || c == '_');
        for i in 0..tokens.len() {
            let after_path = i > 0 && matches!(tokens[i - 1].as_str(), "::" | "$");
            if after_path
                || !ident(&tokens[i])
                || tokens.get(i + 1).map(String::as_str) != Some("::")
            {
                continue;
            }
            let mut segments = vec![tokens[i].clone()];
            let mut j = i + 2;
            while let Some(next) = tokens.get(j).filter(|t| ident(t)) {
                segments.push(next.clone());
                if tokens.get(j + 1).map(String::as_str) != Some("::") {
                    break;
                }
                j += 2;
            }
            self.record(segments);
        }
        syn::visit::visit_macro(self, mac);
    }
}

/// What a file's code at module `at` names, given every module there is:
/// the paths found, and the relative ones that name nothing.
fn scan(modules: &BTreeSet<Module>, at: &Module, file: &syn::File) -> (Vec<Module>, Vec<String>) {
    let mut scan = Scan {
        modules,
        at: at.clone(),
        aliases: vec![BTreeMap::new()],
        globs: vec![Vec::new()],
        found: Vec::new(),
        unresolved: Vec::new(),
    };
    scan.visit_file(file);
    (scan.found, scan.unresolved)
}

/// The file-to-file dependencies of the host's library.
fn dependencies(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let files = files(src);
    let parsed: BTreeMap<Module, syn::File> = files
        .iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(path).unwrap();
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (module.clone(), file)
        })
        .collect();
    let mut modules: BTreeSet<Module> = files.keys().cloned().collect();
    modules.insert(Vec::new());
    for (module, file) in &parsed {
        Inline {
            at: module.clone(),
            out: &mut modules,
        }
        .visit_file(file);
    }
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (module, file) in &parsed {
        let (found, names_nothing) = scan(&modules, module, file);
        for path in names_nothing {
            unresolved.push(format!("{}: {path}", files[module].display()));
        }
        for target in found {
            // The file the target is in (an inline module is its file's).
            let Some(file) = (1..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|prefix| files.contains_key(prefix))
            else {
                continue;
            };
            if &file != module {
                edges.entry(module.clone()).or_default().insert(file);
            }
        }
    }
    assert!(
        unresolved.is_empty(),
        "paths that name nothing in the host:\n{}",
        unresolved.join("\n")
    );
    edges
}

/// A loop in `edges`, if there is one.
fn find_loop(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeMap<Module, bool>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        match done.get(node) {
            Some(true) => return None,
            Some(false) => {
                let at = stack.iter().position(|n| n == node).unwrap();
                let mut cycle = stack[at..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            None => {}
        }
        done.insert(node.clone(), false);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone(), true);
        None
    }
    let mut done = BTreeMap::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn the_host_modules_depend_on_each_other_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = dependencies(&src);

    let layer = |m: &Module| {
        LAYERS
            .iter()
            .position(|l| Some(*l) == m.first().map(String::as_str))
            .unwrap_or_else(|| panic!("{} is in no layer of LAYERS", name(m)))
    };
    let wrong_way: Vec<String> = edges
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |to| (from, to)))
        .filter(|(from, to)| layer(from) > layer(to))
        .map(|(from, to)| format!("{} uses {}, a layer above it", name(from), name(to)))
        .collect();
    assert!(wrong_way.is_empty(), "{}", wrong_way.join("\n"));

    if let Some(cycle) = find_loop(&edges) {
        let names: Vec<String> = cycle.iter().map(name).collect();
        panic!("import loop: {}", names.join(" -> "));
    }

    // The check sees the real graph: the WASI 0.2 bindings use the sockets
    // core, the tenant implements the seam, a folder's mod.rs its files.
    let has = |from: &str, to: &str| {
        let split = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
        edges
            .get(&split(from))
            .is_some_and(|t| t.contains(&split(to)))
    };
    assert!(has("wasi::p2::tcp", "wasi::sockets::tcp"));
    assert!(has("tenancy::tenant", "wasi::seam"));
    assert!(has("wasi::p2", "wasi::p2::tcp"));
    assert!(has("wasi::view", "wasi::sockets::tcp"));
}

#[test]
fn the_check_finds_a_loop_and_a_layer_used_from_below() {
    let module = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
    let mut edges = BTreeMap::new();
    edges.insert(module("a::x"), BTreeSet::from([module("a::y")]));
    edges.insert(module("a::y"), BTreeSet::from([module("a::z")]));
    assert!(find_loop(&edges).is_none());
    edges.insert(module("a::z"), BTreeSet::from([module("a::x")]));
    assert_eq!(find_loop(&edges).unwrap().len(), 4);
}

#[test]
fn the_scanner_follows_each_kind_of_path_and_not_visibility() {
    let module = |s: &str| -> Module {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split("::").map(str::to_owned).collect()
        }
    };
    let modules: BTreeSet<Module> = ["", "a", "a::b", "a::c", "a::b::tests", "d", "e"]
        .into_iter()
        .map(module)
        .collect();
    let found = |source: &str| -> BTreeSet<String> {
        let file = syn::parse_file(source).unwrap();
        let (found, unresolved) = scan(&modules, &module("a::b"), &file);
        assert!(unresolved.is_empty(), "{unresolved:?}");
        found
            .iter()
            .filter_map(|t| known_prefix(&modules, t))
            .map(|m| m.join("::"))
            .collect()
    };
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(found("pub(in crate::d) fn f() {}"), set(&[]));
    assert_eq!(found("fn f() { let _ = crate::d::X; }"), set(&["d"]));
    assert_eq!(found("fn f() { let _ = super::c::X; }"), set(&["a::c"]));
    // An alias bound by a `use` written after the code.
    assert_eq!(
        found("fn f() { let _ = cc::X; } use super::c as cc;"),
        set(&["a::c"])
    );
    // A glob brings child modules into scope.
    assert_eq!(found("use crate::*; fn f() { let _ = e::X; }"), set(&["e"]));
    // In a test module, `super` is the file's module.
    assert_eq!(
        found("mod tests { fn f() { let _ = super::super::c::X; } }"),
        set(&["a::c"])
    );
    // Paths in macro arguments, relative ones too.
    assert_eq!(
        found("fn f() { assert!(super::c::X == crate::d::Y); }"),
        set(&["a::c", "d"])
    );
    // A relative path that names nothing fails the check.
    let file = syn::parse_file("fn f() { let _ = super::super::super::X; }").unwrap();
    assert!(!scan(&modules, &module("a::b"), &file).1.is_empty());
}
