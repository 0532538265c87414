//! The host: runs TCP servers written as WebAssembly components, each in a
//! sandbox that grants it its listen addresses and nothing else unless the
//! manifest says so. One tenant from the command line, or many from a
//! manifest, supervised side by side in one process. This file only parses
//! the command line; `host::app` does the rest.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    host::app::main(host::cli::Cli::parse())
}
