//! The docs are kept in step with the code: every metric the host exports
//! is documented (and every documented one exported); every key the
//! manifest parser accepts is in the commented example, under its table,
//! and `--help` lists the built-in guests the build makes; and every
//! command a shell block in the README or `docs/` shows is run (the host's
//! and the client's), or checked against what it names (CI's steps, the
//! pinned tools, the files and worlds it uses) where it needs a cluster, a
//! registry account or a tool this project does not depend on.

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

/// The keys the manifest parser accepts in the table `header` (empty: the
/// top level), as it names them when refusing an unknown one.
fn keys_accepted_under(header: &str) -> Vec<String> {
    let dir = scratch_dir("docs-keys");
    let path = dir.join("unknown.toml");
    std::fs::write(&path, format!("{header}\nzz_unknown = 1\n")).unwrap();
    let output = std::process::Command::new(host_bin())
        .args(["--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = stderr
        .split("unknown field `zz_unknown`, expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("{header}: no list of keys in {stderr}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
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

/// Whether a table header of the example is the one a struct is written in.
type TableIs = fn(&str) -> bool;

#[test]
fn every_manifest_key_is_in_the_commented_example_under_its_own_table() {
    let example = std::fs::read_to_string(repo("host/tenants.example.toml")).unwrap();
    let sections = sections(&example);
    let mut missing = Vec::new();
    let mut checked = 0;
    // Each table the parser reads, and the example's tables it is in.
    let tables: [(&str, TableIs); 5] = [
        ("", |_| true),
        ("[host]", |h| h == "[host]"),
        ("[limits]", |h| h == "[limits]"),
        ("[[tenant]]", |h| h == "[[tenant]]"),
        ("[group.x]", |h| h.starts_with("[group.")),
    ];
    for (table, written_in) in tables {
        let lines: Vec<&str> = sections
            .iter()
            .filter(|(header, _)| written_in(header))
            .flat_map(|(_, lines)| lines.iter().copied())
            .collect();
        assert!(!lines.is_empty(), "no {table} table in the example");
        for key in keys_accepted_under(table) {
            checked += 1;
            let written = if table.is_empty() {
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
                missing.push(format!("{table}.{key}"));
            }
        }
    }
    assert!(checked >= 40, "only {checked} keys named by the parser");
    assert!(
        missing.is_empty(),
        "keys the parser accepts, missing from their table in host/tenants.example.toml: {missing:?}"
    );
}

#[test]
fn the_help_lists_every_built_in_guest_with_no_list_kept_by_hand() {
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
    let help = std::process::Command::new(host_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let listed = help
        .lines()
        .find_map(|l| l.trim().strip_prefix("Built in: "))
        .unwrap_or_else(|| panic!("--help lists no built-in guests: {help}"));
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
        "--help lists other built-in guests than guest/src/bin/ builds"
    );
    // The docs point there rather than keep a list that a new guest would
    // have to extend.
    let example = std::fs::read_to_string(repo("host/tenants.example.toml")).unwrap();
    assert!(example.contains("tcphost --help lists them"));
}

/// One command of a shell block in the docs, as a reader would run it.
#[derive(Debug, Clone)]
struct Shown {
    /// `file:line`, for the failure message.
    at: String,
    /// The directory it runs in, relative to the repository (after the
    /// block's `cd`s).
    cwd: PathBuf,
    /// Variables set before it (`export K=V` or `K=V command`).
    env: Vec<(String, String)>,
    /// Its words, comments and a trailing `&` removed.
    words: Vec<String>,
    /// `> FILE`, if its output is redirected.
    stdout_to: Option<String>,
}

/// Every command of every `sh` block in the README and `docs/`, in order.
fn shown_commands() -> Vec<Shown> {
    let mut docs = vec![repo("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    docs.extend(pages);
    let mut all = Vec::new();
    for doc in docs {
        let name = doc.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&doc).unwrap();
        let mut block: Option<(PathBuf, Vec<(String, String)>)> = None;
        let mut pending = String::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                block = match block {
                    None if line == "```sh" => Some((PathBuf::new(), Vec::new())),
                    None => None,
                    Some(_) => None,
                };
                continue;
            }
            let Some((cwd, env)) = block.as_mut() else {
                continue;
            };
            // A comment is cut at " #" (no command shown has a # of its own).
            let code = line.split(" #").next().unwrap();
            if code.trim_start().starts_with('#') {
                continue;
            }
            if let Some(more) = code.trim_end().strip_suffix('\\') {
                pending.push_str(more);
                continue;
            }
            let whole = std::mem::take(&mut pending) + code;
            for part in whole.split("&&") {
                let mut words: Vec<String> = part.split_whitespace().map(str::to_owned).collect();
                if words.last().is_some_and(|w| w == "&") {
                    words.pop();
                }
                let mut own_env = env.clone();
                while words
                    .first()
                    .is_some_and(|w| w.contains('=') && !w.starts_with('-'))
                {
                    let (k, v) = words
                        .remove(0)
                        .split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .unwrap();
                    own_env.push((k, v));
                }
                let stdout_to = words.iter().position(|w| w == ">").map(|at| {
                    let file = words[at + 1].clone();
                    words.truncate(at);
                    file
                });
                match words.first().map(String::as_str) {
                    None => {}
                    Some("cd") => cwd.push(&words[1]),
                    Some("export") => {
                        let (k, v) = words[1].split_once('=').unwrap();
                        env.push((k.to_owned(), v.to_owned()));
                    }
                    Some(_) => all.push(Shown {
                        at: format!("{name}:{}", i + 1),
                        cwd: cwd.clone(),
                        env: own_env,
                        words,
                        stdout_to,
                    }),
                }
            }
        }
    }
    all
}

/// The three forms of the repository's guests the host's build makes (the
/// `cargo build -p guest` features the docs show, and where the test build
/// put that form).
fn guest_form(features: &[String]) -> Option<&'static str> {
    match features.join(" ").as_str() {
        "" => Some(env!("TCPHOST_GUEST_DIR")),
        "--no-default-features" => Some(env!("TCPHOST_PORTABLE_GUEST_DIR")),
        "--no-default-features --features p3" => Some(env!("TCPHOST_P3_GUEST_DIR")),
        _ => None,
    }
}

/// A quoted constant's value in a source file: `NAME: &str = "VALUE"`.
fn constant(file: &str, name: &str) -> String {
    let text = std::fs::read_to_string(repo(file)).unwrap();
    let after = text
        .split(&format!("{name}: &str = \""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {file}"));
    after.split('"').next().unwrap().to_owned()
}

/// Whether the example servers of other languages were built (CI builds
/// them; see tests/examples.rs).
const EXAMPLES_BUILT: bool = cfg!(tcphost_examples);

/// Runs or checks every command the docs show; a command no rule knows
/// fails, so a new one must be run here or checked against what it names.
/// Returns the commands that need the other languages' examples built.
fn run_or_check_shown(only_examples: bool) -> usize {
    let shown = shown_commands();
    assert!(shown.len() >= 30, "only {} commands found", shown.len());
    let ci = std::fs::read_to_string(repo(".ci/run")).unwrap();
    let language_tools = std::fs::read_to_string(repo("tests/guests/languages.rs")).unwrap();
    let mut failures = Vec::new();
    let mut examples = 0;
    // Where a `cargo build` the docs show put its components.
    let mut built: Option<PathBuf> = None;
    // The manifest the last `--config` command ran.
    let mut last_config: Option<PathBuf> = None;
    let mut served: Option<(Host, std::net::SocketAddr)> = None;
    // The language whose example the last build command made.
    let mut example: Option<&str> = None;
    for s in &shown {
        let dir = repo("").join(&s.cwd);
        let mut fail =
            |why: String| failures.push(format!("{}: `{}`: {why}", s.at, s.words.join(" ")));
        let words: Vec<&str> = s.words.iter().map(String::as_str).collect();
        match words.as_slice() {
            [
                "cargo",
                "run",
                "-p",
                "host",
                "--bin",
                "tcp-client",
                "--",
                args @ ..,
            ] => {
                if only_examples {
                    continue;
                }
                let (_, addr) = served.get_or_insert_with(|| Host::serve(None));
                // The README's address is the default one; ours is free.
                let args: Vec<String> = args
                    .iter()
                    .map(|a| {
                        if a.parse::<std::net::SocketAddr>().is_ok() {
                            addr.to_string()
                        } else {
                            (*a).to_owned()
                        }
                    })
                    .collect();
                let out = std::process::Command::new(client_bin())
                    .args(&args)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() || !stdout.contains("socket server : ") {
                    fail(format!(
                        "{:?}: {stdout} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            ["cargo", "run", "-p", "host", rest @ ..] => {
                let args: Vec<&str> = match rest {
                    [] => Vec::new(),
                    ["--", args @ ..] => args.to_vec(),
                    _ => {
                        fail("cargo run -p host with arguments before --".into());
                        continue;
                    }
                };
                let mut needs_example = false;
                let mut mapped = Vec::new();
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 && args[i - 1] == "--config" {
                        last_config = Some(dir.join(arg));
                    }
                    mapped.push(match arg.strip_suffix(".wasm") {
                        // What the docs' last build made: the same build
                        // the test build ran, so its output.
                        Some(_) if arg.starts_with("target/") => match &built {
                            // A reader's own package, named in their path.
                            Some(at) if arg.ends_with("/yourserver.wasm") => {
                                at.join("std-echo.wasm").into_os_string()
                            }
                            Some(at) => at
                                .join(Path::new(arg).file_name().unwrap())
                                .into_os_string(),
                            None => {
                                fail("runs a build output no command shown builds".into());
                                continue;
                            }
                        },
                        // What another language's toolchain just made:
                        // the same build the test build ran.
                        Some(_) if example.is_some() => {
                            needs_example = true;
                            if EXAMPLES_BUILT {
                                test_guests::example(example.unwrap()).into_os_string()
                            } else {
                                arg.into()
                            }
                        }
                        _ => arg.into(),
                    });
                }
                if needs_example {
                    examples += 1;
                }
                if only_examples != needs_example {
                    continue;
                }
                let mut command = std::process::Command::new(host_bin());
                command.args(&mapped).current_dir(&dir).env(
                    "XDG_CACHE_HOME",
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache"),
                );
                if let Some(file) = &s.stdout_to {
                    // Rendered output: what the committed file holds.
                    let out = command.output().unwrap();
                    let expected = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                    if !out.status.success() || out.stdout != expected.as_bytes() {
                        fail(format!("its output is not what {file} holds"));
                    }
                } else {
                    // A server: checked as it would start, without serving.
                    let out = command.arg("--check").output().unwrap();
                    if !out.status.success() {
                        fail(format!("--check: {}", String::from_utf8_lossy(&out.stderr)));
                    }
                }
            }
            ["curl", "-s", url] if !only_examples => {
                // The admin endpoint of the manifest the docs just ran,
                // run here on free ports.
                let Some(config) = &last_config else {
                    fail("no manifest was run before it".into());
                    continue;
                };
                let text = std::fs::read_to_string(config).unwrap();
                let (admin, path) = url.split_at(url.find('/').unwrap());
                if !text.contains(&format!("admin = \"{admin}\"")) {
                    fail(format!(
                        "{} has no admin endpoint on {admin}",
                        config.display()
                    ));
                    continue;
                }
                let table: toml::Table = text.parse().unwrap();
                let names: Vec<String> = table["tenant"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_owned())
                    .collect();
                // The same manifest, without its comments (the harness
                // adds a control endpoint where none is written), on free
                // ports.
                let mut free: String = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect();
                for addr in text
                    .split('"')
                    .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
                {
                    free = free.replace(&format!("\"{addr}\""), "\"127.0.0.1:0\"");
                }
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let t = Tenants::start(&free, &names, &[]);
                let (code, body) = http_get(t.admin.unwrap(), path);
                if code != 200 || !body.starts_with('{') {
                    fail(format!("{code}: {body}"));
                }
            }
            ["cargo", "test", "--workspace"] => {
                if !ci.contains("\ncargo test --workspace\n") {
                    fail(".ci/run does not run it".into());
                }
                for (k, v) in &s.env {
                    if !ci.contains(&format!("export {k}={v}\n")) {
                        fail(format!(".ci/run does not set {k}={v}"));
                    }
                }
            }
            ["rustup", "target", "add", "wasm32-wasip2"] => {
                if !ci.contains("rustup target add wasm32-wasip2") {
                    fail(".ci/run does not run it".into());
                }
            }
            ["cargo", "build", "-p", "guest", args @ ..] => {
                let mut features = Vec::new();
                let mut rest = args.iter();
                let mut profile_and_target = 0;
                while let Some(arg) = rest.next() {
                    match *arg {
                        "--profile" | "--target" => {
                            let value = rest.next().copied().unwrap_or("");
                            profile_and_target +=
                                usize::from(["guest", "wasm32-wasip2"].contains(&value));
                        }
                        "--bin" => {
                            rest.next();
                        }
                        other => features.push(other.to_owned()),
                    }
                }
                built = guest_form(&features).map(PathBuf::from);
                example = None;
                if built.is_none() || profile_and_target != 2 {
                    fail(
                        "not one of the guest builds the host's build runs (host/build.rs)".into(),
                    );
                }
            }
            ["cargo", "build", "--release", "--target", "wasm32-wasip2"] => {
                // A reader's own std project: the docs' example is the
                // test guest std-echo (checked by the test below).
                built = Some(test_guest("std-echo").parent().unwrap().to_owned());
                if !test_guest("std-echo").is_file() {
                    fail("std-echo was not built".into());
                }
            }
            ["python3", "-m", "venv", "venv"] => {}
            ["venv/bin/pip", "install", pin] => {
                let expected = format!(
                    "componentize-py=={}",
                    constant("tests/guests/languages.rs", "COMPONENTIZE_PY")
                );
                if *pin != expected {
                    fail(format!("the test build installs {expected}"));
                }
            }
            [
                "venv/bin/componentize-py",
                "-d",
                wit,
                "-w",
                world,
                "componentize",
                module,
                "-o",
                _,
            ] => {
                example = Some("python");
                let (package, world) = world.split_once('/').unwrap_or(("", world));
                let wit_text =
                    std::fs::read_to_string(dir.join(wit).join("world.wit")).unwrap_or_default();
                if !wit_text.contains(&format!("package {package}"))
                    || !wit_text.contains(&format!("world {world} "))
                {
                    fail(format!(
                        "no world {package}/{world} in {wit}/world.wit from {}",
                        s.cwd.display()
                    ));
                }
                if !dir.join(format!("{module}.py")).is_file() {
                    fail(format!("no {module}.py in {}", s.cwd.display()));
                }
                if !language_tools.contains(&format!("\"{package}/{world}\"")) {
                    fail("the test build uses another world".into());
                }
            }
            ["guest/examples/c/build.sh", _] => {
                example = Some("c");
                if !language_tools.contains("build.sh") {
                    fail("the test build builds the C example otherwise".into());
                }
            }
            ["npm", "install", pin] => {
                let (tool, version) = pin.rsplit_once('@').unwrap();
                let package =
                    std::fs::read_to_string(repo("guest/examples/js/package.json")).unwrap();
                if !package.contains(&format!("\"{tool}\": \"{version}\"")) {
                    fail(format!(
                        "guest/examples/js/package.json pins another {tool}"
                    ));
                }
            }
            [
                "npx",
                "componentize-qjs",
                "--wit",
                wit,
                "--world",
                world,
                "--sync",
                "--js",
                js,
                "-o",
                _,
            ] => {
                example = Some("js");
                let wit_text =
                    std::fs::read_to_string(dir.join(wit).join("world.wit")).unwrap_or_default();
                if !wit_text.contains(&format!("world {world} ")) {
                    fail(format!("no world {world} in {wit}/world.wit"));
                }
                if !dir.join(js).is_file() {
                    fail(format!("no {js}"));
                }
                if !language_tools.contains(&format!("\"{world}\"")) {
                    fail("the test build uses another world".into());
                }
            }
            // Interactive: the default address the host serves on.
            ["nc", ip, port] => {
                let help = std::process::Command::new(host_bin())
                    .arg("--help")
                    .output()
                    .unwrap();
                if !String::from_utf8_lossy(&help.stdout)
                    .contains(&format!("[default: {ip}:{port}]"))
                {
                    fail("not the host's default address".into());
                }
            }
            // Stock wasmtime (not a dependency of this project): the
            // component it runs is the one the docs' build made.
            ["wasmtime", "run", .., file] => {
                let name = Path::new(file).file_name().unwrap();
                if !built.as_ref().is_some_and(|at| at.join(name).is_file()) {
                    fail("runs a component no command shown builds".into());
                }
            }
            ["wkg", "oci", "push", _, file] => {
                let name = Path::new(file).file_name().unwrap();
                if !built.as_ref().is_some_and(|at| at.join(name).is_file()) {
                    fail("pushes a component no command shown builds".into());
                }
            }
            // The fuzzers: run by hand (RUNS.md records the runs); what
            // they name exists, on the toolchain the guests build with.
            ["cargo", "install", "cargo-fuzz"] | ["rustup", "toolchain", "install", "nightly"] => {}
            [
                "cargo",
                "+nightly",
                "fuzz",
                "run",
                "-O",
                target,
                corpus,
                seeds,
                ..,
            ] => {
                // (The working corpus is made by the first run.)
                if !dir.join(format!("fuzz/fuzz_targets/{target}.rs")).is_file()
                    || !corpus.ends_with(&format!("corpus/{target}"))
                    || !dir.join(seeds).is_dir()
                {
                    fail(format!("no fuzz target {target} with seeds in {seeds}"));
                }
                let toolchain = std::fs::read_to_string(repo("rust-toolchain.toml")).unwrap();
                if !s.env.iter().any(|(k, v)| {
                    k == "TCPHOST_GUEST_TOOLCHAIN"
                        && toolchain.contains(&format!("channel = \"{v}\""))
                }) {
                    fail("TCPHOST_GUEST_TOOLCHAIN is not the pinned toolchain".into());
                }
            }
            // The container image: its Dockerfile is linted in CI, and
            // tagged with the package's version.
            ["docker", "build", "-t", tag, "."] => {
                if *tag != format!("tcphost:{}", env!("CARGO_PKG_VERSION"))
                    || !repo("Dockerfile").is_file()
                {
                    fail("not the Dockerfile, or not the package's version".into());
                }
            }
            // A cluster: the objects applied are those tests/deploy.rs and
            // CI's kubernetes-validate check.
            ["kubectl", "apply", "-k", at] => {
                if !dir.join(at).join("kustomization.yaml").is_file() {
                    fail(format!("no kustomization in {at}"));
                }
            }
            ["kubectl", "create", "secret", ..] | ["kubectl", "port-forward", ..] => {}
            // A swap through the control endpoint (tests/control.rs and
            // tests/registry.rs swap the same way).
            // Its address is the deployed manifest's control endpoint, its
            // tenant one the manifest runs.
            ["curl", "-X", "POST", ..] => {
                let deployed =
                    std::fs::read_to_string(repo("host/deploy/kubernetes/tenants.toml")).unwrap();
                let url = words.iter().find(|w| w.ends_with("/swap")).copied();
                let known = url.and_then(|url| {
                    let (addr, path) = url.split_once('/')?;
                    let tenant = path.strip_prefix("tenants/")?.strip_suffix("/swap")?;
                    let port = addr.rsplit(':').next()?;
                    Some(
                        deployed.contains(&format!("name = \"{tenant}\""))
                            && deployed.lines().any(|l| {
                                l.starts_with("control =") && l.contains(&format!(":{port}\""))
                            }),
                    )
                });
                if known != Some(true) {
                    fail("not a swap of a deployed tenant on the deployed control endpoint".into());
                }
            }
            _ if only_examples => {}
            _ => fail("no test runs or checks this command: add a rule in tests/docs.rs".into()),
        }
    }
    assert!(
        failures.is_empty(),
        "commands in the docs that do not work:\n{}",
        failures.join("\n")
    );
    examples
}

#[test]
fn every_command_in_the_docs_runs_or_is_checked_against_what_it_names() {
    let needing_examples = run_or_check_shown(false);
    assert!(
        needing_examples >= 3,
        "the Python, C and JavaScript runs are found"
    );
}

#[test]
#[cfg_attr(
    not(tcphost_examples),
    ignore = "needs TCPHOST_EXAMPLES=1 (CI sets it)"
)]
fn the_docs_commands_that_run_another_languages_example_work() {
    assert!(run_or_check_shown(true) >= 3, "Python, C and JavaScript");
}

#[test]
fn the_docs_std_example_is_the_tested_std_echo_guest() {
    let guests = std::fs::read_to_string(repo("docs/guests.md")).unwrap();
    let block = guests
        .split("```rust\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let source = std::fs::read_to_string(repo("tests/guests/src/bin/std-echo.rs")).unwrap();
    let code: String = source
        .lines()
        .filter(|l| !l.starts_with("//!"))
        .skip_while(|l| l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        block, code,
        "docs/guests.md's first example is not tests/guests/src/bin/std-echo.rs"
    );
}

/// GitHub's anchor for a heading: lower case, spaces as `-`, other
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The contents page `docs/README.md` should be: each page (in reading
/// order) with its `##` and `###` headings, linked.
fn contents() -> String {
    let mut out = String::from(
        "# Contents\n\n\
         The guides, in reading order (the [README](../README.md) is the\n\
         five-minute tour; [CONTRIBUTING.md](../CONTRIBUTING.md) is for\n\
         working on the code). `tests/docs.rs` keeps this list the pages' own\n\
         headings.\n",
    );
    for page in [
        "operators",
        "production",
        "guests",
        "security",
        "architecture",
        "benchmarks",
    ] {
        let text = std::fs::read_to_string(repo(&format!("docs/{page}.md"))).unwrap();
        let title = text.lines().next().unwrap().trim_start_matches("# ");
        out.push_str(&format!(
            "{}- [{title}]({page}.md)\n",
            if page == "operators" { "\n" } else { "" }
        ));
        let mut fenced = false;
        for line in text.lines() {
            fenced ^= line.starts_with("```");
            let (indent, heading) = match line {
                _ if fenced => continue,
                l if l.starts_with("## ") => ("  ", &l[3..]),
                l if l.starts_with("### ") => ("    ", &l[4..]),
                _ => continue,
            };
            out.push_str(&format!(
                "{indent}- [{}]({page}.md#{})\n",
                heading.replace('`', ""),
                anchor(heading)
            ));
        }
    }
    out
}

#[test]
fn the_contents_page_lists_every_guide_and_its_headings() {
    let pages: BTreeSet<String> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .collect();
    let expected = contents();
    for page in &pages {
        assert!(
            expected.contains(&format!("]({page})")),
            "docs/{page} is not in the contents"
        );
    }
    let written = std::fs::read_to_string(repo("docs/README.md")).unwrap_or_default();
    if std::env::var_os("TCPHOST_BLESS").is_some() && written != expected {
        std::fs::write(repo("docs/README.md"), &expected).unwrap();
        return;
    }
    assert!(
        written == expected,
        "docs/README.md is not the pages' headings (TCPHOST_BLESS=1 rewrites it); it should read:\n{expected}"
    );
}

#[test]
fn every_relative_link_in_the_docs_reaches_a_file_and_heading() {
    let mut pages = vec![repo("README.md"), repo("CONTRIBUTING.md")];
    pages.extend(
        std::fs::read_dir(repo("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, heading) = target.split_once('#').unwrap_or((&target, ""));
            let file = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let ok = file.exists()
                && (heading.is_empty()
                    || std::fs::read_to_string(&file).is_ok_and(|t| {
                        // Headings only: not a `#` line inside a code block.
                        let mut fenced = false;
                        t.lines()
                            .filter(|l| {
                                fenced ^= l.starts_with("```");
                                !fenced && l.starts_with('#')
                            })
                            .any(|h| anchor(h.trim_start_matches('#').trim()) == heading)
                    }));
            if !ok {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(checked >= 30, "only {checked} links found");
    assert!(broken.is_empty(), "links that lead nowhere: {broken:#?}");
}
