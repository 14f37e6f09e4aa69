use proptest::prelude::*;

use super::*;

fn pair() -> (ModernCipher, ModernCipher) {
    let keys = ModernCipher::generate_key_pair();
    (
        ModernCipher::from_public_key_hex(&keys.public_key).unwrap(),
        ModernCipher::from_private_key_hex(&keys.private_key).unwrap(),
    )
}

fn seal_lines(enc: &mut dyn BlockEncryptor, lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        assert_eq!(enc.encrypt(line, &mut out).unwrap(), line.len());
    }
    enc.finish_block(b"", &mut out).unwrap();
    out
}

fn open(reader: &ModernCipher, key: &[u8; 64], body: &[u8]) -> (Vec<u8>, Result<(), CipherError>) {
    let mut out = Vec::new();
    let r = reader
        .new_decryptor(key)
        .and_then(|mut d| d.decrypt_block(body, &mut out));
    (out, r)
}

#[test]
fn records_round_trip_across_blocks() {
    let (writer, reader) = pair();
    let mut enc = writer.new_encryptor().unwrap();
    let b1 = seal_lines(enc.as_mut(), &[b"a\n", b"bb\n"]);
    let b2 = seal_lines(enc.as_mut(), &[b"ccc\n"]);
    let key = enc.header_key();
    assert_eq!(open(&reader, &key, &b1), (b"a\nbb\n".to_vec(), Ok(())));
    assert_eq!(open(&reader, &key, &b2), (b"ccc\n".to_vec(), Ok(())));
    // Record layout: 12-byte header + plaintext + 16-byte tag; the counter runs on across blocks.
    assert_eq!(b1.len(), 2 * (RECORD_HEADER_LEN + TAG_LEN) + 5);
    assert_eq!(&b2[4..12], &2u64.to_le_bytes());
}

#[test]
fn staged_bytes_are_ciphertext() {
    let (writer, _) = pair();
    let mut enc = writer.new_encryptor().unwrap();
    let mut out = Vec::new();
    enc.encrypt(b"secret password line", &mut out).unwrap();
    assert!(!out.windows(6).any(|w| w == b"secret"));
}

#[test]
fn finish_block_seals_the_rest() {
    let (writer, reader) = pair();
    let mut enc = writer.new_encryptor().unwrap();
    let mut out = Vec::new();
    enc.finish_block(b"tail", &mut out).unwrap();
    assert_eq!(open(&reader, &enc.header_key(), &out).0, b"tail");
    let mut none = Vec::new();
    enc.finish_block(b"", &mut none).unwrap();
    assert!(none.is_empty());
}

#[test]
fn crash_truncated_block_yields_complete_records_then_integrity_error() {
    let (writer, reader) = pair();
    let mut enc = writer.new_encryptor().unwrap();
    let body = seal_lines(enc.as_mut(), &[b"one\n", b"two\n", b"three\n"]);
    let key = enc.header_key();
    let first_two = 2 * (RECORD_HEADER_LEN + TAG_LEN) + 8;
    // Cut exactly after a record: a clean prefix.
    assert_eq!(
        open(&reader, &key, &body[..first_two]),
        (b"one\ntwo\n".to_vec(), Ok(()))
    );
    // Cut inside the third record.
    for cut in [first_two + 1, first_two + 5, body.len() - 1] {
        let (text, r) = open(&reader, &key, &body[..cut]);
        assert_eq!(text, b"one\ntwo\n");
        assert_eq!(r, Err(CipherError::Integrity));
    }
}

#[test]
fn every_flipped_bit_is_detected() {
    let (writer, reader) = pair();
    let mut enc = writer.new_encryptor().unwrap();
    let body = seal_lines(enc.as_mut(), &[b"hello\n", b"world\n"]);
    let key = enc.header_key();
    for i in 0..body.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = body.clone();
            bad[i] ^= bit;
            let (_, r) = open(&reader, &key, &bad);
            assert_eq!(r, Err(CipherError::Integrity), "byte {i} bit {bit:#x}");
        }
    }
    // A changed salt in the header derives another key.
    let mut bad_key = key;
    bad_key[40] ^= 1;
    assert_eq!(
        open(&reader, &bad_key, &body).1,
        Err(CipherError::Integrity)
    );
}

#[test]
fn removed_or_reordered_records_are_detected() {
    let (writer, reader) = pair();
    let mut enc = writer.new_encryptor().unwrap();
    let body = seal_lines(enc.as_mut(), &[b"1\n", b"2\n", b"3\n"]);
    let rec = RECORD_HEADER_LEN + TAG_LEN + 2;
    let mut without_middle = body[..rec].to_vec();
    without_middle.extend_from_slice(&body[2 * rec..]);
    let (text, r) = open(&reader, &enc.header_key(), &without_middle);
    assert_eq!(
        (text.as_slice(), r),
        (&b"1\n"[..], Err(CipherError::Integrity))
    );
    let mut swapped = body[rec..2 * rec].to_vec();
    swapped.extend_from_slice(&body[..rec]);
    assert_eq!(
        open(&reader, &enc.header_key(), &swapped).1,
        Err(CipherError::Integrity)
    );
}

#[test]
fn wrong_private_key_is_an_integrity_error() {
    let (writer, _) = pair();
    let (_, other_reader) = pair();
    let mut enc = writer.new_encryptor().unwrap();
    let body = seal_lines(enc.as_mut(), &[b"x\n"]);
    assert_eq!(
        open(&other_reader, &enc.header_key(), &body),
        (Vec::new(), Err(CipherError::Integrity))
    );
}

#[test]
fn keys_are_checked() {
    for bad in ["", "00", &"g".repeat(64), &"0".repeat(63)] {
        assert!(matches!(
            ModernCipher::from_public_key_hex(bad),
            Err(CipherError::BadKey(_))
        ));
        assert!(matches!(
            ModernCipher::from_private_key_hex(bad),
            Err(CipherError::BadKey(_))
        ));
    }
    // The all-zero point has low order.
    assert!(matches!(
        ModernCipher::from_public_key_hex(&"0".repeat(64)),
        Err(CipherError::BadKey(_))
    ));
}

#[test]
fn low_order_header_key_is_refused() {
    let (_, reader) = pair();
    assert_eq!(
        reader.new_decryptor(&[0; 64]).unwrap_err(),
        CipherError::BadHeaderKey
    );
}

#[test]
fn each_side_needs_its_key() {
    let (writer, reader) = pair();
    assert_eq!(
        reader.new_encryptor().unwrap_err(),
        CipherError::MissingKey("public")
    );
    let enc = writer.new_encryptor().unwrap();
    assert_eq!(
        writer.new_decryptor(&enc.header_key()).unwrap_err(),
        CipherError::MissingKey("private")
    );
}

#[test]
fn header_key_layout_is_ephemeral_public_then_salt() {
    let keys = ModernCipher::generate_key_pair();
    let writer = ModernCipher::from_public_key_hex(&keys.public_key).unwrap();
    let eph = StaticSecret::from([9; 32]);
    let eph_pub = PublicKey::from(&eph);
    let enc = writer.encryptor_with(eph, [7; SALT_LEN]).unwrap();
    let key = enc.header_key();
    assert_eq!(&key[..32], eph_pub.as_bytes());
    assert_eq!(&key[32..], &[7; 32]);
    // Fresh sessions differ in both halves.
    let a = writer.new_encryptor().unwrap().header_key();
    let b = writer.new_encryptor().unwrap().header_key();
    assert_ne!(a[..32], b[..32]);
    assert_ne!(a[32..], b[32..]);
}

#[test]
fn config_checks_fields_and_pairing() {
    let keys = ModernCipher::generate_key_pair();
    let json = format!(
        r#"{{"public_key":"{}","private_key":"{}"}}"#,
        keys.public_key, keys.private_key
    );
    let config: ModernCipherConfig = serde_json::from_str(&json).unwrap();
    let both = ModernCipher::from_config(&config).unwrap();
    assert!(both.has_public_key() && both.has_private_key());
    assert!(serde_json::from_str::<ModernCipherConfig>(r#"{"key":"00"}"#).is_err());
    let other = ModernCipher::generate_key_pair();
    let mismatched = ModernCipherConfig {
        public_key: Some(other.public_key),
        private_key: Some(keys.private_key.clone()),
    };
    assert!(matches!(
        ModernCipher::from_config(&mismatched),
        Err(CipherError::BadKey(_))
    ));
    assert!(!format!("{both:?}").contains(&keys.private_key));
}

#[test]
fn kind_is_authenticated() {
    let (writer, _) = pair();
    assert_eq!(writer.kind(), CipherKind::Authenticated);
    assert!(writer.new_encryptor().unwrap().is_prefix_decryptable());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn round_trip(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8)) {
        let (writer, reader) = pair();
        let mut enc = writer.new_encryptor().unwrap();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let body = seal_lines(enc.as_mut(), &refs);
        let (text, r) = open(&reader, &enc.header_key(), &body);
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(text, lines.concat());
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (writer, reader) = pair();
        let enc = writer.new_encryptor().unwrap();
        let _ = open(&reader, &enc.header_key(), &body);
    }
}
