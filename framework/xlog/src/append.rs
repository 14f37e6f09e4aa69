//! Logging lines read from a reader: the library side of the CLI's `append` subcommand.

use std::io::{self, BufRead};

use crate::format::{Level, Record};
use crate::writer::{FlushError, Xlog};

/// Logs every line of `reader` as one record and flushes at end of input.
///
/// A line starting with a level letter in brackets (`[V]`, `[D]`, `[I]`, `[W]`, `[E]`, `[F]`)
/// is logged at that level with the prefix removed; any other line at Info. The line's end
/// (`\n` or `\r\n`) is removed; bytes are logged as they are (not necessarily UTF-8). Records
/// carry `tag` and no source location. Returns the number of lines logged.
///
/// # Errors
///
/// A read error from `reader` (lines before it were logged), or a flush on a closed writer.
pub fn append_lines<R: BufRead>(xlog: &Xlog, mut reader: R, tag: &str) -> io::Result<u64> {
    let mut line = Vec::with_capacity(512);
    let mut n = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let (level, message) = split_level(&line);
        xlog.log(&Record {
            tag,
            ..Record::new(level, message)
        });
        n += 1;
    }
    xlog.flush().map_err(|e: FlushError| io::Error::other(e))?;
    Ok(n)
}

/// Splits a `[X]` level prefix off a line.
pub fn split_level(line: &[u8]) -> (Level, &[u8]) {
    if let [b'[', l, b']', rest @ ..] = line {
        if let Some(level) = Level::from_letter(*l) {
            return (level, rest);
        }
    }
    (Level::Info, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_prefixes_are_recognised() {
        assert_eq!(split_level(b"[E]boom"), (Level::Error, &b"boom"[..]));
        assert_eq!(split_level(b"[x]boom"), (Level::Info, &b"[x]boom"[..]));
        assert_eq!(split_level(b"plain"), (Level::Info, &b"plain"[..]));
        assert_eq!(split_level(b"[F]"), (Level::Fatal, &b""[..]));
    }
}
