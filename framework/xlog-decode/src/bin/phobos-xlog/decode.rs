//! `phobos-xlog decode`.

use std::cmp::Ordering;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use phobos_cipher_modern::ModernCipher;
use phobos_plugin_registry::{PluginKind, PluginSpec, Registry};
use phobos_xlog_decode::format::find_block_start;
use phobos_xlog_decode::{Decoder, Event, MagicSet, ResyncRule, StartRule, Summary};

use crate::input::Input;
use crate::keys;

/// Arguments of `decode`.
#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// Server private key, 64 hex characters (Mars secp256k1; also tried for authenticated
    /// blocks unless --modern-key is given).
    #[arg(long, value_name = "HEX", conflicts_with = "key_file")]
    key: Option<String>,
    /// File holding the private key (a `private_key = HEX` line, or the key alone).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// X25519 private key for Phobos's authenticated blocks (magics 0x27/0x2C), 64 hex chars.
    #[arg(long, value_name = "HEX")]
    modern_key: Option<String>,
    /// A log cipher plugin by name, for the blocks of its kind (it takes the place of
    /// --key/--modern-key for that kind): built-in `mars-tea` and `x25519-chacha20poly1305`,
    /// or one from a --plugin library.
    #[arg(long, value_name = "NAME")]
    cipher: Option<String>,
    /// The --cipher plugin's config as JSON, e.g. '{"private_key": "<64 hex>"}'.
    #[arg(long, value_name = "JSON", requires = "cipher")]
    cipher_config: Option<String>,
    /// A plugin library (repeatable): its ciphers can be named by --cipher.
    #[arg(long = "plugin", value_name = "LIB", requires = "cipher")]
    plugins: Vec<PathBuf>,
    /// Write the text here instead of standard output.
    #[arg(short, long, value_name = "OUT", conflicts_with = "each")]
    output: Option<PathBuf>,
    /// Like Mars's script: write each input's text to `<input>.log` (none when empty).
    #[arg(long)]
    each: bool,
    /// Recover the most lines from damaged files, at the cost of Mars's exact damage reports:
    /// start at the first good block even if the next one is damaged (Mars's decoder needs
    /// two good blocks to start, and prints nothing for a file of one block plus a partial),
    /// and after damage resume only at a block confirmed by the one after it (or by the end
    /// of the file), so bytes in compressed data that look like a block are not decoded.
    #[arg(long)]
    lenient: bool,
    /// Recognise only Mars's magics 0x03-0x0D (the official decoder's resync scan).
    #[arg(long)]
    mars_only: bool,
    /// Print a per-file summary (blocks, failures, resyncs, gaps) on standard error.
    #[arg(short, long)]
    verbose: bool,
    /// .xlog files, directories (every *.xlog in them, in name order) and .mmap3 files.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Whether `a` and `b` name one existing file (the same device and inode; on other systems,
/// the same canonical path).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (fs::canonicalize(a), fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Runs `decode`.
pub(crate) fn run(args: DecodeArgs) -> Result<()> {
    let decoder = build_decoder(&args)?;
    let inputs = expand_inputs(&args.paths)?;
    let total: u64 = inputs
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress {
        bar: progress_bar(total),
        done: 0,
    };

    if let (Some(out), false) = (&args.output, args.each) {
        // Creating the output truncates it: one that is also an input would be emptied before
        // it was read (and "no xlog blocks found", exit 0).
        if let Some(same) = inputs.iter().find(|input| same_file(input, out)) {
            anyhow::bail!(
                "the output {} is also an input ({}); write the text somewhere else",
                out.display(),
                same.display()
            );
        }
    }
    let mut shared: Option<Box<dyn Write>> = match (&args.output, args.each) {
        (_, true) => None,
        (Some(path), false) => Some(Box::new(io::BufWriter::new(
            fs::File::create(path)
                .with_context(|| format!("cannot create output {}", path.display()))?,
        ))),
        (None, false) => Some(Box::new(io::BufWriter::new(io::stdout().lock()))),
    };

    for path in &inputs {
        let input = Input::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        match &mut shared {
            Some(sink) => {
                let written = decode_one(&decoder, &args, path, &input, &mut progress, sink);
                if is_broken_pipe(&written) {
                    // The reader went away (`phobos-xlog decode f | head`): a normal end.
                    return Ok(());
                }
                written.context("cannot write output")?;
            }
            None => decode_each(&decoder, &args, path, &input, &mut progress)?,
        }
        progress.done += input.len() as u64;
        progress.show(0);
    }
    if let Some(sink) = &mut shared {
        let flushed = sink.flush();
        if !is_broken_pipe(&flushed) {
            flushed.context("cannot write output")?;
        }
    }
    if let Some(bar) = progress.bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Like Mars's script: the text of `path` goes to `<path>.log`, and no file is made when there
/// is no text. The text is streamed into a temporary file beside the target, renamed over it
/// at the end; an empty result or a failure removes the temporary file and leaves an existing
/// `<path>.log` alone.
fn decode_each(
    decoder: &Decoder,
    args: &DecodeArgs,
    path: &Path,
    input: &Input,
    progress: &mut Progress,
) -> Result<()> {
    let mut out_path = path.as_os_str().to_owned();
    out_path.push(".log");
    let out_path = PathBuf::from(out_path);
    let dir = match out_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let cannot_write = || format!("cannot write {}", out_path.display());
    let temp = tempfile::Builder::new()
        .prefix(".phobos-xlog-")
        .suffix(".log.tmp")
        .tempfile_in(dir)
        .with_context(cannot_write)?;
    let mut sink = io::BufWriter::new(temp);
    decode_one(decoder, args, path, input, progress, &mut sink).with_context(cannot_write)?;
    let temp = sink
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .with_context(cannot_write)?;
    if temp.as_file().metadata().with_context(cannot_write)?.len() == 0 {
        return Ok(()); // Dropping `temp` removes it.
    }
    temp.persist(&out_path)
        .map_err(|e| e.error)
        .with_context(cannot_write)?;
    Ok(())
}

/// Whether writing failed because the reading end of a pipe was closed.
fn is_broken_pipe<T>(result: &io::Result<T>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::BrokenPipe)
}

/// Decodes one input into `sink`, streaming block by block. Problems with the file's content
/// are reported inline or on standard error; only a failing `sink` is an error.
fn decode_one(
    decoder: &Decoder,
    args: &DecodeArgs,
    path: &Path,
    input: &Input,
    progress: &mut Progress,
    sink: &mut dyn Write,
) -> io::Result<()> {
    let bytes: &[u8] = input;
    if is_mmap3(path) {
        match decoder.decode_mmap3(bytes) {
            Ok(text) => sink.write_all(&text)?,
            Err(e) => eprintln!("phobos-xlog: {}: {e}", path.display()),
        }
        return Ok(());
    }
    let mut summary = Summary::default();
    let mut buf = Vec::new();
    for event in decoder.events(bytes) {
        if let Event::Text { block, .. } | Event::Failed { block, .. } = &event {
            progress.show(block.end as u64);
            // Blocks come in file order and a resync only scans forward.
            input.release_before(block.offset);
        }
        summary.record(&event);
        buf.clear();
        event.render(&mut buf);
        sink.write_all(&buf)?;
    }
    if args.verbose {
        eprintln!("phobos-xlog: {}: {summary}", path.display());
    }
    if summary.all_encrypted_blocks_failed() && decoder.has_ciphers() {
        eprintln!(
            "phobos-xlog: {}: none of the {} encrypted blocks decoded to log text: is the key right?",
            path.display(),
            summary.encrypted_blocks
        );
    }
    if !summary.found_blocks() {
        let lenient_would_start =
            !args.lenient && find_block_start(bytes, 0, 1, decoder.options().magics).is_some();
        let hint = if lenient_would_start {
            " (no two consecutive good blocks to start from; --lenient starts at one)"
        } else {
            ""
        };
        eprintln!(
            "phobos-xlog: {}: no xlog blocks found{hint}",
            path.display()
        );
    }
    Ok(())
}

/// The optional progress bar and the bytes of the inputs already decoded.
struct Progress {
    bar: Option<ProgressBar>,
    done: u64,
}

impl Progress {
    fn show(&self, within_current: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(self.done + within_current);
        }
    }
}

fn build_decoder(args: &DecodeArgs) -> Result<Decoder> {
    let mut builder = Decoder::builder()
        .start_rule(if args.lenient {
            StartRule::OneGoodBlock
        } else {
            StartRule::TwoGoodBlocks
        })
        .magic_set(if args.mars_only {
            MagicSet::Mars
        } else {
            MagicSet::MarsAndAuthenticated
        })
        .resync_rule(if args.lenient {
            ResyncRule::Confirmed
        } else {
            ResyncRule::Mars
        });
    let key = match (&args.key, &args.key_file) {
        (Some(hex), _) => Some(hex.clone()),
        (None, Some(path)) => Some(keys::read_key_file(path)?),
        (None, None) => None,
    };
    if let Some(hex) = key {
        for cipher in keys::reading_ciphers(&hex)? {
            builder = builder.cipher(cipher);
        }
    }
    if let Some(hex) = &args.modern_key {
        let modern = ModernCipher::from_private_key_hex(hex).context("bad --modern-key")?;
        builder = builder.cipher(Arc::new(modern));
    }
    if let Some(name) = &args.cipher {
        builder = builder.cipher(plugin_cipher(name, args)?);
    }
    Ok(builder.build())
}

/// The `--cipher` plugin, built by the plugin registry (built-ins plus `--plugin` libraries).
fn plugin_cipher(name: &str, args: &DecodeArgs) -> Result<Arc<dyn phobos_plugin_api::LogCipher>> {
    let mut registry = Registry::with_builtins();
    for lib in &args.plugins {
        registry
            .load_library(lib)
            .with_context(|| format!("cannot load plugin library {}", lib.display()))?;
    }
    let mut spec = PluginSpec::named(name);
    if let Some(json) = &args.cipher_config {
        let value: toml::Value = serde_json::from_str(json)
            .with_context(|| format!("--cipher-config is not a JSON object: {json}"))?;
        spec.config = Some(value);
    }
    let plugin = registry.log_cipher(&spec, "--cipher").with_context(|| {
        format!(
            "no usable cipher {name:?} (available: {})",
            registry.available(PluginKind::LogCipher).join(", ")
        )
    })?;
    Ok(Arc::clone(plugin.get()))
}

/// Files as given, directories as their `*.xlog` files in name order (numbers compared as
/// numbers, so Mars's split files `p_20240101_2.xlog` come before `p_20240101_10.xlog`).
/// Every path must exist.
fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut inputs = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
        if !meta.is_dir() {
            inputs.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = fs::read_dir(path)
            .with_context(|| format!("cannot read directory {}", path.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("cannot read directory {}", path.display()))?;
        found.retain(|p| p.extension().is_some_and(|e| e == "xlog") && p.is_file());
        found.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
        if found.is_empty() {
            eprintln!(
                "phobos-xlog: {}: no .xlog files in directory",
                path.display()
            );
        }
        inputs.extend(found);
    }
    Ok(inputs)
}

/// Compares names with runs of ASCII digits compared by value.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let (ta, tb) = (trim_zeros(na), trim_zeros(nb));
                let ord = ta
                    .len()
                    .cmp(&tb.len())
                    .then(ta.cmp(tb))
                    .then(na.len().cmp(&nb.len()));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

fn is_mmap3(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "mmap3")
}

/// A bar on standard error for inputs over 8 MiB, only when it is a terminal.
fn progress_bar(total: u64) -> Option<ProgressBar> {
    if total < PROGRESS_THRESHOLD || !io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        pb.set_style(style);
    }
    Some(pb)
}

const PROGRESS_THRESHOLD: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_of_split_files() {
        let mut names = vec![
            "p_20261126_10.xlog",
            "p_20261126_2.xlog",
            "p_20261126.xlog",
            "p_20261126_1.xlog",
            "p_20261125_3.xlog",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "p_20261125_3.xlog",
                "p_20261126.xlog",
                "p_20261126_1.xlog",
                "p_20261126_2.xlog",
                "p_20261126_10.xlog"
            ]
        );
        assert_eq!(natural_cmp("a01", "a1"), Ordering::Greater);
        assert_eq!(natural_cmp("a1", "a1"), Ordering::Equal);
    }
}
