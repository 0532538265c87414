//! Regression corpus from fuzzing (host/fuzz): mutated components the host
//! must reject with a one-line error, and mutated manifests it must parse
//! or reject with a one-line error naming the file, never panicking.

use host::runtime::engine::{Loader, new_engine};
use std::path::{Path, PathBuf};

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

#[test]
fn every_mutated_component_in_the_corpus_is_rejected_cleanly() {
    let loader = Loader::new(new_engine(None).unwrap(), None).unwrap();
    for file in corpus("components") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&file).unwrap();
        match loader.load(&name, &bytes) {
            Ok(_) => panic!("{name} was accepted as a guest"),
            Err(e) => {
                let message = e.to_string();
                assert!(message.starts_with(&name), "{message}");
                assert!(
                    !message.contains('\n'),
                    "{name}: more than one line: {message}"
                );
            }
        }
    }
}

#[test]
fn every_mutated_manifest_in_the_corpus_parses_or_is_rejected_cleanly() {
    for file in corpus("manifests") {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Err(e) = host::config::manifest::parse(Path::new("corpus.toml"), &text) {
            let message = e.to_string();
            assert!(
                message.starts_with("corpus.toml"),
                "{}: {message}",
                file.display()
            );
            assert!(!message.contains('\n'), "{}: {message}", file.display());
        }
    }
}
