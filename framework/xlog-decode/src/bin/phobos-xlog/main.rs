//! `phobos-xlog`: decode xlog files (Mars's and Phobos's), append to one, generate keys.
//!
//! ```text
//! phobos-xlog decode [--key HEX | --key-file F] [--modern-key HEX] [-o OUT | --each]
//!                    [--lenient] [--mars-only] [-v] PATH...
//! phobos-xlog append --dir D --prefix P [--pubkey HEX] [--compress zlib|zstd]
//!                    [--mode async|sync] [--cache-dir C] [--max-file-size BYTES] < lines
//! phobos-xlog keygen [--modern]
//! ```
//!
//! Exit status: 0 on success (damaged blocks are reported inline in the output, as Mars's
//! decoder does, and output cut short because its reader went away, as `| head` does), 1 on
//! a fatal error (missing input, unreadable directory, bad key, write failure), 2 on bad
//! usage.

mod append;
mod decode;
mod input;
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
    /// Log standard input, one record per line, with phobos-xlog.
    Append(append::AppendArgs),
    /// Print a new server key pair (private key for decoding, public key for writing).
    Keygen(keys::KeygenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Append(args) => append::run(args),
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
