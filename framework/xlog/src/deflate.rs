//! A raw-deflate encoder specialised for xlog's one-flush-per-line streams.
//!
//! Every line must end on a byte boundary (zlib's `Z_SYNC_FLUSH`), so every line is its own
//! deflate block. zlib then decides per line between fixed and dynamic Huffman codes, and
//! building dynamic trees for ~200 bytes costs several microseconds; for blocks this small the
//! fixed codes win anyway. This encoder always uses the fixed codes (or a stored block when
//! that is smaller), and spends its time where the ratio comes from for log lines: finding
//! long matches in the previous 32 KiB with hash chains and lazy matching, as zlib's level 9
//! does. Output per line:
//!
//! ```text
//! [fixed-Huffman block: BFINAL=0 BTYPE=01, literals/matches, EOB]
//! [0–3 empty fixed blocks (10 bits each)]   when they make the bit count a multiple of 8
//! [empty stored block: 3 bits, pad, 00 00 FF FF]   (zlib's sync marker) otherwise
//! ```
//!
//! or a stored block holding the line. An odd bit count is first made even by encoding one
//! match as a one-byte-shorter match plus a literal. Either way every line ends on a byte
//! boundary, like zlib's `Z_SYNC_FLUSH` output, about 2 bytes cheaper per line. Any inflate
//! reads it (no zlib header, no BFINAL, the stream is never finished).

const WINDOW: usize = 32 * 1024;
const WMASK: usize = WINDOW - 1;
const HASH_BITS: u32 = 14;
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
/// Keep at most this much history before sliding the buffer.
const MAX_HIST: usize = 256 * 1024;

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// One token of a line: a literal byte or a (length, distance) match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Lit(u8),
    Match(u16, u16),
}

/// The per-block deflate state: history and hash chains.
pub(crate) struct LineDeflater {
    hist: Vec<u8>,
    /// Absolute position (since the block started) of `hist[0]`.
    base: usize,
    /// Hash → low 16 bits of the absolute position of the newest occurrence. 16-bit entries
    /// keep the tables in cache; a stale or aliased entry is harmless because every candidate
    /// is checked (in the window, before the current position, bytes equal).
    head: Vec<u16>,
    /// Absolute position & WMASK → low 16 bits of the previous position with the same hash.
    prev: Vec<u16>,
    depth: usize,
    lazy: bool,
    /// Stop searching once a match this long is found.
    nice: usize,
    /// Without lazy matching, hash the positions inside a match only if it is this short.
    max_insert: usize,
    /// With lazy matching, look for a better match at the next position only if the current
    /// one is shorter than this (zlib's `max_lazy`).
    max_lazy: usize,
    stored_only: bool,
    tokens: Vec<Token>,
    /// Distance of the last match: checked first, since log lines repeat at line distance.
    last_dist: usize,
    /// Hist index where each token starts.
    positions: Vec<u32>,
}

impl LineDeflater {
    /// `level` 0 stores, 1–9 trade speed for ratio like zlib's levels.
    pub(crate) fn new(level: i32) -> Self {
        // (chain depth, lazy, nice length, max insert / max lazy), after zlib's table.
        let (depth, lazy, nice, max_insert) = match level {
            i32::MIN..=0 => (0, false, 0, 0),
            1 => (4, false, 16, 4),
            2 => (8, false, 32, 8),
            3 => (16, false, 64, 16),
            4 => (16, true, 32, MAX_MATCH),
            5 => (32, true, 64, MAX_MATCH),
            6 => (64, true, 128, MAX_MATCH),
            7 => (128, true, MAX_MATCH, MAX_MATCH),
            _ => (512, true, MAX_MATCH, MAX_MATCH),
        };
        LineDeflater {
            hist: Vec::with_capacity(64 * 1024),
            base: 0,
            head: vec![0; 1 << HASH_BITS],
            prev: vec![0; WINDOW],
            depth,
            lazy,
            nice,
            max_insert,
            max_lazy: max_insert,
            stored_only: level <= 0,
            tokens: Vec::with_capacity(512),
            last_dist: 0,
            positions: Vec::with_capacity(512),
        }
    }

    /// Starts a new stream (empty history).
    pub(crate) fn reset(&mut self) {
        self.last_dist = 0;
        self.hist.clear();
        self.base = 0;
        self.head.fill(0);
    }

    /// Compresses `line` as one deflate block plus, if needed, the sync marker, appending the
    /// bytes to `out`. The output ends on a byte boundary.
    pub(crate) fn compress_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.hist.len() + line.len() > MAX_HIST {
            self.slide();
        }
        let start = self.hist.len();
        self.hist.extend_from_slice(line);
        if self.stored_only || line.is_empty() {
            emit_stored(line, out);
            return;
        }
        self.tokenize(start);
        let mut bits = 3 + 7; // header + end of block
        for t in &self.tokens {
            bits += token_bits(*t);
        }
        // Every line must end on a byte boundary. zlib appends an empty stored block (3 bits,
        // padding, 00 00 FF FF: ~38 bits). Cheaper: empty fixed blocks (10 bits each) fix an
        // even remainder; an odd one is first made even by splitting one match into a shorter
        // match plus its last byte as a literal (same text, an odd number of bits more).
        let mut split = None;
        if (8 - bits % 8) % 8 % 2 == 1 {
            split = self.odd_split(start);
            if let Some((_, delta)) = split {
                bits += delta;
            }
        }
        let rem = (8 - bits % 8) % 8;
        let (empty_blocks, marker) = if rem % 2 == 0 {
            (rem / 2, false)
        } else {
            (0, true)
        };
        let fixed_bits = bits + empty_blocks * 10;
        let fixed_bytes = if marker {
            (fixed_bits + 3).div_ceil(8) + 4
        } else {
            fixed_bits / 8
        };
        if fixed_bytes > line.len() + 5 {
            emit_stored(line, out);
            return;
        }
        out.reserve(fixed_bytes + 8);
        let mut w = BitWriter::new(out);
        w.put(0b010, 3);
        for (k, t) in self.tokens.iter().enumerate() {
            match (*t, split) {
                (Token::Match(len, dist), Some((at, _))) if at == k => {
                    put_match(&mut w, len - 1, dist);
                    let p = self.positions[k] as usize + usize::from(len) - 1;
                    let (code, n) = fixed_lit(u16::from(self.hist[p]));
                    w.put(code, n);
                }
                (Token::Lit(b), _) => {
                    let (code, n) = fixed_lit(u16::from(b));
                    w.put(code, n);
                }
                (Token::Match(len, dist), _) => put_match(&mut w, len, dist),
            }
        }
        let (eob, eob_bits) = fixed_lit(256);
        w.put(eob, eob_bits);
        for _ in 0..empty_blocks {
            w.put(0b010, 3);
            w.put(eob, eob_bits);
        }
        if marker {
            // Empty stored block: the sync-flush marker.
            w.put(0, 3);
            w.align();
            w.finish();
            out.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
        } else {
            w.align();
            w.finish();
        }
    }

    /// A match whose split into (len − 1, same distance) + literal changes the bit count by an
    /// odd amount: (token index, bits added). Prefers the cheapest.
    fn odd_split(&self, _start: usize) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (k, t) in self.tokens.iter().enumerate() {
            let Token::Match(len, dist) = *t else {
                continue;
            };
            if usize::from(len) <= MIN_MATCH {
                continue;
            }
            let p = self.positions[k] as usize + usize::from(len) - 1;
            let lit = fixed_lit(u16::from(self.hist[p])).1 as usize;
            let before = token_bits(Token::Match(len, dist));
            let after = token_bits(Token::Match(len - 1, dist)) + lit;
            if after <= before {
                continue;
            }
            let delta = after - before;
            if delta % 2 == 1 && best.is_none_or(|(_, d)| delta < d) {
                best = Some((k, delta));
            }
        }
        best
    }

    fn slide(&mut self) {
        let keep = WINDOW.min(self.hist.len());
        let cut = self.hist.len() - keep;
        self.hist.drain(..cut);
        self.base += cut;
    }

    #[inline]
    fn hash_at(&self, i: usize) -> usize {
        let b = &self.hist[i..i + 4];
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    }

    #[inline]
    fn insert(&mut self, i: usize) {
        let h = self.hash_at(i);
        self.insert_hashed(i, h);
    }

    #[inline]
    fn insert_hashed(&mut self, i: usize, h: usize) {
        let abs = self.base + i;
        self.prev[abs & WMASK] = self.head[h];
        self.head[h] = abs as u16;
    }

    /// The absolute position whose low 16 bits are `low`, at most 64 KiB before `abs`.
    #[inline]
    fn unfold(abs: usize, low: u16) -> usize {
        abs - (abs.wrapping_sub(usize::from(low)) & 0xFFFF)
    }

    /// Longest match for position `i` (hist index) among earlier positions, within `end`.
    #[inline]
    fn find(&self, i: usize, h: usize, end: usize) -> (usize, usize) {
        let max_len = MAX_MATCH.min(end - i);
        let abs = self.base + i;
        let nice = self.nice.min(max_len);
        let mut best = (0, 0);
        let d = self.last_dist;
        if d > 0 && d <= WINDOW && d <= i {
            let n = common_prefix(&self.hist[i - d..], &self.hist[i..i + max_len]);
            if n >= MIN_MATCH {
                best = (n, d);
                if n >= nice {
                    return best;
                }
            }
        }
        let mut c_abs = Self::unfold(abs, self.head[h]);
        let mut chain = self.depth;
        while chain > 0 {
            if c_abs >= abs || abs - c_abs > WINDOW || c_abs < self.base {
                break;
            }
            let c = c_abs - self.base;
            let probe = best.0.min(max_len - 1);
            if self.hist[c + probe] == self.hist[i + probe] {
                let n = common_prefix(&self.hist[c..], &self.hist[i..i + max_len]);
                if n > best.0 {
                    best = (n, abs - c_abs);
                    if n >= nice {
                        break;
                    }
                }
            }
            let next = Self::unfold(c_abs, self.prev[c_abs & WMASK]);
            if next >= c_abs {
                break;
            }
            c_abs = next;
            chain -= 1;
        }
        if best.0 < MIN_MATCH {
            (0, 0)
        } else {
            best
        }
    }

    fn tokenize(&mut self, start: usize) {
        self.tokens.clear();
        self.positions.clear();
        let end = self.hist.len();
        let can_hash = |i: usize| i + 4 <= end;
        let mut i = start;
        let mut prev: (usize, usize) = (0, 0);
        let mut pending_lit = false;
        while i < end {
            let cur = if can_hash(i) {
                let h = self.hash_at(i);
                let search = self.depth > 0 && (!self.lazy || prev.0 < self.max_lazy);
                let m = if search { self.find(i, h, end) } else { (0, 0) };
                self.insert_hashed(i, h);
                m
            } else {
                (0, 0)
            };
            if !self.lazy {
                if cur.0 >= MIN_MATCH {
                    self.tokens.push(Token::Match(cur.0 as u16, cur.1 as u16));
                    self.positions.push(i as u32);
                    self.last_dist = cur.1;
                    if cur.0 <= self.max_insert {
                        for p in i + 1..i + cur.0 {
                            if can_hash(p) {
                                self.insert(p);
                            }
                        }
                    }
                    i += cur.0;
                } else {
                    self.tokens.push(Token::Lit(self.hist[i]));
                    self.positions.push(i as u32);
                    i += 1;
                }
                continue;
            }
            if prev.0 >= MIN_MATCH && cur.0 <= prev.0 {
                // The match found at i - 1 wins.
                self.tokens.push(Token::Match(prev.0 as u16, prev.1 as u16));
                self.positions.push((i - 1) as u32);
                self.last_dist = prev.1;
                let stop = i - 1 + prev.0;
                // Levels 4–6 hash only every 4th position inside long matches: the text
                // around them is hashed anyway, and it saves most of the insertion work for a
                // ratio cost of about 1 %.
                let step = if self.depth <= 64 && prev.0 > 16 {
                    4
                } else {
                    1
                };
                let mut p = i + 1;
                while p < stop {
                    if can_hash(p) {
                        self.insert(p);
                    }
                    p += step;
                }
                i = stop;
                prev = (0, 0);
                pending_lit = false;
                continue;
            }
            if pending_lit {
                self.tokens.push(Token::Lit(self.hist[i - 1]));
                self.positions.push((i - 1) as u32);
            }
            pending_lit = true;
            prev = cur;
            i += 1;
        }
        if pending_lit {
            self.tokens.push(Token::Lit(self.hist[end - 1]));
            self.positions.push((end - 1) as u32);
        }
    }
}

fn emit_stored(line: &[u8], out: &mut Vec<u8>) {
    for chunk in line
        .chunks(65_535)
        .chain(line.is_empty().then_some(&line[..0]))
    {
        out.push(0x00); // BFINAL=0, BTYPE=00, padding
        let n = chunk.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

#[inline]
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = b.len().min(a.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let d = x ^ y;
        if d != 0 {
            return i + (d.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Fixed-code Huffman code for a literal/length symbol, bit-reversed for LSB-first output.
#[inline]
fn fixed_lit(sym: u16) -> (u64, u32) {
    let (code, n) = match sym {
        0..=143 => (0x30 + sym, 8),
        144..=255 => (0x190 + sym - 144, 9),
        256..=279 => (sym - 256, 7),
        _ => (0xC0 + sym - 280, 8),
    };
    (u64::from(reverse(code, n)), n)
}

#[inline]
fn reverse(code: u16, n: u32) -> u16 {
    code.reverse_bits() >> (16 - n)
}

/// Length (0..=258) → index into LEN_BASE.
static LEN_INDEX: [u8; 259] = {
    let mut t = [0u8; 259];
    let mut len = 3;
    while len < 259 {
        let mut i = 0;
        while i + 1 < LEN_BASE.len() && LEN_BASE[i + 1] as usize <= len {
            i += 1;
        }
        t[len] = i as u8;
        len += 1;
    }
    t
};

/// zlib's two-part distance-code table: distances 1..=256 directly, larger ones by
/// `256 + ((dist - 1) >> 7)`.
static DIST_INDEX: [u8; 512] = {
    let mut t = [0u8; 512];
    let mut k = 0;
    while k < 512 {
        let dist = if k < 256 { k + 1 } else { ((k - 256) << 7) + 1 };
        let mut i = 0;
        while i + 1 < DIST_BASE.len() && DIST_BASE[i + 1] as usize <= dist {
            i += 1;
        }
        t[k] = i as u8;
        k += 1;
    }
    t
};

#[inline]
fn len_index(len: u16) -> usize {
    usize::from(LEN_INDEX[usize::from(len).min(258)])
}

#[inline]
fn dist_index(dist: u16) -> usize {
    let d = usize::from(dist.max(1)) - 1;
    if d < 256 {
        usize::from(DIST_INDEX[d])
    } else {
        usize::from(DIST_INDEX[(256 + (d >> 7)).min(511)])
    }
}

fn token_bits(t: Token) -> usize {
    match t {
        Token::Lit(b) => fixed_lit(u16::from(b)).1 as usize,
        Token::Match(len, dist) => {
            let li = len_index(len);
            let di = dist_index(dist);
            fixed_lit(257 + li as u16).1 as usize
                + usize::from(LEN_EXTRA[li])
                + 5
                + usize::from(DIST_EXTRA[di])
        }
    }
}

fn put_match(w: &mut BitWriter<'_>, len: u16, dist: u16) {
    let li = len_index(len);
    let (code, n) = fixed_lit(257 + li as u16);
    w.put(code, n);
    w.put(u64::from(len - LEN_BASE[li]), u32::from(LEN_EXTRA[li]));
    let di = dist_index(dist);
    w.put(u64::from(reverse(di as u16, 5)), 5);
    w.put(u64::from(dist - DIST_BASE[di]), u32::from(DIST_EXTRA[di]));
}

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }

    #[inline]
    fn put(&mut self, bits: u64, n: u32) {
        self.acc |= bits << self.n;
        self.n += n;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    fn align(&mut self) {
        while self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.acc = 0;
    }

    fn finish(self) {}
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut d = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(data.len() * 4 + 1024);
        loop {
            let used = d.total_in() as usize;
            d.decompress_vec(&data[used..], &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            if d.total_in() as usize == data.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity());
        }
    }

    fn check(lines: &[Vec<u8>], level: i32) {
        let mut z = LineDeflater::new(level);
        let mut out = Vec::new();
        let mut expect = Vec::new();
        for l in lines {
            z.compress_line(l, &mut out);
            expect.extend_from_slice(l);
            // Decodable after every line.
            let got = inflate(&out);
            assert!(
                got == expect,
                "level {level}: {} bytes decoded, {} expected",
                got.len(),
                expect.len()
            );
        }
    }

    #[test]
    fn log_lines_round_trip_at_every_level() {
        let lines: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                format!(
                    "[I][2024-03-14 +8.0 10:26:53.{:03}][1, 1*][net][a.cc:1, f][request #{i} \
                     host=alpha{}.example.com status=200 trace={:016x}\n",
                    i % 1000,
                    i % 7,
                    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                )
                .into_bytes()
            })
            .collect();
        for level in [0, 1, 3, 6, 9] {
            check(&lines, level);
        }
    }

    #[test]
    fn long_repeats_slides_and_incompressible_data_work() {
        let mut lines = vec![vec![b'a'; 16_000]; 12];
        lines.push((0..=255u8).cycle().take(5000).collect());
        lines.push(Vec::new());
        lines.push(b"x".to_vec());
        check(&lines, 9);
        check(&lines, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_lines_round_trip(
            lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..30),
            small_alphabet in any::<bool>(),
            level in 0i32..10,
        ) {
            let lines: Vec<Vec<u8>> = if small_alphabet {
                lines.into_iter().map(|l| l.into_iter().map(|b| b % 4 + b'a').collect()).collect()
            } else {
                lines
            };
            check(&lines, level);
        }
    }
}
