//! The host's modules depend on each other in one direction: the layers
//! named in `host/src/lib.rs` from the top down, and within each layer no
//! loop between its parts. Read from the source, as a reviewer would: a
//! `crate::` path (or `super::`) in code names what a module depends on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, from the top down: each may use only those after it.
const LAYERS: &[&str] = &[
    "app", "cli", "ops", "tenancy", "runtime", "wasi", "limits", "policy", "config", "account",
];

/// Every `.rs` file of the host's library, by module path.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue;
                }
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, out);
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

/// The unit a module belongs to for the loop check: a top-level module,
/// or a part of a layer folder (`wasi::sockets`, with what is below it).
fn unit(module: &[String]) -> String {
    module[..module.len().min(2)].join("::")
}

/// The code of a file: comments and the trailing test module left out.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file's code names: `crate::a::b`, `super::a`, and
/// each path of a group, `crate::a::{b, c::d}`.
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let begin = from + at;
            from = begin + start.len();
            if begin > 0 && (bytes[begin - 1].is_ascii_alphanumeric() || bytes[begin - 1] == b'_') {
                continue;
            }
            // `super` is the parent of the file's module (for a `mod.rs`,
            // of its folder's module).
            let base = if start == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            paths(&code[from..], base, &mut found);
        }
    }
    found
}

/// The paths of a use tree at the start of `text` (after a `::`), each
/// prefixed with `prefix`, into `out`; returns how much of `text` it read.
fn paths(text: &str, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut at = 0;
    loop {
        let rest = &text[at..];
        if let Some(group) = rest.strip_prefix('{') {
            at += 1;
            let mut used = 0;
            loop {
                let item = group[used..].trim_start();
                used += group[used..].len() - item.len();
                if item.starts_with('}') {
                    return at + used + 1;
                }
                used += paths(&group[used..], prefix.clone(), out);
                let after = group[used..].trim_start();
                used += group[used..].len() - after.len();
                if after.starts_with(',') {
                    used += 1;
                } else if after.starts_with('}') {
                    return at + used + 1;
                } else {
                    return at + used;
                }
            }
        }
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            out.push(prefix);
            return at;
        }
        at += ident.len();
        if ident != "self" {
            prefix.push(ident);
        }
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            out.push(prefix);
            return at;
        }
    }
}

#[test]
fn the_host_modules_depend_on_each_other_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong_way = Vec::new();
    for (module, path) in &modules {
        let text = std::fs::read_to_string(path).unwrap();
        let from = unit(module);
        for reference in references(module, &code(&text)) {
            // The longest known module the path starts with.
            let Some(target) = (1..=reference.len())
                .rev()
                .map(|n| reference[..n].to_vec())
                .find(|prefix| modules.contains_key(prefix))
            else {
                continue;
            };
            let to = unit(&target);
            if to == from {
                continue;
            }
            let layer = |m: &[String]| LAYERS.iter().position(|l| *l == m[0]);
            let (Some(a), Some(b)) = (layer(module), layer(&target)) else {
                panic!("{}: a top-level module missing from LAYERS", path.display());
            };
            if a > b {
                wrong_way.push(format!(
                    "{}: {} uses {} (a layer above it)",
                    path.display(),
                    module.join("::"),
                    target.join("::")
                ));
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(wrong_way.is_empty(), "{}", wrong_way.join("\n"));

    // No loop between units: a depth-first search finds no back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, bool>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let at = stack.iter().position(|n| n == node).unwrap();
                let mut cycle = stack[at..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node.to_owned(), false);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node.to_owned(), true);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        let cycle = visit(node, &edges, &mut state, &mut Vec::new());
        assert!(
            cycle.is_none(),
            "import loop: {}",
            cycle.unwrap().join(" -> ")
        );
    }
    // The check sees the real graph: the WASI layer's bindings use its
    // sockets, and the tenants implement its seam.
    assert!(edges["wasi::p2"].contains("wasi::sockets"));
    assert!(edges["tenancy::tenant"].contains("wasi::seam"));
}
