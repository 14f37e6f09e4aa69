//! An event a `LogCipher` emits while it encrypts a line (here through the global subscriber,
//! as apps install it) is logged after that line, and so is the line of a panic hook when the
//! cipher panics (the panic itself stays inside xlog: that line is lost and reported). In sync mode the cipher runs on the logging thread with the logger's staging
//! lock held; such an event used to come back into the same logger and wait for that lock
//! forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use phobos_cipher_mars::MarsCipher;
use phobos_plugin_api::cipher::{
    BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher, HEADER_KEY_LEN,
};
use phobos_xlog::Mode;
use phobos_xlog_decode::Decoder;

mod common;
use common::{decoded_by, open_with, set_global};

/// What the cipher's encryptors do at their next `encrypt` call.
#[derive(Debug, Default)]
struct Orders {
    /// Emit a `tracing` warning.
    warn: AtomicBool,
    /// Panic.
    panic: AtomicBool,
}

/// Mars's cipher, with encryptors that follow [`Orders`] before encrypting.
#[derive(Debug)]
struct Misbehaving {
    mars: MarsCipher,
    orders: Arc<Orders>,
}

#[derive(Debug)]
struct MisbehavingEncryptor {
    mars: Box<dyn BlockEncryptor>,
    orders: Arc<Orders>,
}

impl LogCipher for Misbehaving {
    fn name(&self) -> &str {
        "misbehaving"
    }

    fn kind(&self) -> CipherKind {
        self.mars.kind()
    }

    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        Ok(Box::new(MisbehavingEncryptor {
            mars: self.mars.new_encryptor()?,
            orders: Arc::clone(&self.orders),
        }))
    }

    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        self.mars.new_decryptor(header_key)
    }
}

impl BlockEncryptor for MisbehavingEncryptor {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.mars.header_key()
    }

    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        if self.orders.warn.swap(false, Ordering::SeqCst) {
            tracing::warn!(target: "cipher", bytes = plain.len(), "key rotation due");
        }
        if self.orders.panic.swap(false, Ordering::SeqCst) {
            panic!("cipher failed");
        }
        self.mars.encrypt(plain, out)
    }

    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.mars.finish_block(rest, out)
    }

    fn is_prefix_decryptable(&self) -> bool {
        self.mars.is_prefix_decryptable()
    }
}

#[test]
fn events_emitted_from_inside_the_cipher_are_logged_after_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let keys = MarsCipher::generate_key_pair();
    let orders = Arc::new(Orders::default());
    let cipher = Misbehaving {
        mars: MarsCipher::from_public_key_hex(&keys.public_key).unwrap(),
        orders: Arc::clone(&orders),
    };
    // Sync mode: every line is encrypted on the logging thread, under the staging lock.
    let guard = open_with(dir.path(), |b| b.mode(Mode::Sync).cipher(Arc::new(cipher)));
    // The global dispatcher (a scoped one drops nested events before any layer sees them);
    // this file holds one test, so it is the only one to set it.
    set_global(&guard);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        for i in 0..3 {
            orders.warn.store(true, Ordering::SeqCst);
            tracing::info!("line {i}");
        }
        // A panic hook that logs the panic, as apps do: the panic happens inside the cipher.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| tracing::error!("panicked: {info}")));
        orders.panic.store(true, Ordering::SeqCst);
        let caught = std::panic::catch_unwind(|| tracing::info!("doomed"));
        std::panic::set_hook(previous);
        tracing::info!("afterwards");
        let dropped = guard.dropped_lines();
        drop(guard);
        let _ = done.send((caught.is_err(), dropped));
    });
    // A hang detector (the logging takes milliseconds), not a timing threshold. The guard is
    // dropped on the logging thread too: closing a deadlocked logger would hang this one.
    let (panicked, dropped) = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("logging with a cipher that logs did not return within 60 s: deadlocked");
    // The cipher's panic stays inside xlog (its calls are guarded): the logging call returns,
    // and the line it was encrypting is lost and counted.
    assert!(!panicked, "the cipher's panic reached the logging call");
    assert_eq!(dropped, 1);

    let private = MarsCipher::from_private_key_hex(&keys.private_key).unwrap();
    let decoder = Decoder::builder().cipher(Arc::new(private)).build();
    let text = decoded_by(dir.path(), &decoder);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    for (i, pair) in lines[..6].chunks(2).enumerate() {
        assert!(pair[0].starts_with("[I]"), "{text}");
        assert!(pair[0].ends_with(&format!("][line {i}")), "{text}");
        assert!(pair[1].starts_with("[W]"), "{text}");
        assert!(pair[1].contains("][cipher]["), "{text}");
        assert!(pair[1].contains("][key rotation due bytes="), "{text}");
    }
    // The line being encrypted is lost with the panic and reported before the next one; the
    // hook's line (two lines of text), logged from inside the cipher, follows it, and the
    // thread's next line comes last.
    assert!(lines[6].starts_with("[W]"), "{text}");
    assert!(
        lines[6].ends_with("][xlog dropped 1 lines: they could not be compressed or encrypted"),
        "{text}"
    );
    assert!(lines[7].starts_with("[E]"), "{text}");
    assert!(lines[7].contains("][panicked: panicked at "), "{text}");
    assert_eq!(lines[8], "cipher failed", "{text}");
    assert!(lines[9].ends_with("][afterwards"), "{text}");
}
