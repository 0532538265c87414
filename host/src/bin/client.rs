//! The client the seed tutorial pairs with its server: connects to a TCP
//! server, sends each line typed on stdin (or `--message`, `--count` times)
//! and prints each reply.

use anyhow::{Context, bail};
use clap::Parser;
use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Talks to a TCP server one message at a time and prints every reply (the
/// seed's server's counterpart; tcphost runs such servers).
#[derive(Debug, Parser)]
#[command(name = "tcp-client", version)]
struct Args {
    /// The server's address.
    #[arg(value_name = "HOST:PORT", default_value = "127.0.0.1:9800")]
    addr: String,

    /// Send this message instead of reading lines from stdin.
    #[arg(long, short)]
    message: Option<String>,

    /// How many times to send --message (at least 1). `-n`, as `-c` is
    /// tcphost's --config.
    #[arg(
        long,
        short = 'n',
        default_value_t = 1,
        requires = "message",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    count: u64,

    /// Seconds to wait for connecting and for each reply (at least 1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// Print the completions for SHELL (bash, zsh, fish, elvish,
    /// powershell) and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) and exit.
    #[arg(long, exclusive = true)]
    man: bool,
}

/// After the first bytes of a reply, how long to wait for more before the
/// reply counts as complete (for servers whose replies end without a newline).
const REPLY_SETTLE: Duration = Duration::from_millis(100);

/// Exit statuses, as tcphost's (sysexits): a wrong command line, a server
/// that cannot be reached or does not answer, anything else.
const USAGE: u8 = 64;
const UNAVAILABLE: u8 = 69;
const SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE } else { 0 });
        }
    };
    if let Some(shell) = args.completions {
        use clap::CommandFactory;
        let mut command = Args::command();
        clap_complete::generate(shell, &mut command, "tcp-client", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if args.man {
        use clap::CommandFactory;
        return match clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(SOFTWARE)
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let network = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some()
                    || c.to_string().starts_with("no reply within")
                    || c.to_string().starts_with("the server closed")
            });
            ExitCode::from(if network { UNAVAILABLE } else { SOFTWARE })
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let addr = args
        .addr
        .to_socket_addrs()
        .with_context(|| format!("{:?} is not a HOST:PORT address", args.addr))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.addr))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut stdout = std::io::stdout().lock();

    let mut send = |message: &str| -> anyhow::Result<()> {
        stream
            .write_all(format!("{message}\n").as_bytes())
            .with_context(|| format!("sending to {addr}"))?;
        let reply = read_reply(&mut stream, timeout)
            .with_context(|| format!("reading the reply from {addr}"))?;
        writeln!(stdout, "{}", reply.trim_end_matches(['\r', '\n']))?;
        stdout.flush()?;
        Ok(())
    };

    match &args.message {
        Some(message) => (0..args.count).try_for_each(|_| send(message)),
        None => {
            for line in std::io::stdin().lock().lines() {
                send(&line.context("reading stdin")?)?;
            }
            Ok(())
        }
    }
}

/// Reads one reply: whatever the server answers to one message, up to its
/// newline, or until it pauses for [`REPLY_SETTLE`].
fn read_reply(stream: &mut TcpStream, timeout: Duration) -> anyhow::Result<String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    stream.set_read_timeout(Some(timeout))?;
    loop {
        match stream.read(&mut buf) {
            Ok(0) if reply.is_empty() => bail!("the server closed the connection"),
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.ends_with(b"\n") {
                    break;
                }
                stream.set_read_timeout(Some(REPLY_SETTLE))?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if reply.is_empty() {
                    bail!("no reply within {} s", timeout.as_secs());
                }
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}
