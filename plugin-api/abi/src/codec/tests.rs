use super::*;

/// A small length-prefixed codec: `cmd(4) seq(4) body_len(4) ext_len(2) body ext`, big
/// endian, with a 4 KiB limit, a fixed heartbeat interval and its own short-link shaping.
#[derive(Debug)]
struct Toy;

const TOY_HEAD: usize = 14;
const TOY_MAX: usize = 4096;

impl PacketCodec for Toy {
    fn name(&self) -> &str {
        "toy"
    }
    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        extension: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let len = TOY_HEAD + body.len() + extension.len();
        if len > TOY_MAX {
            return Err(EncodeError::TooLarge {
                len: len as u64,
                max: TOY_MAX as u64,
            });
        }
        out.extend_from_slice(&head.cmd_id.0.to_be_bytes());
        out.extend_from_slice(&head.seq.0.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&(extension.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(extension);
        Ok(())
    }
    fn decode(&self, b: &[u8]) -> Result<Decoded, DecodeError> {
        if b.len() < TOY_HEAD {
            return Ok(Decoded::Incomplete {
                head: None,
                needed: TOY_HEAD,
            });
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let head = FrameHead::new(CmdId(word(0)), Seq(word(4)));
        if head.cmd_id.0 == 0xBAD {
            return Err(DecodeError::Magic { got: 0xBAD });
        }
        let body_len = word(8) as usize;
        let ext_len = u16::from_be_bytes([b[12], b[13]]) as usize;
        let len = TOY_HEAD + body_len + ext_len;
        if len > TOY_MAX {
            return Err(DecodeError::TooLarge {
                len: len as u64,
                max: TOY_MAX as u64,
            });
        }
        if b.len() < len {
            return Ok(Decoded::Incomplete {
                head: Some(head),
                needed: len,
            });
        }
        let body = TOY_HEAD..TOY_HEAD + body_len;
        Ok(Decoded::Frame(RawFrame {
            head,
            extension: (ext_len > 0).then_some(body.end..len),
            body,
            len,
        }))
    }
    fn classify(&self, head: &FrameHead) -> FrameKind {
        match head.seq.0 {
            0 => FrameKind::Push,
            0xFFFF_FFFF => FrameKind::HeartbeatReply,
            0xFFFF_FFFE => FrameKind::IdentifyReply,
            s => FrameKind::Response(Seq(s)),
        }
    }
    fn max_frame_len(&self) -> usize {
        TOY_MAX
    }
    fn heartbeat_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(90))
    }
    fn is_reserved_seq(&self, seq: Seq) -> bool {
        seq.0 == 0 || seq.0 >= 0xFFFF_0000
    }
    fn shortlink_headers(&self, req: &ShortLinkRequest<'_>, headers: &mut Vec<(String, String)>) {
        headers.clear();
        headers.push(("X-Path".into(), req.path.into()));
        headers.push(("Host".into(), req.host.into()));
        headers.extend(req.task_headers.iter().cloned());
    }
    fn shortlink_body(&self, req: &ShortLinkRequest<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"toy:");
        out.extend_from_slice(req.body);
    }
    fn shortlink_check_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), ShortLinkReject> {
        match (status, headers.iter().any(|(k, _)| k == "X-Bad"), body) {
            (200, false, _) => Ok(()),
            (200, true, _) => Err(ShortLinkReject::Other(7)),
            (_, _, _) => Err(ShortLinkReject::Status(status)),
        }
    }
}

/// Panics in every method.
#[derive(Debug)]
struct Exploding;

impl PacketCodec for Exploding {
    fn name(&self) -> &str {
        "exploding"
    }
    fn encode(
        &self,
        _: FrameHead,
        _: &[u8],
        _: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        out.extend_from_slice(b"partial");
        panic!("encode exploded")
    }
    fn decode(&self, _: &[u8]) -> Result<Decoded, DecodeError> {
        panic!("decode exploded")
    }
    fn classify(&self, _: &FrameHead) -> FrameKind {
        panic!("classify exploded")
    }
    fn max_frame_len(&self) -> usize {
        panic!("max exploded")
    }
    fn heartbeat_interval(&self) -> Option<Duration> {
        panic!("interval exploded")
    }
    fn is_reserved_seq(&self, _: Seq) -> bool {
        panic!("reserved exploded")
    }
    fn shortlink_headers(&self, _: &ShortLinkRequest<'_>, _: &mut Vec<(String, String)>) {
        panic!("headers exploded")
    }
    fn shortlink_body(&self, _: &ShortLinkRequest<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"partial");
        panic!("body exploded")
    }
    fn shortlink_check_response(
        &self,
        _: u16,
        _: &[(String, String)],
        _: &[u8],
    ) -> Result<(), ShortLinkReject> {
        panic!("check exploded")
    }
}

/// Returns ranges that point outside the buffer.
#[derive(Debug)]
struct Lying;

impl PacketCodec for Lying {
    fn name(&self) -> &str {
        "lying"
    }
    fn encode(&self, _: FrameHead, _: &[u8], _: &[u8], _: &mut Vec<u8>) -> Result<(), EncodeError> {
        Ok(())
    }
    fn decode(&self, b: &[u8]) -> Result<Decoded, DecodeError> {
        Ok(Decoded::Frame(RawFrame {
            head: FrameHead::new(CmdId(1), Seq(1)),
            body: 0..b.len() + 10,
            extension: None,
            len: b.len(),
        }))
    }
    fn classify(&self, h: &FrameHead) -> FrameKind {
        FrameKind::Response(h.seq)
    }
}

/// Always answers "need more", asking for what its function computes from the buffered length;
/// its frame limit is [`ASKING_MAX`].
struct Asking(fn(usize) -> usize);

const ASKING_MAX: usize = 100;

impl fmt::Debug for Asking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Asking")
    }
}

impl PacketCodec for Asking {
    fn name(&self) -> &str {
        "asking"
    }
    fn encode(&self, _: FrameHead, _: &[u8], _: &[u8], _: &mut Vec<u8>) -> Result<(), EncodeError> {
        Ok(())
    }
    fn decode(&self, b: &[u8]) -> Result<Decoded, DecodeError> {
        Ok(Decoded::Incomplete {
            head: None,
            needed: (self.0)(b.len()),
        })
    }
    fn classify(&self, h: &FrameHead) -> FrameKind {
        FrameKind::Response(h.seq)
    }
    fn max_frame_len(&self) -> usize {
        ASKING_MAX
    }
}

fn sample_frames() -> Vec<(FrameHead, Vec<u8>, Vec<u8>)> {
    vec![
        (FrameHead::new(CmdId(1), Seq(2)), b"hello".to_vec(), vec![]),
        (FrameHead::new(CmdId(7), Seq(0)), vec![], b"ext".to_vec()),
        (
            FrameHead::new(CmdId(9), Seq(300)),
            vec![0xAB; 1024],
            vec![1; 5],
        ),
        (FrameHead::new(CmdId(3), Seq(4)), vec![0; TOY_MAX], vec![]),
    ]
}

fn short_req<'a>(headers: &'a [(String, String)]) -> ShortLinkRequest<'a> {
    ShortLinkRequest {
        path: "/cgi-bin/x",
        host: "s.example",
        body: b"payload",
        task_headers: headers,
    }
}

#[test]
fn plugin_side_object_encodes_and_decodes_like_the_codec() {
    let obj = export_codec(Toy).unwrap();
    assert_eq!(obj.name().as_str(), "toy");
    let mut out = Vec::new();
    let head = FrameHead::new(CmdId(5), Seq(6));
    assert_eq!(
        obj.encode(
            head.into(),
            b"abc"[..].into(),
            b"z"[..].into(),
            FfiAppend::new(&mut out)
        ),
        RResult::ROk(())
    );
    let mut direct = Vec::new();
    Toy.encode(head, b"abc", b"z", &mut direct).unwrap();
    assert_eq!(out.as_slice(), direct.as_slice());
    assert_eq!(
        obj.decode(out.as_slice().into()),
        RResult::ROk(FfiDecoded::Frame {
            head: head.into(),
            body: FfiRange { start: 14, end: 17 },
            extension: ROption::RSome(FfiRange { start: 17, end: 18 }),
            len: 18,
        })
    );
    assert_eq!(
        obj.decode(out.as_slice()[..16].into()),
        RResult::ROk(FfiDecoded::Incomplete {
            head: ROption::RSome(head.into()),
            needed: 18,
        })
    );
    assert_eq!(
        obj.classify(FfiFrameHead { cmd_id: 1, seq: 0 }),
        FfiFrameKind::Push
    );
    assert_eq!(obj.max_frame_len(), TOY_MAX as u64);
    assert!(obj.is_reserved_seq(0xFFFF_0001));
}

#[test]
fn host_adapter_matches_the_codec_for_every_method() {
    let loaded = import_codec(export_codec(Toy).unwrap(), "test");
    assert_eq!(loaded.name(), "toy");
    for (head, body, ext) in sample_frames() {
        let mut via = b"prefix".to_vec();
        let mut direct = b"prefix".to_vec();
        let r1 = loaded.encode(head, &body, &ext, &mut via);
        let r2 = Toy.encode(head, &body, &ext, &mut direct);
        assert_eq!(r1, r2);
        assert_eq!(via, direct);
        let wire = &direct[6..];
        for cut in [0, 3, TOY_HEAD, wire.len() / 2, wire.len()] {
            let buf = &wire[..cut.min(wire.len())];
            assert_eq!(loaded.decode(buf), Toy.decode(buf), "cut {cut}");
        }
        assert_eq!(loaded.classify(&head), Toy.classify(&head));
    }
    let bad = [0, 0, 0x0B, 0xAD, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(loaded.decode(&bad), Err(DecodeError::Magic { got: 0xBAD }));
    for seq in [0, 1, 0xFFFF_0000, 0xFFFF_FFFF] {
        assert_eq!(
            loaded.is_reserved_seq(Seq(seq)),
            Toy.is_reserved_seq(Seq(seq))
        );
    }
    assert_eq!(loaded.max_frame_len(), TOY_MAX);
    assert_eq!(loaded.heartbeat_interval(), Some(Duration::from_secs(90)));

    let mut hb = (Vec::new(), Vec::new());
    loaded.encode_heartbeat(&mut hb.0).unwrap();
    Toy.encode_heartbeat(&mut hb.1).unwrap();
    assert_eq!(hb.0, hb.1);
    let mut id = (Vec::new(), Vec::new());
    loaded
        .encode_identify(CmdId(205), b"who", &mut id.0)
        .unwrap();
    Toy.encode_identify(CmdId(205), b"who", &mut id.1).unwrap();
    assert_eq!(id.0, id.1);

    let extra = vec![("X-Trace".to_owned(), "1".to_owned())];
    let (mut h1, mut h2) = (vec![("stale".into(), "x".into())], Vec::new());
    loaded.shortlink_headers(&short_req(&extra), &mut h1);
    Toy.shortlink_headers(&short_req(&extra), &mut h2);
    assert_eq!(h1, h2);
    let (mut b1, mut b2) = (Vec::new(), Vec::new());
    loaded.shortlink_body(&short_req(&extra), &mut b1);
    Toy.shortlink_body(&short_req(&extra), &mut b2);
    assert_eq!(b1, b2);
    let bad_header = vec![("X-Bad".to_owned(), String::new())];
    for (status, headers) in [(200, &extra), (200, &bad_header), (404, &extra)] {
        assert_eq!(
            loaded.shortlink_check_response(status, headers, b""),
            Toy.shortlink_check_response(status, headers, b"")
        );
    }
}

#[test]
fn encode_errors_leave_the_callers_buffer_as_it_was() {
    let loaded = import_codec(export_codec(Toy).unwrap(), "test");
    let mut out = b"keep".to_vec();
    let err = loaded.encode(
        FrameHead::new(CmdId(1), Seq(1)),
        &[0; TOY_MAX],
        b"",
        &mut out,
    );
    assert_eq!(
        err,
        Err(EncodeError::TooLarge {
            len: (TOY_MAX + TOY_HEAD) as u64,
            max: TOY_MAX as u64
        })
    );
    assert_eq!(out, b"keep");
}

#[test]
fn default_methods_cross_the_boundary_unchanged() {
    // `DefaultShape` only has the trait's defaults: the adapter must reproduce them.
    let loaded = import_codec(export_codec(DefaultShape).unwrap(), "test");
    let extra = vec![("user-agent".to_owned(), "Phobos".to_owned())];
    let (mut h1, mut h2) = (Vec::new(), Vec::new());
    loaded.shortlink_headers(&short_req(&extra), &mut h1);
    DefaultShape.shortlink_headers(&short_req(&extra), &mut h2);
    assert_eq!(h1, h2);
    assert_eq!(loaded.max_frame_len(), DEFAULT_MAX_FRAME_LEN);
    assert_eq!(loaded.heartbeat_interval(), None);
    assert_eq!(
        loaded.shortlink_check_response(500, &[], b""),
        Err(ShortLinkReject::Status(500))
    );
}

#[test]
fn panics_become_the_documented_fallbacks() {
    let loaded = import_codec(export_codec(Exploding).unwrap(), "test");
    let head = FrameHead::new(CmdId(1), Seq(42));
    let mut out = b"keep".to_vec();
    assert_eq!(
        loaded.encode(head, b"x", b"", &mut out),
        Err(EncodeError::Other(PLUGIN_PANICKED))
    );
    assert_eq!(out, b"keep");
    assert_eq!(
        loaded.encode_heartbeat(&mut out),
        Err(EncodeError::Other(PLUGIN_PANICKED))
    );
    assert_eq!(
        loaded.decode(b"abc"),
        Err(DecodeError::Other(PLUGIN_PANICKED))
    );
    assert_eq!(loaded.classify(&head), FrameKind::Response(Seq(42)));
    assert_eq!(loaded.max_frame_len(), DEFAULT_MAX_FRAME_LEN);
    assert_eq!(loaded.heartbeat_interval(), None);
    assert!(loaded.is_reserved_seq(Seq(0)));
    assert!(!loaded.is_reserved_seq(Seq(5)));
    let (mut h1, mut h2) = (Vec::new(), Vec::new());
    loaded.shortlink_headers(&short_req(&[]), &mut h1);
    DefaultShape.shortlink_headers(&short_req(&[]), &mut h2);
    assert_eq!(h1, h2);
    let mut body = Vec::new();
    loaded.shortlink_body(&short_req(&[]), &mut body);
    assert_eq!(body, b"payload");
    assert_eq!(
        loaded.shortlink_check_response(200, &[], b""),
        Err(ShortLinkReject::Other(PLUGIN_PANICKED))
    );
}

#[test]
fn out_of_bounds_ranges_from_a_plugin_are_refused() {
    let loaded = import_codec(export_codec(Lying).unwrap(), "test");
    assert_eq!(
        loaded.decode(b"abcdef"),
        Err(DecodeError::Other(INVALID_PLUGIN_OUTPUT))
    );
    assert_eq!(
        loaded.decode(b""),
        Err(DecodeError::Other(INVALID_PLUGIN_OUTPUT)),
        "a zero-length frame is refused too"
    );
}

#[test]
fn a_need_more_within_what_is_buffered_is_refused() {
    let invalid = Err(DecodeError::Other(INVALID_PLUGIN_OUTPUT));
    // Asking for exactly what is there, or less, would have the reader wait for bytes that
    // never come, or call again at once and spin.
    let same = import_codec(export_codec(Asking(|n| n)).unwrap(), "test");
    assert_eq!(same.decode(b"abcdef"), invalid);
    assert_eq!(same.decode(b""), invalid, "nothing buffered, nothing asked");
    let fewer = import_codec(
        export_codec(Asking(|n| n.saturating_sub(3))).unwrap(),
        "test",
    );
    assert_eq!(fewer.decode(b"abcdef"), invalid);
    // One byte more is a fair answer.
    let more = import_codec(export_codec(Asking(|n| n + 1)).unwrap(), "test");
    assert_eq!(
        more.decode(b"abcdef"),
        Ok(Decoded::Incomplete {
            head: None,
            needed: 7
        })
    );
}

#[test]
fn a_need_more_above_the_frame_limit_is_refused() {
    let over = import_codec(export_codec(Asking(|_| ASKING_MAX + 1)).unwrap(), "test");
    assert_eq!(
        over.decode(b"abc"),
        Err(DecodeError::Other(INVALID_PLUGIN_OUTPUT))
    );
    let huge = import_codec(export_codec(Asking(|_| usize::MAX)).unwrap(), "test");
    assert_eq!(
        huge.decode(b"abc"),
        Err(DecodeError::Other(INVALID_PLUGIN_OUTPUT))
    );
    // The limit itself may be asked for.
    let at_limit = import_codec(export_codec(Asking(|_| ASKING_MAX)).unwrap(), "test");
    assert_eq!(
        at_limit.decode(b"abc"),
        Ok(Decoded::Incomplete {
            head: None,
            needed: ASKING_MAX
        })
    );
}
