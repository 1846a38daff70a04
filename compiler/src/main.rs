//! The `cilc` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use cilc::driver::{self, CheckOptions, Format, Outcome};

#[derive(Parser)]
#[command(
    name = "cilc",
    version,
    about = "Compile container network policy into eBPF programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    /// Colour when stderr is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Check policies: syntax, names, values and rule combinations.
    Check {
        /// Policy files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format of the diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print policies in canonical form (comments kept).
    Fmt {
        /// Policy files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the names of files that are not formatted, and fail if any.
        #[arg(long, conflicts_with = "write")]
        check: bool,
        /// Rewrite the files in place.
        #[arg(long, short)]
        write: bool,
    },
    /// Write a synthetic policy (for tests and benchmarks) to stdout.
    Gen {
        /// Number of rules.
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        /// Seed of the generator (same seed, same policy).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn use_color(c: Color) -> bool {
    use std::io::IsTerminal;
    match c {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprint!("{}", driver::internal_error(&format!("{msg}{place}")));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let color = use_color(cli.color);
    let mut out = Outcome::default();
    let result = match cli.command {
        Command::Check {
            files,
            format,
            deny_warnings,
        } => {
            let inputs = driver::read_inputs(&files, &mut out);
            let r = driver::check(
                &inputs,
                &CheckOptions {
                    format,
                    deny_warnings,
                    color,
                },
            );
            merge(out, r)
        }
        Command::Fmt {
            files,
            check,
            write,
        } => {
            let inputs = driver::read_inputs(&files, &mut out);
            let r = driver::fmt(&inputs, check, write, color);
            merge(out, r)
        }
        Command::Gen { rules, seed } => Outcome {
            stdout: cilc::gen::policy(seed, rules),
            ..Outcome::default()
        },
    };
    print!("{}", result.stdout);
    eprint!("{}", result.stderr);
    ExitCode::from(result.code as u8)
}

/// Reading errors (exit 2) win over what the verb found.
fn merge(read: Outcome, verb: Outcome) -> Outcome {
    Outcome {
        stdout: verb.stdout,
        stderr: read.stderr + &verb.stderr,
        code: if read.code != 0 { read.code } else { verb.code },
    }
}
