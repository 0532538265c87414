//! The references in the docs are kept in step with the code: every metric
//! the host exports is documented (and every documented one exported), and
//! every key the manifest parser accepts is in the commented example, whose
//! list of built-in guests is the one the build makes.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Every `tcphost_...` name the docs mention (a trailing `*` kept).
fn documented_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut docs = vec![repo("README.md")];
    docs.extend(
        std::fs::read_dir(repo("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    for doc in docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, _) in text.match_indices("tcphost_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '*')
                .collect();
            names.insert(name);
        }
    }
    names
}

#[test]
fn every_exported_metric_is_documented_and_every_documented_one_exported() {
    let manifest = "[host]\nadmin = \"127.0.0.1:0\"\n\n[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n";
    let t = Tenants::start(manifest, &["t"], &[]);
    let (code, text) = http_get(t.admin.unwrap(), "/metrics");
    assert_eq!(code, 200);
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|family| {
            // Counters are exported with their `_total` samples.
            let counter = text.contains(&format!("# TYPE {family} counter"));
            if counter {
                format!("{family}_total")
            } else {
                family.to_owned()
            }
        })
        .collect();
    let documented = documented_metrics();
    let covers = |doc: &String, name: &String| match doc.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => doc == name,
    };
    let undocumented: Vec<&String> = exported
        .iter()
        .filter(|name| !documented.iter().any(|doc| covers(doc, name)))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported, not documented: {undocumented:?}"
    );
    let unexported: Vec<&String> = documented
        .iter()
        .filter(|doc| !exported.iter().any(|name| covers(doc, name)))
        .collect();
    assert!(
        unexported.is_empty(),
        "documented, not exported: {unexported:?}"
    );
}

/// The serde keys of `struct NAME` in the manifest parser's source: each
/// field's name, or its `#[serde(rename = "...")]`.
fn keys_of(source: &syn::File, name: &str) -> Vec<String> {
    let key = |field: &syn::Field| {
        let mut key = field.ident.as_ref()?.to_string();
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    key = meta.value()?.parse::<syn::LitStr>()?.value();
                } else if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<syn::Expr>()?;
                }
                Ok(())
            })
            .unwrap();
        }
        Some(key)
    };
    source
        .items
        .iter()
        .find_map(|item| match item {
            syn::Item::Struct(s) if s.ident == name => Some(s.fields.iter().filter_map(key).collect()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no struct {name} in the manifest parser"))
}

/// The commented example's sections: each table header (written or
/// commented out, `[[tenant]]` once per tenant) with the lines under it.
fn sections(example: &str) -> Vec<(String, Vec<&str>)> {
    let mut all: Vec<(String, Vec<&str>)> = vec![(String::new(), Vec::new())];
    for line in example.lines() {
        let bare = line.trim_start_matches(['#', ' ']);
        if bare.starts_with('[') && bare.trim_end().ends_with(']') && !bare.contains('=') {
            all.push((bare.trim_end().to_owned(), Vec::new()));
        } else {
            all.last_mut().unwrap().1.push(line);
        }
    }
    all
}

#[test]
fn every_manifest_key_is_in_the_commented_example_under_its_own_table() {
    let source = std::fs::read_to_string(repo("host/src/config/manifest.rs")).unwrap();
    let source = syn::parse_file(&source).unwrap();
    let example = std::fs::read_to_string(repo("host/tenants.example.toml")).unwrap();
    let sections = sections(&example);
    let mut missing = Vec::new();
    let mut checked = 0;
    // Each parser struct, and the tables of the example it is written in.
    let tables: [(&str, &dyn Fn(&str) -> bool); 5] = [
        ("RawManifest", &|_| true),
        ("RawHost", &|h| h == "[host]"),
        ("RawLimits", &|h| h == "[limits]"),
        ("RawTenant", &|h| h == "[[tenant]]"),
        ("RawGroup", &|h| h.starts_with("[group.")),
    ];
    for (raw, table) in tables {
        let lines: Vec<&str> = sections
            .iter()
            .filter(|(header, _)| table(header))
            .flat_map(|(_, lines)| lines.iter().copied())
            .collect();
        assert!(!lines.is_empty(), "no table for {raw} in the example");
        for key in keys_of(&source, raw) {
            checked += 1;
            let written = if raw == "RawManifest" {
                // The top-level keys are the tables themselves.
                sections.iter().any(|(header, _)| {
                    header.trim_matches(['[', ']']).split('.').next() == Some(key.as_str())
                })
            } else {
                // As `key =` (or `# key =`), or inside an inline table.
                lines.iter().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} ="))
                        || l.contains(&format!("{{ {key} ="))
                        || l.contains(&format!(", {key} ="))
                })
            };
            if !written {
                missing.push(format!("{raw}.{key}"));
            }
        }
    }
    assert!(
        checked >= 40,
        "only {checked} keys found in the parser's source"
    );
    assert!(
        missing.is_empty(),
        "keys the parser accepts, missing from their table in host/tenants.example.toml: {missing:?}"
    );
}

#[test]
fn the_examples_list_of_built_in_guests_is_the_built_one() {
    let mut built: Vec<String> = std::fs::read_dir(repo("guest/src/bin"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".rs")
                .map(str::to_owned)
        })
        .collect();
    built.sort();
    let example = std::fs::read_to_string(repo("host/tenants.example.toml")).unwrap();
    let listed = example
        .lines()
        .find_map(|l| l.split("# built in: ").nth(1))
        .expect("the example lists the built-in guests");
    let mut listed: Vec<String> = listed
        .split(';')
        .next()
        .unwrap()
        .split(',')
        .map(|n| n.trim().to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed, built,
        "host/tenants.example.toml lists other built-in guests than guest/src/bin/ builds"
    );
}
