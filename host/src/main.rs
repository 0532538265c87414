//! The host: runs TCP servers written as WebAssembly components, each in a
//! sandbox that grants it its listen addresses and nothing else unless the
//! manifest says so. One tenant from the command line, or many from a
//! manifest, supervised side by side in one process. This file only parses
//! the command line; `host::app` does the rest.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match host::cli::Cli::try_parse() {
        Ok(cli) => host::app::main(cli),
        // --help and --version print and succeed; a wrong command line is
        // a usage error (64), not clap's 2.
        Err(e) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() {
                host::app::exit::USAGE
            } else {
                host::app::exit::OK
            })
        }
    }
}
