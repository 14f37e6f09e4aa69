//! Conformance checks for [`AuthCheck`], run by [`auth_conformance!`](crate::auth_conformance).
//!
//! What the checks take as the contract:
//!
//! - `identify_request` and `on_identify_response` never panic, whatever the link name, reply
//!   body and hash; an identify frame never uses the heartbeat's command id (6), whose replies
//!   the codec would take for heartbeat replies.
//! - The gate is consistent: when `is_authed(host)` holds, `ensure_authed(host)` succeeds.

use phobos_plugin_api::codec::HEARTBEAT_CMD;
use phobos_plugin_api::{AuthCheck, IdentifyRequest};

use crate::ipsource::block_on;
use crate::rng::TestRng;

/// Link names the checks use.
const LINKS: [&str; 4] = ["main", "minor", "", "a link name with spaces and ünïcode"];
/// Host names the checks use.
const HOSTS: [&str; 3] = ["", "long.example", "short.example"];

/// Identify requests and replies of every shape never panic, and identify frames avoid the
/// heartbeat command id.
///
/// # Panics
///
/// On a panic inside the plugin or an identify frame with command id 6.
pub fn check_identify_exchange(auth: &dyn AuthCheck) {
    let mut rng = TestRng::new(0xA17);
    for link in LINKS {
        let hash = match auth.identify_request(link) {
            IdentifyRequest::Now { cmd_id, hash, .. } => {
                assert_ne!(
                    cmd_id,
                    HEARTBEAT_CMD,
                    "{}: identify frame with the heartbeat's command id",
                    auth.name()
                );
                hash
            }
            _ => Vec::new(),
        };
        let len = rng.below(300);
        let random = rng.bytes(len);
        for body in [&[][..], &[0], &[1], &[2], &[0xFF; 64], &random] {
            for h in [&hash[..], &[], &random] {
                let _ = auth.on_identify_response(link, body, h);
            }
        }
    }
}

/// Whenever `is_authed(host)` holds, `ensure_authed(host)` succeeds.
///
/// # Panics
///
/// On an inconsistency or a panic inside the plugin.
pub fn check_gate_consistent(auth: &dyn AuthCheck) {
    for host in HOSTS {
        if auth.is_authed(host) {
            let res = block_on(auth.ensure_authed(host));
            assert!(
                res.is_ok(),
                "{}: authed for {host:?} but ensure_authed failed: {res:?}",
                auth.name()
            );
        } else {
            // Not authed: ensure_authed may log in or fail, but must not panic.
            let _ = block_on(auth.ensure_authed(host));
        }
    }
}

/// Asserts that two plugins behave identically: the same name, gate, identify frames and
/// verdicts, through the same sequence of calls.
///
/// Meant for comparing a plugin used in-process with the same plugin loaded from its library.
///
/// # Panics
///
/// At the first difference, naming it.
pub fn assert_auth_identical(a: &dyn AuthCheck, b: &dyn AuthCheck) {
    assert_eq!(a.name(), b.name(), "name");
    for host in HOSTS {
        assert_eq!(a.is_authed(host), b.is_authed(host), "is_authed({host:?})");
        assert_eq!(
            block_on(a.ensure_authed(host)),
            block_on(b.ensure_authed(host)),
            "ensure_authed({host:?})"
        );
    }
    for link in LINKS {
        let (ra, rb) = (a.identify_request(link), b.identify_request(link));
        assert_eq!(ra, rb, "identify_request({link:?})");
        let hash = match ra {
            IdentifyRequest::Now { hash, .. } => hash,
            _ => Vec::new(),
        };
        for body in [&[2][..], &[], &[0], &[1]] {
            assert_eq!(
                a.on_identify_response(link, body, &hash),
                b.on_identify_response(link, body, &hash),
                "on_identify_response({link:?}, {body:?})"
            );
            for host in HOSTS {
                assert_eq!(
                    a.is_authed(host),
                    b.is_authed(host),
                    "is_authed({host:?}) after {body:?}"
                );
            }
        }
    }
}
