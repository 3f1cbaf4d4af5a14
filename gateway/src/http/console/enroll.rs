//! Reading a passkey registration: the attestation object a browser
//! returns from `navigator.credentials.create` (WebAuthn §6.5), down to
//! the credential id and its public key.
//!
//! Only what enrollment needs: a small CBOR reader (definite lengths,
//! integers, byte and text strings, arrays, maps, simple values; at most
//! 16 levels deep), the attested credential data, and COSE keys of the
//! two algorithms the protocol signs with (ES256: EC2 P-256; EdDSA: OKP
//! Ed25519). The attestation statement is not judged: the console asks
//! for none, and trust in the key comes from the single-use invite.

use tollgate_protocol::webauthn::{FLAG_AT, check_authenticator_data};
use tollgate_protocol::{Jwk, PublicKey};

/// A CBOR data item, as far as enrollment reads them.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Int(i128),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Item>),
    Map(Vec<(Item, Item)>),
    Simple(u8),
}

const MAX_DEPTH: usize = 16;

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or("CBOR: input ends inside an item")?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn argument(&mut self, info: u8) -> Result<u64, String> {
        Ok(match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]])),
            26 => {
                let b = self.take(4)?;
                u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_be_bytes(a)
            }
            _ => return Err("CBOR: indefinite lengths and reserved values are not read".into()),
        })
    }

    fn item(&mut self, depth: usize) -> Result<Item, String> {
        if depth > MAX_DEPTH {
            return Err("CBOR: nested too deeply".into());
        }
        let first = self.take(1)?[0];
        let (major, info) = (first >> 5, first & 0x1f);
        let n = self.argument(info)?;
        let len = |n: u64| usize::try_from(n).map_err(|_| "CBOR: length too large".to_owned());
        Ok(match major {
            0 => Item::Int(i128::from(n)),
            1 => Item::Int(-1 - i128::from(n)),
            2 => Item::Bytes(self.take(len(n)?)?.to_vec()),
            3 => Item::Text(
                String::from_utf8(self.take(len(n)?)?.to_vec())
                    .map_err(|_| "CBOR: a text string is not UTF-8")?,
            ),
            4 => {
                let n = len(n)?;
                // Each item takes at least one byte: a length beyond what
                // is left is a lie, refused before allocating for it.
                if n > self.data.len() - self.at {
                    return Err("CBOR: array longer than the input".into());
                }
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.item(depth + 1)?);
                }
                Item::Array(a)
            }
            5 => {
                let n = len(n)?;
                if n > (self.data.len() - self.at) / 2 {
                    return Err("CBOR: map longer than the input".into());
                }
                let mut m = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.item(depth + 1)?;
                    if m.iter().any(|(seen, _)| *seen == k) {
                        return Err("CBOR: a map repeats a key".into());
                    }
                    let v = self.item(depth + 1)?;
                    m.push((k, v));
                }
                Item::Map(m)
            }
            7 if info < 24 => Item::Simple(info),
            _ => return Err(format!("CBOR: major type {major} is not read here")),
        })
    }
}

/// Decodes one CBOR item that is all of `data`.
fn decode(data: &[u8]) -> Result<Item, String> {
    let mut r = Reader { data, at: 0 };
    let item = r.item(0)?;
    if r.at != data.len() {
        return Err("CBOR: bytes after the item".into());
    }
    Ok(item)
}

fn get<'a>(map: &'a [(Item, Item)], key: &Item) -> Option<&'a Item> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A registered credential: its id and public key.
#[derive(Clone, Debug)]
pub struct Credential {
    /// The credential id.
    pub id: Vec<u8>,
    /// Its public key.
    pub key: Jwk,
}

/// Reads an attestation object: its authenticator data must name
/// `rp_id`, say the user was present and verified, and carry attested
/// credential data, whose credential id and COSE key are returned.
pub fn credential(attestation_object: &[u8], rp_id: &str) -> Result<Credential, String> {
    let Item::Map(top) = decode(attestation_object)? else {
        return Err("the attestation object is not a CBOR map".into());
    };
    let Some(Item::Bytes(auth)) = get(&top, &Item::Text("authData".into())) else {
        return Err("the attestation object has no authData".into());
    };
    let flags = check_authenticator_data(auth, rp_id)?;
    if flags & FLAG_AT == 0 {
        return Err("the authenticator data carries no attested credential".into());
    }
    // rpIdHash 32, flags 1, signCount 4, aaguid 16, credentialIdLength 2.
    let rest = auth
        .get(53..)
        .ok_or("the attested credential data is cut short")?;
    let len = match rest {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => return Err("the attested credential data is cut short".into()),
    };
    let id = rest
        .get(2..2 + len)
        .ok_or("the credential id is cut short")?
        .to_vec();
    if id.is_empty() {
        return Err("the credential id is empty".into());
    }
    // The COSE key; extensions may follow it (flag ED), so read one item.
    let mut r = Reader {
        data: &rest[2 + len..],
        at: 0,
    };
    let Item::Map(cose) = r.item(0)? else {
        return Err("the credential public key is not a COSE key map".into());
    };
    // Only extensions (flag ED) may follow the key.
    if flags & 0x80 == 0 && r.at != r.data.len() {
        return Err("bytes after the credential public key, and no extensions flagged".into());
    }
    let int = |k: i128| get(&cose, &Item::Int(k));
    let bytes32 = |k: i128| match int(k) {
        Some(Item::Bytes(b)) if b.len() == 32 => Ok(b.clone()),
        _ => Err(format!("COSE key parameter {k} is not 32 bytes")),
    };
    let key = match (int(1), int(3), int(-1)) {
        // kty EC2, alg ES256, crv P-256.
        (Some(Item::Int(2)), Some(Item::Int(-7)), Some(Item::Int(1))) => {
            let mut sec1 = vec![4u8];
            sec1.extend(bytes32(-2)?);
            sec1.extend(bytes32(-3)?);
            PublicKey::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "the COSE key is not a P-256 point")?,
            )
        }
        // kty OKP, alg EdDSA, crv Ed25519.
        (Some(Item::Int(1)), Some(Item::Int(-8)), Some(Item::Int(6))) => {
            let mut x = [0u8; 32];
            x.copy_from_slice(&bytes32(-2)?);
            let k = ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map_err(|_| "the COSE key is not an Ed25519 point")?;
            if k.is_weak() {
                return Err("the COSE key is a weak (small-order) Ed25519 key".into());
            }
            PublicKey::Ed25519(k)
        }
        _ => {
            return Err(
                "the passkey's algorithm is neither ES256 (P-256) nor EdDSA (Ed25519)".into(),
            );
        }
    };
    Ok(Credential {
        id,
        key: Jwk::new(key),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bytes(b: &[u8]) -> Vec<u8> {
        let mut out = if b.len() < 24 {
            vec![0x40 | b.len() as u8]
        } else {
            vec![0x58, b.len() as u8]
        };
        out.extend(b);
        out
    }

    /// An attestation object of format none for a P-256 key.
    fn attestation(flags: u8, rp: &str) -> (Vec<u8>, PublicKey) {
        let key = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        let xy = point.as_bytes();
        let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cose.extend(bytes(&xy[1..33]));
        cose.push(0x22);
        cose.extend(bytes(&xy[33..65]));
        let mut auth = tollgate_protocol::HashAlg::Sha256
            .digest(&[rp.as_bytes()])
            .bytes
            .to_vec();
        auth.push(flags);
        auth.extend([0; 4]);
        auth.extend([0; 16]);
        auth.extend([0, 4, 1, 2, 3, 4]);
        auth.extend(cose);
        let mut obj = vec![0xa3];
        obj.extend([0x63, b'f', b'm', b't', 0x64, b'n', b'o', b'n', b'e']);
        obj.extend([0x67]);
        obj.extend(b"attStmt");
        obj.push(0xa0);
        obj.extend([0x68]);
        obj.extend(b"authData");
        obj.extend([0x59, (auth.len() >> 8) as u8, auth.len() as u8]);
        obj.extend(auth);
        (obj, PublicKey::P256(*key.verifying_key()))
    }

    #[test]
    fn a_registration_gives_its_credential_id_and_key() {
        let (obj, key) = attestation(0x45, "localhost");
        let c = credential(&obj, "localhost").unwrap();
        assert_eq!(c.id, [1, 2, 3, 4]);
        assert_eq!(c.key.key, key);
        assert!(
            credential(&obj, "example.com")
                .unwrap_err()
                .contains("RP ID")
        );
        let (obj, _) = attestation(0x05, "localhost");
        assert!(
            credential(&obj, "localhost")
                .unwrap_err()
                .contains("attested")
        );
        let (obj, _) = attestation(0x41, "localhost");
        assert!(
            credential(&obj, "localhost")
                .unwrap_err()
                .contains("verified")
        );
    }

    #[test]
    fn cbor_lies_are_refused_without_allocating() {
        // An array claiming 2^32 items; a map repeating a key; trailing
        // bytes; nesting beyond the limit; a cut string.
        for bad in [
            &[0x9a, 0xff, 0xff, 0xff, 0xff][..],
            &[0xa2, 0x01, 0x01, 0x01, 0x02],
            &[0x01, 0x01],
            &[0x81; 40],
            &[0x45, 1, 2],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
