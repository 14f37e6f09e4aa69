//! Raw Mars long-link frame builders, independent of any codec.
//!
//! Tests use these to put exact bytes on the wire, including bytes no correct encoder would
//! produce (a wrong header length, a wrong version, an oversize length). The layout is Mars's
//! default packer (all fields big-endian `u32`):
//!
//! ```text
//!  0        4        8        12       16       20
//!  +--------+--------+--------+--------+--------+----------------+
//!  |head_len|version | cmd_id |  seq   |body_len| body ...       |
//!  +--------+--------+--------+--------+--------+----------------+
//! ```
//!
//! ```
//! use phobos_test_support::frames;
//!
//! let f = frames::frame(0, 7, 1, b"hi");
//! assert_eq!(f.len(), frames::HEADER_LEN + 2);
//! assert_eq!(frames::parse_header(&f).unwrap().body_len, 2);
//! ```

/// Length of the Mars header.
pub const HEADER_LEN: usize = 20;
/// Mars's heartbeat command id.
pub const HEARTBEAT_CMD: u32 = 6;
/// Mars's heartbeat sequence number.
pub const HEARTBEAT_SEQ: u32 = 0xFFFF_FFFF;
/// Mars's identify sequence number.
pub const IDENTIFY_SEQ: u32 = 0xFFFF_FFFE;
/// Mars's limit on one frame, header included.
pub const MAX_FRAME_LEN: usize = 1_048_576;

/// The five header fields, as they are on the wire (nothing validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// Header length (20 in a valid frame).
    pub head_len: u32,
    /// Client version.
    pub version: u32,
    /// Command id.
    pub cmd_id: u32,
    /// Sequence number.
    pub seq: u32,
    /// Body length.
    pub body_len: u32,
}

impl RawHeader {
    /// A valid header for a body of `body_len` bytes.
    pub fn new(version: u32, cmd_id: u32, seq: u32, body_len: u32) -> Self {
        RawHeader {
            head_len: HEADER_LEN as u32,
            version,
            cmd_id,
            seq,
            body_len,
        }
    }

    /// The 20 header bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        for (i, v) in [
            self.head_len,
            self.version,
            self.cmd_id,
            self.seq,
            self.body_len,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        out
    }
}

/// A valid frame.
pub fn frame(version: u32, cmd_id: u32, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = RawHeader::new(version, cmd_id, seq, body.len() as u32)
        .to_bytes()
        .to_vec();
    out.extend_from_slice(body);
    out
}

/// A heartbeat (noop) frame, as client and server both send it.
pub fn heartbeat(version: u32) -> Vec<u8> {
    frame(version, HEARTBEAT_CMD, HEARTBEAT_SEQ, &[])
}

/// A server push (sequence 0).
pub fn push(version: u32, cmd_id: u32, body: &[u8]) -> Vec<u8> {
    frame(version, cmd_id, 0, body)
}

/// A frame whose header says 16 bytes instead of 20 (the body would overlap the header).
pub fn bad_head_len(version: u32, seq: u32) -> Vec<u8> {
    let mut h = RawHeader::new(version, 7, seq, 4);
    h.head_len = 16;
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(b"oops");
    out
}

/// A header with head length 0 and body length 0: the frame that spins Mars's reader.
pub fn zero_head_len(version: u32, seq: u32) -> Vec<u8> {
    let mut h = RawHeader::new(version, 7, seq, 0);
    h.head_len = 0;
    h.to_bytes().to_vec()
}

/// A valid-looking frame for another client version (`version + 1`).
pub fn wrong_version(version: u32, seq: u32) -> Vec<u8> {
    frame(version.wrapping_add(1), 7, seq, b"v")
}

/// A header announcing a frame over the 1 MiB limit (only the header is returned).
pub fn oversize(version: u32, seq: u32) -> Vec<u8> {
    RawHeader::new(version, 7, seq, (MAX_FRAME_LEN * 2) as u32)
        .to_bytes()
        .to_vec()
}

/// Reads the header at the front of `buf`, if 20 bytes are there.
pub fn parse_header(buf: &[u8]) -> Option<RawHeader> {
    let h = buf.get(..HEADER_LEN)?;
    let field = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    Some(RawHeader {
        head_len: field(0),
        version: field(4),
        cmd_id: field(8),
        seq: field(12),
        body_len: field(16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_is_big_endian_mars() {
        let f = frame(3, 0x0102_0304, 0x0A0B_0C0D, b"xyz");
        assert_eq!(
            &f[..HEADER_LEN],
            &[0, 0, 0, 20, 0, 0, 0, 3, 1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D, 0, 0, 0, 3]
        );
        assert_eq!(&f[HEADER_LEN..], b"xyz");
    }

    #[test]
    fn malformed_builders_break_exactly_one_rule() {
        assert_eq!(parse_header(&bad_head_len(0, 5)).unwrap().head_len, 16);
        let z = parse_header(&zero_head_len(0, 5)).unwrap();
        assert_eq!((z.head_len, z.body_len), (0, 0));
        assert_eq!(parse_header(&wrong_version(9, 5)).unwrap().version, 10);
        let o = parse_header(&oversize(0, 5)).unwrap();
        assert!(o.body_len as usize > MAX_FRAME_LEN);
        assert_eq!(oversize(0, 5).len(), HEADER_LEN);
        assert!(parse_header(&[0; 19]).is_none());
    }
}
