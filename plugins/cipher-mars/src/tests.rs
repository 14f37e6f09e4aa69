use proptest::prelude::*;

use super::*;

const PRIVATE: &str = "b404e0f7d50323e5327c23603878c594189d63e76e4550fdea108b9ea41d3885";
const PUBLIC: &str = "1bcf0e7fed231a624d49eb6d58fa55ba73ba3b88a9498d4bba80bd798e5c9040\
                      e189ef6daf920dc81eac3b6f25808ca0753ed9b2d0787610321221ec5e0e0329";

fn seal(enc: &mut dyn BlockEncryptor, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let used = enc.encrypt(plain, &mut out).unwrap();
    enc.finish_block(&plain[used..], &mut out).unwrap();
    out
}

#[test]
fn public_key_from_the_private_key_matches_keys_txt() {
    let private = parse_private_key(PRIVATE).unwrap();
    assert_eq!(hex::encode(raw_point(&private.public_key())), PUBLIC);
}

#[test]
fn upper_case_hex_is_accepted() {
    MarsCipher::from_public_key_hex(&PUBLIC.to_uppercase()).unwrap();
    MarsCipher::from_private_key_hex(&PRIVATE.to_uppercase()).unwrap();
}

#[test]
fn bad_keys_are_errors_not_plaintext() {
    for bad in ["", "abcd", &PUBLIC[..126], &format!("{}zz", &PUBLIC[..126])] {
        assert!(matches!(
            MarsCipher::from_public_key_hex(bad),
            Err(CipherError::BadKey(_))
        ));
    }
    // Right length, but (0, 0) is not on the curve.
    let zeros = "0".repeat(128);
    assert!(matches!(
        MarsCipher::from_public_key_hex(&zeros),
        Err(CipherError::BadKey(_))
    ));
    assert!(matches!(
        MarsCipher::from_private_key_hex(&"0".repeat(64)),
        Err(CipherError::BadKey(_))
    ));
    // n, the group order, is not a valid scalar.
    let n = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
    assert!(matches!(
        MarsCipher::from_private_key_hex(n),
        Err(CipherError::BadKey(_))
    ));
    assert!(matches!(
        MarsCipher::from_private_key_hex("xyz"),
        Err(CipherError::BadKey(_))
    ));
}

#[test]
fn each_side_needs_its_key() {
    let writer = MarsCipher::from_public_key_hex(PUBLIC).unwrap();
    let reader = MarsCipher::from_private_key_hex(PRIVATE).unwrap();
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
fn header_key_must_be_a_curve_point() {
    let reader = MarsCipher::from_private_key_hex(PRIVATE).unwrap();
    assert_eq!(
        reader.new_decryptor(&[0; HEADER_KEY_LEN]).unwrap_err(),
        CipherError::BadHeaderKey
    );
    let mut off_curve = [0x11; HEADER_KEY_LEN];
    off_curve[63] ^= 1;
    assert_eq!(
        reader.new_decryptor(&off_curve).unwrap_err(),
        CipherError::BadHeaderKey
    );
}

#[test]
fn sessions_use_fresh_ephemeral_keys() {
    let writer = MarsCipher::from_public_key_hex(PUBLIC).unwrap();
    let a = writer.new_encryptor().unwrap().header_key();
    let b = writer.new_encryptor().unwrap().header_key();
    assert_ne!(a, b);
    // The header key is a valid uncompressed point.
    assert!(point_from_raw(&a).is_some());
}

#[test]
fn deterministic_session_matches_manual_ecdh_and_tea() {
    let writer = MarsCipher::from_public_key_hex(PUBLIC).unwrap();
    let client = NonZeroScalar::from_repr([0x42; 32].into()).unwrap();
    let mut enc = writer.encryptor_with(client).unwrap();
    let sealed = seal(enc.as_mut(), b"0123456789abcdefXYZ");
    // 16 bytes encrypted, 3 bytes of clear tail.
    assert_eq!(&sealed[16..], b"XYZ");

    let server = parse_private_key(PRIVATE).unwrap();
    let client_pub = PublicKey::from_secret_scalar(&client);
    let shared = k256::ecdh::diffie_hellman(server.to_nonzero_scalar(), client_pub.as_affine());
    let mut k = [0u8; 16];
    k.copy_from_slice(&shared.raw_secret_bytes()[..16]);
    let mut expect = *b"0123456789abcdef";
    TeaKey::from_bytes(&k).encrypt_units(&mut expect);
    assert_eq!(&sealed[..16], &expect);
    assert_eq!(enc.header_key(), raw_point(&client_pub));
}

#[test]
fn encrypt_consumes_whole_units_only() {
    let writer = MarsCipher::from_public_key_hex(PUBLIC).unwrap();
    let mut enc = writer.new_encryptor().unwrap();
    let mut out = Vec::new();
    assert_eq!(enc.encrypt(b"1234567", &mut out).unwrap(), 0);
    assert!(out.is_empty());
    assert_eq!(enc.encrypt(b"123456789", &mut out).unwrap(), 8);
    assert_eq!(out.len(), 8);
    assert!(enc.is_prefix_decryptable());
}

#[test]
fn config_round_trip_and_unknown_fields() {
    let config: MarsCipherConfig = serde_json::from_str(&format!(
        r#"{{"public_key":"{PUBLIC}","private_key":"{PRIVATE}"}}"#
    ))
    .unwrap();
    let cipher = MarsCipher::from_config(&config).unwrap();
    assert!(cipher.has_public_key() && cipher.has_private_key());
    assert!(serde_json::from_str::<MarsCipherConfig>(r#"{"pubkey":"00"}"#).is_err());
    let empty: MarsCipherConfig = serde_json::from_str("{}").unwrap();
    let none = MarsCipher::from_config(&empty).unwrap();
    assert!(!none.has_public_key() && !none.has_private_key());
}

#[test]
fn config_rejects_mismatched_pair() {
    let other = MarsCipher::generate_key_pair();
    let config = MarsCipherConfig {
        public_key: Some(other.public_key),
        private_key: Some(PRIVATE.into()),
    };
    assert!(matches!(
        MarsCipher::from_config(&config),
        Err(CipherError::BadKey(_))
    ));
}

#[test]
fn debug_output_redacts_the_private_key() {
    let reader = MarsCipher::from_private_key_hex(PRIVATE).unwrap();
    let text = format!("{reader:?}");
    assert!(!text.contains(&PRIVATE[..16]));
    let pair = MarsCipher::generate_key_pair();
    assert!(!format!("{pair:?}").contains(&pair.private_key));
}

#[test]
fn kind_and_name() {
    let c = MarsCipher::from_public_key_hex(PUBLIC).unwrap();
    assert_eq!(c.kind(), CipherKind::MarsCompatible);
    assert_eq!(c.name(), "mars-tea");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn round_trip_with_any_split(plain in proptest::collection::vec(any::<u8>(), 0..300),
                                 cuts in proptest::collection::vec(1usize..40, 0..10)) {
        let pair = MarsCipher::generate_key_pair();
        let writer = MarsCipher::from_public_key_hex(&pair.public_key).unwrap();
        let reader = MarsCipher::from_private_key_hex(&pair.private_key).unwrap();
        let mut enc = writer.new_encryptor().unwrap();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut rest = &plain[..];
        for cut in cuts {
            let (piece, tail) = rest.split_at(cut.min(rest.len()));
            rest = tail;
            pending.extend_from_slice(piece);
            let used = enc.encrypt(&pending, &mut out).unwrap();
            prop_assert_eq!(used % 8, 0);
            pending.drain(..used);
        }
        pending.extend_from_slice(rest);
        enc.finish_block(&pending, &mut out).unwrap();
        // Incremental staging equals one pass over the whole body (format doc §3.4).
        let one_pass = seal(enc.as_mut(), &plain);
        prop_assert_eq!(&out, &one_pass);

        let mut back = Vec::new();
        reader.new_decryptor(&enc.header_key()).unwrap().decrypt_block(&out, &mut back).unwrap();
        prop_assert_eq!(back, plain);
    }
}
