//! `cilc-node`: the node side of cilc without the compiler (no LLVM).
//! Loads, attaches, replaces and observes compiled artifacts.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cilc-node",
    version,
    about = "Install compiled cilc policy on this node: load, attach, replace, stats"
)]
struct Cli {
    #[command(subcommand)]
    command: runtime_loader::cli::NodeCommand,
}

fn main() -> ExitCode {
    // SAFETY: restoring a signal's default action at start-up, before any
    // thread exists (`cilc-node stats | head` ends quietly).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match Cli::try_parse() {
        Ok(cli) => runtime_loader::cli::run(cli.command),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 2 } else { 0 })
        }
    }
}
