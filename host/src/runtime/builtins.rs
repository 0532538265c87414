//! The guests built into the host (`builtin:NAME` in a manifest): one per
//! file in `guest/src/bin/`, built and listed by the build script.

include!(concat!(env!("OUT_DIR"), "/builtin_guests.rs"));

/// The default guest (the seed server from `guest/`): the first built-in.
pub const DEFAULT_GUEST: &[u8] = BUILTIN_GUESTS[0].1;

/// The names of the built-in guests, for messages: `seed, echo, ...`.
pub fn builtin_names() -> String {
    let names: Vec<&str> = BUILTIN_GUESTS.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

/// The built-in guest named `name`.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTIN_GUESTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_file_in_the_guest_bin_directory_is_a_built_in_and_seed_is_the_default() {
        let bins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/src/bin");
        let mut files: Vec<String> = std::fs::read_dir(bins)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs") || p.join("main.rs").is_file())
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut built: Vec<String> = BUILTIN_GUESTS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(built[0], "seed");
        assert_eq!(DEFAULT_GUEST, BUILTIN_GUESTS[0].1);
        built.sort();
        assert_eq!(built, files);
        for name in &files {
            assert!(builtin_names().contains(name.as_str()));
        }
    }
}
