//! `phobos-xlog append`: log standard input through `phobos-xlog`'s public API.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use phobos_cipher_mars::MarsCipher;
use phobos_cipher_modern::ModernCipher;
use phobos_plugin_api::LogCipher;
use phobos_xlog::{append_lines, Compression, Mode, Xlog};

/// Arguments of `append`.
#[derive(Debug, Args)]
pub(crate) struct AppendArgs {
    /// Log directory (the `.xlog` files).
    #[arg(long, value_name = "D")]
    dir: PathBuf,
    /// File name prefix: `<P>_YYYYMMDD[_N].xlog` and `<P>.mmap3`.
    #[arg(long, value_name = "P")]
    prefix: String,
    /// Server public key in hex: 128 characters (Mars secp256k1 `X||Y`, Mars-compatible
    /// blocks) or 64 characters (X25519, authenticated blocks). Without it, no encryption.
    #[arg(long, value_name = "HEX")]
    pubkey: Option<String>,
    /// Block compression.
    #[arg(long, value_name = "zlib|zstd", default_value = "zlib")]
    compress: Compression,
    /// Async (staged blocks, the default) or sync (one block per line).
    #[arg(long, value_name = "async|sync", default_value = "async")]
    mode: Mode,
    /// Cache directory for the `.mmap3` buffer file.
    #[arg(long, value_name = "C")]
    cache_dir: Option<PathBuf>,
    /// Split a day's file before it exceeds this many bytes (0 = never).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    max_file_size: u64,
    /// Tag of every record.
    #[arg(long, default_value = "stdin")]
    tag: String,
}

/// Runs `append`: one record per input line (a leading `[V]`…`[F]` sets its level).
pub(crate) fn run(args: AppendArgs) -> Result<()> {
    let mut builder = Xlog::builder()
        .log_dir(&args.dir)
        .name_prefix(&args.prefix)
        .compression(args.compress)
        .mode(args.mode)
        .max_file_size(args.max_file_size);
    if let Some(dir) = &args.cache_dir {
        builder = builder.cache_dir(dir);
    }
    if let Some(hex) = &args.pubkey {
        builder = builder.cipher(writing_cipher(hex)?);
    }
    let guard = builder.build().context("cannot open the log")?;
    let lines = append_lines(&guard, io::stdin().lock(), &args.tag).context("append failed")?;
    // Flushed first, so lines lost to a failing write are counted before they are reported.
    let flushed = guard.flush();
    let dropped = guard.dropped_lines();
    let failed = guard.write_failed_lines();
    let write_error = guard.last_write_error();
    // Dropping the guard logs the close banner, flushes and stops the writer thread.
    drop(guard);
    flushed.context("cannot flush the log")?;
    if dropped > 0 {
        eprintln!("phobos-xlog: {lines} lines read, {dropped} dropped by the writer");
    }
    if failed > 0 {
        let why = write_error.unwrap_or_else(|| "unknown error".to_owned());
        bail!("{lines} lines read, {failed} lost: writing the log file failed: {why}");
    }
    Ok(())
}

fn writing_cipher(hex: &str) -> Result<Arc<dyn LogCipher>> {
    let hex = hex.trim();
    Ok(match hex.len() {
        128 => Arc::new(MarsCipher::from_public_key_hex(hex).context("bad --pubkey")?),
        64 => Arc::new(ModernCipher::from_public_key_hex(hex).context("bad --pubkey")?),
        n => bail!(
            "bad --pubkey: expected 128 hex characters (Mars secp256k1) or 64 (X25519), got {n}"
        ),
    })
}
