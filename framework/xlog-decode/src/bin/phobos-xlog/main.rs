//! `phobos-xlog`: decode xlog files (Mars's and Phobos's), generate keys.
//!
//! ```text
//! phobos-xlog decode [--key HEX | --key-file F] [-o OUT] PATH...
//! phobos-xlog keygen [--modern]
//! ```
//!
//! Exit status: 0 on success (damaged blocks are reported inline in the output, as Mars's
//! decoder does), 1 on a fatal error (missing input, unreadable directory, bad key, write
//! failure), 2 on bad usage.

mod decode;
mod keys;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Decode xlog files written by Tencent Mars or phobos-xlog.
#[derive(Debug, Parser)]
#[command(name = "phobos-xlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode .xlog files, directories of them and .mmap3 staging files to text.
    Decode(decode::DecodeArgs),
    /// Print a new server key pair (private key for decoding, public key for writing).
    Keygen(keys::KeygenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Keygen(args) => keys::keygen(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phobos-xlog: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
