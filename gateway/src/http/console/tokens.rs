//! The console's tokens: enrollment invites, sessions, sign-in challenges
//! and CSRF tokens, each a MAC'd value under one key, so that any gateway
//! instance sharing the administrator token checks what another made.
//!
//! The key is SHA-256 of `tollgate.console-key.v1`, a line feed and the
//! admin token: rotating the admin token ends every session and voids
//! every invite not yet used. None of these tokens decides anything the
//! ledger records: an invite is single-use because the `reviewer.register`
//! it leads to can happen once per reviewer id (the registry refuses a
//! second object under an id), and a decision is authorized by its own
//! passkey assertion, never by the session that carried it.

use hmac::{KeyInit as _, Mac as _};
use tollgate_protocol::{Object, Value, b64, b64_decode, canonical, parse};

/// How long an invite lasts unless the administrator says otherwise.
pub const DEFAULT_INVITE_SECONDS: i64 = 24 * 3600;
/// The longest an invite may last.
pub const MAX_INVITE_SECONDS: i64 = 7 * 24 * 3600;
/// How long a session lasts from sign-in.
pub const SESSION_SECONDS: i64 = 8 * 3600;
/// How long a sign-in challenge may be answered.
pub const CHALLENGE_SECONDS: i64 = 300;

/// The MAC key and what it signs.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// An invite to enroll as a reviewer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The reviewer id to register.
    pub reviewer: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// The actions it may approve.
    pub actions: Vec<String>,
    /// Seconds since the epoch after which it is refused.
    pub expires_at: i64,
}

/// Who a session is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// A reviewer, signed in with its passkey.
    Reviewer(String),
    /// Someone who gave the read token: may look, not decide.
    Viewer,
}

/// A session, as its cookie says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub who: Who,
    /// Seconds since the epoch after which it is over.
    pub expires_at: i64,
    /// The cookie's value, which the CSRF token is derived from.
    pub token: String,
}

fn random16() -> Option<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(b)
}

impl Keys {
    /// The keys derived from the admin token.
    pub fn from_admin_token(token: &str) -> Self {
        let digest = tollgate_protocol::HashAlg::Sha256
            .digest(&[b"tollgate.console-key.v1\n", token.as_bytes()]);
        Self { key: digest.bytes }
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        // INVARIANT: HMAC takes keys of any length.
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(purpose.as_bytes());
        m.update(b"\n");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// `b64(canonical(o)) . b64(mac)`.
    fn seal(&self, purpose: &str, o: Object) -> String {
        let body = canonical(&Value::Object(o));
        format!("{}.{}", b64(&body), b64(&self.mac(purpose, &body)))
    }

    /// The object a sealed token holds, if its MAC is right.
    fn open(&self, purpose: &str, token: &str) -> Option<Object> {
        let (body, mac) = token.split_once('.')?;
        let body = b64_decode(body)?;
        let mac = b64_decode(mac)?;
        let expected = self.mac(purpose, &body);
        if mac.len() != 32 || !constant_eq(&mac, &expected) {
            return None;
        }
        parse(&body).ok()?.as_object().cloned()
    }

    /// A new invite token.
    pub fn invite(&self, invite: &Invite) -> Option<String> {
        let strs = |v: &[String]| Value::Array(v.iter().map(|s| s.as_str().into()).collect());
        let mut o = Object::new();
        o.insert("reviewer", invite.reviewer.as_str().into());
        o.insert("roles", strs(&invite.roles));
        o.insert("actions", strs(&invite.actions));
        o.insert("expires_at", Value::integer(invite.expires_at)?);
        o.insert("nonce", b64(&random16()?).into());
        Some(self.seal("invite", o))
    }

    /// The invite `token` holds, whatever its expiry; `None` when it is
    /// not one of ours.
    pub fn read_invite(&self, token: &str) -> Option<Invite> {
        let o = self.open("invite", token)?;
        let strs = |name: &str| -> Option<Vec<String>> {
            match o.get(name)? {
                Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
                _ => None,
            }
        };
        Some(Invite {
            reviewer: o.get("reviewer")?.as_str()?.to_owned(),
            roles: strs("roles")?,
            actions: strs("actions")?,
            expires_at: o.get("expires_at")?.as_safe_integer()?,
        })
    }

    /// The registration challenge of an invite: bound to it, unguessable
    /// without it.
    pub fn enroll_challenge(&self, invite_token: &str) -> [u8; 32] {
        self.mac("enroll-challenge", invite_token.as_bytes())
    }

    /// A new session cookie value.
    pub fn session(&self, who: &Who, now: i64) -> Option<String> {
        let mut o = Object::new();
        match who {
            Who::Reviewer(id) => o.insert("reviewer", id.as_str().into()),
            Who::Viewer => o.insert("viewer", Value::Bool(true)),
        };
        o.insert("expires_at", Value::integer(now + SESSION_SECONDS)?);
        o.insert("nonce", b64(&random16()?).into());
        Some(self.seal("session", o))
    }

    /// The session a cookie value holds, if it is ours and not over.
    pub fn read_session(&self, token: &str, now: i64) -> Option<Session> {
        let o = self.open("session", token)?;
        let expires_at = o.get("expires_at")?.as_safe_integer()?;
        if now >= expires_at {
            return None;
        }
        let who = match (o.get("reviewer"), o.get("viewer")) {
            (Some(r), None) => Who::Reviewer(r.as_str()?.to_owned()),
            (None, Some(Value::Bool(true))) => Who::Viewer,
            _ => return None,
        };
        Some(Session {
            who,
            expires_at,
            token: token.to_owned(),
        })
    }

    /// The CSRF token of a session: pages carry it, and every state
    /// changing request must send it back in `X-CSRF-Token`.
    pub fn csrf(&self, session_token: &str) -> String {
        b64(&self.mac("csrf", session_token.as_bytes()))
    }

    /// Whether `given` is the CSRF token of `session_token`.
    pub fn csrf_is(&self, session_token: &str, given: &str) -> bool {
        let expected = self.csrf(session_token);
        given.len() == expected.len() && constant_eq(given.as_bytes(), expected.as_bytes())
    }

    /// A sign-in challenge: `expires_at` (8 bytes, big-endian), 16 random
    /// bytes, then 16 bytes of MAC over both.
    pub fn signin_challenge(&self, now: i64) -> Option<Vec<u8>> {
        let mut c = (now + CHALLENGE_SECONDS).to_be_bytes().to_vec();
        c.extend_from_slice(&random16()?);
        let mac = self.mac("signin-challenge", &c);
        c.extend_from_slice(&mac[..16]);
        Some(c)
    }

    /// Whether `c` is a sign-in challenge of ours, not expired at `now`.
    pub fn signin_challenge_ok(&self, c: &[u8], now: i64) -> bool {
        if c.len() != 40 {
            return false;
        }
        let mac = self.mac("signin-challenge", &c[..24]);
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&c[..8]);
        constant_eq(&c[24..], &mac[..16]) && now < i64::from_be_bytes(secs)
    }
}

/// Compares in time independent of where the first difference is.
pub(crate) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_open_only_under_their_key_purpose_and_time() {
        let k = Keys::from_admin_token("admin-token-of-32-characters-or-more");
        let other = Keys::from_admin_token("another-admin-token-of-32-characters");
        let invite = Invite {
            reviewer: "rev-a".into(),
            roles: vec!["refunds".into()],
            actions: vec!["orders.*".into()],
            expires_at: 1000,
        };
        let t = k.invite(&invite).unwrap();
        assert_eq!(k.read_invite(&t), Some(invite));
        assert_eq!(other.read_invite(&t), None);
        // A session token is not an invite, and back.
        let s = k.session(&Who::Reviewer("rev-a".into()), 100).unwrap();
        assert_eq!(k.read_invite(&s), None);
        assert_eq!(k.read_session(&t, 100), None);
        let session = k.read_session(&s, 100).unwrap();
        assert_eq!(session.who, Who::Reviewer("rev-a".into()));
        assert_eq!(k.read_session(&s, 100 + SESSION_SECONDS), None);
        // One changed character of the body or the MAC voids it.
        let (body, mac) = s.split_once('.').unwrap();
        let flipped = |t: &str| {
            let mut c: Vec<char> = t.chars().collect();
            c[2] = if c[2] == 'A' { 'B' } else { 'A' };
            c.into_iter().collect::<String>()
        };
        assert_eq!(
            k.read_session(&format!("{}.{mac}", flipped(body)), 100),
            None
        );
        assert_eq!(
            k.read_session(&format!("{body}.{}", flipped(mac)), 100),
            None
        );
        // CSRF tokens are per session.
        let s2 = k.session(&Who::Viewer, 100).unwrap();
        assert!(k.csrf_is(&s, &k.csrf(&s)));
        assert!(!k.csrf_is(&s2, &k.csrf(&s)));
        assert!(!k.csrf_is(&s, ""));
        // Challenges expire and are ours only.
        let c = k.signin_challenge(100).unwrap();
        assert!(k.signin_challenge_ok(&c, 100 + CHALLENGE_SECONDS - 1));
        assert!(!k.signin_challenge_ok(&c, 100 + CHALLENGE_SECONDS));
        assert!(!other.signin_challenge_ok(&c, 100));
    }
}
