//! The guests built into the host (`builtin:NAME` in a manifest): one per
//! file in `guest/src/bin/`, built and listed by the build script, each in
//! every form of [`FORMS`] (`builtin:NAME@FORM`; `builtin:NAME` is the
//! first form).

include!(concat!(env!("OUT_DIR"), "/builtin_guests.rs"));

/// The default guest (the seed server from `guest/`, in its default form):
/// the first built-in.
pub fn default_guest() -> &'static [u8] {
    BUILTIN_GUESTS[0].1
}

/// The built-in guests, for messages: `seed, echo, ... (each also as
/// NAME@p2, NAME@p2-portable)`.
pub fn builtin_names() -> String {
    let names: Vec<&str> = BUILTIN_GUESTS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !name.contains('@'))
        .collect();
    let forms: Vec<String> = FORMS.iter().map(|form| format!("NAME@{form}")).collect();
    format!("{}; each also as {}", names.join(", "), forms.join(", "))
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
        assert_eq!(default_guest(), builtin("seed@p2").unwrap());
        built.sort();
        let mut expected: Vec<String> = files.clone();
        for form in FORMS {
            expected.extend(files.iter().map(|name| format!("{name}@{form}")));
        }
        expected.sort();
        assert_eq!(built, expected);
        for name in &files {
            assert!(builtin_names().contains(name.as_str()));
            // The default form is the first, and the forms differ.
            assert_eq!(builtin(name), builtin(&format!("{name}@{}", FORMS[0])));
            assert_ne!(builtin(name), builtin(&format!("{name}@{}", FORMS[1])));
        }
    }
}
