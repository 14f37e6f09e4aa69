//! Key handling for the CLI: hex from the command line or a key file, and `keygen`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use phobos_cipher_mars::MarsCipher;
use phobos_cipher_modern::ModernCipher;
use phobos_plugin_api::LogCipher;

/// Arguments of `keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// An X25519 pair for the authenticated cipher instead of Mars's secp256k1 pair.
    #[arg(long)]
    modern: bool,
}

/// Prints a fresh key pair in the `keys.txt` layout the decoder's `--key-file` reads.
pub(crate) fn keygen(args: KeygenArgs) -> Result<()> {
    let (kind, private, public) = if args.modern {
        let p = ModernCipher::generate_key_pair();
        ("X25519 (authenticated cipher)", p.private_key, p.public_key)
    } else {
        let p = MarsCipher::generate_key_pair();
        ("secp256k1 (Mars xlog)", p.private_key, p.public_key)
    };
    println!("# {kind} key pair; keep private_key secret, give public_key to the writer");
    println!("private_key = {private}");
    println!("public_key = {public}");
    Ok(())
}

/// Reads a private key from a file: a `private_key = HEX` line (as in `keys.txt` or `keygen`
/// output), or else the first line that is not empty and not a `#` comment.
pub(crate) fn read_key_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut first = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix("private_key") {
            let value = rest.trim_start().trim_start_matches(['=', ':']).trim();
            return Ok(value.to_owned());
        }
        first.get_or_insert(line);
    }
    match first {
        Some(line) => Ok(line.to_owned()),
        None => bail!("key file {} holds no key", path.display()),
    }
}

/// The reading ciphers for a private key: Mars's always; the authenticated one too, since
/// both take a 32-byte key in hex and a file may hold either kind of block.
pub(crate) fn reading_ciphers(hex: &str) -> Result<Vec<Arc<dyn LogCipher>>> {
    let mars = MarsCipher::from_private_key_hex(hex).context("bad --key")?;
    let mut ciphers: Vec<Arc<dyn LogCipher>> = vec![Arc::new(mars)];
    if let Ok(modern) = ModernCipher::from_private_key_hex(hex) {
        ciphers.push(Arc::new(modern));
    }
    Ok(ciphers)
}
