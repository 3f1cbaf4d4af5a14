//! Which addresses the gateway may call on behalf of someone else (a
//! webhook endpoint): the IANA IPv4 and IPv6 Special-Purpose Address
//! Registries, row by row, each with the RFC that reserves it, and the
//! address blocks outside them that are not public unicast (multicast,
//! the deprecated site-local and IPv4-compatible forms, IPv6 outside
//! `2000::/3`).
//!
//! An address in any row is refused, with two exceptions that carry an
//! IPv4 address a host actually reaches: an IPv4-mapped address
//! (`::ffff:0:0/96`) and one of the NAT64 well-known prefix
//! (`64:ff9b::/96`) are judged by the IPv4 address they embed. Addresses
//! that embed IPv4 in other ways (6to4, Teredo, IPv4-compatible, the
//! local-use NAT64 prefix) are refused outright, and the refusal names the
//! IPv4 address inside.
//!
//! Invariant: a prefix is matched by its bits, never by a parse of the
//! address's text, so every spelling of an address is judged alike.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How a row's addresses hold an IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Embeds {
    /// They do not.
    Nothing,
    /// In the last 32 bits, and the address reaches that IPv4 host: judged
    /// by it (IPv4-mapped, NAT64 well-known prefix).
    Reaches,
    /// In the last 32 bits, refused whatever it is (IPv4-compatible,
    /// local-use NAT64).
    Last32,
    /// In bits 16 to 48 (6to4).
    SixToFour,
    /// The client's, inverted, in the last 32 bits (Teredo).
    Teredo,
}

/// A block of addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// An IPv4 prefix.
    V4(Ipv4Addr, u8),
    /// An IPv6 prefix.
    V6(Ipv6Addr, u8),
}

impl Prefix {
    /// Whether `ip` is in the block.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Prefix::V4(net, len), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (Prefix::V6(net, len), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }

    fn len(&self) -> u8 {
        match self {
            Prefix::V4(_, l) | Prefix::V6(_, l) => *l,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(a, l) => write!(f, "{a}/{l}"),
            Prefix::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}

/// One row: a block, its name in the registry, where it is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) prefix: Prefix,
    pub(crate) name: &'static str,
    pub(crate) rfc: &'static str,
    pub(crate) embeds: Embeds,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: &'static str, rfc: &'static str) -> Row {
    Row {
        prefix: Prefix::V4(Ipv4Addr::new(a, b, c, d), len),
        name,
        rfc,
        embeds: Embeds::Nothing,
    }
}

const fn v6(s: [u16; 8], len: u8, name: &'static str, rfc: &'static str, embeds: Embeds) -> Row {
    Row {
        prefix: Prefix::V6(
            Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
            len,
        ),
        name,
        rfc,
        embeds,
    }
}

/// The IANA IPv4 Special-Purpose Address Registry, and multicast.
pub(crate) const V4: &[Row] = &[
    v4(0, 0, 0, 0, 8, "\"this network\"", "RFC 791 §3.2"),
    v4(
        0,
        0,
        0,
        0,
        32,
        "\"this host on this network\"",
        "RFC 1122 §3.2.1.3",
    ),
    v4(10, 0, 0, 0, 8, "private-use", "RFC 1918"),
    v4(100, 64, 0, 0, 10, "shared address space", "RFC 6598"),
    v4(127, 0, 0, 0, 8, "loopback", "RFC 1122 §3.2.1.3"),
    v4(169, 254, 0, 0, 16, "link-local", "RFC 3927"),
    v4(172, 16, 0, 0, 12, "private-use", "RFC 1918"),
    v4(
        192,
        0,
        0,
        0,
        24,
        "IETF protocol assignments",
        "RFC 6890 §2.1",
    ),
    v4(
        192,
        0,
        0,
        0,
        29,
        "IPv4 service continuity prefix",
        "RFC 7335",
    ),
    v4(192, 0, 0, 8, 32, "IPv4 dummy address", "RFC 7600"),
    v4(
        192,
        0,
        0,
        9,
        32,
        "Port Control Protocol anycast",
        "RFC 7723",
    ),
    v4(192, 0, 0, 10, 32, "TURN anycast", "RFC 8155"),
    v4(
        192,
        0,
        0,
        170,
        32,
        "NAT64/DNS64 discovery",
        "RFC 8880, RFC 7050 §2.2",
    ),
    v4(
        192,
        0,
        0,
        171,
        32,
        "NAT64/DNS64 discovery",
        "RFC 8880, RFC 7050 §2.2",
    ),
    v4(192, 0, 2, 0, 24, "documentation (TEST-NET-1)", "RFC 5737"),
    v4(192, 31, 196, 0, 24, "AS112-v4", "RFC 7535"),
    v4(192, 52, 193, 0, 24, "AMT", "RFC 7450"),
    v4(
        192,
        88,
        99,
        0,
        24,
        "deprecated (6to4 relay anycast)",
        "RFC 7526",
    ),
    v4(192, 88, 99, 2, 32, "6a44-relay anycast", "RFC 6751"),
    v4(192, 168, 0, 0, 16, "private-use", "RFC 1918"),
    v4(
        192,
        175,
        48,
        0,
        24,
        "direct delegation AS112 service",
        "RFC 7534",
    ),
    v4(198, 18, 0, 0, 15, "benchmarking", "RFC 2544"),
    v4(
        198,
        51,
        100,
        0,
        24,
        "documentation (TEST-NET-2)",
        "RFC 5737",
    ),
    v4(203, 0, 113, 0, 24, "documentation (TEST-NET-3)", "RFC 5737"),
    v4(224, 0, 0, 0, 4, "multicast", "RFC 5771"),
    v4(240, 0, 0, 0, 4, "reserved", "RFC 1112 §4"),
    v4(
        255,
        255,
        255,
        255,
        32,
        "limited broadcast",
        "RFC 8190, RFC 919 §7",
    ),
];

use Embeds::{Last32, Nothing, Reaches, SixToFour, Teredo};

/// The IANA IPv6 Special-Purpose Address Registry, and the blocks of the
/// IPv6 address space that are not public unicast.
pub(crate) const V6: &[Row] = &[
    v6([0; 8], 128, "unspecified", "RFC 4291", Nothing),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 1],
        128,
        "loopback",
        "RFC 4291",
        Nothing,
    ),
    v6(
        [0; 8],
        96,
        "IPv4-compatible (deprecated)",
        "RFC 4291 §2.5.5.1",
        Last32,
    ),
    v6(
        [0, 0, 0, 0, 0, 0xffff, 0, 0],
        96,
        "IPv4-mapped",
        "RFC 4291",
        Reaches,
    ),
    v6(
        [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
        96,
        "IPv4-IPv6 translation (NAT64)",
        "RFC 6052",
        Reaches,
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "IPv4-IPv6 translation, local use",
        "RFC 8215",
        Last32,
    ),
    v6(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        "discard-only",
        "RFC 6666",
        Nothing,
    ),
    v6(
        [0x100, 0, 0, 1, 0, 0, 0, 0],
        64,
        "dummy IPv6 prefix",
        "RFC 9780",
        Nothing,
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments",
        "RFC 2928",
        Nothing,
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        32,
        "Teredo",
        "RFC 4380, RFC 8190",
        Teredo,
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 1],
        128,
        "Port Control Protocol anycast",
        "RFC 7723",
        Nothing,
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 2],
        128,
        "TURN anycast",
        "RFC 8155",
        Nothing,
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 3],
        128,
        "DNS-SD service registration protocol anycast",
        "RFC 9665",
        Nothing,
    ),
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "benchmarking",
        "RFC 5180",
        Nothing,
    ),
    v6(
        [0x2001, 3, 0, 0, 0, 0, 0, 0],
        32,
        "AMT",
        "RFC 7450",
        Nothing,
    ),
    v6(
        [0x2001, 4, 0x112, 0, 0, 0, 0, 0],
        48,
        "AS112-v6",
        "RFC 7535",
        Nothing,
    ),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "deprecated (previously ORCHID)",
        "RFC 4843",
        Nothing,
    ),
    v6(
        [0x2001, 0x20, 0, 0, 0, 0, 0, 0],
        28,
        "ORCHIDv2",
        "RFC 7343",
        Nothing,
    ),
    v6(
        [0x2001, 0x30, 0, 0, 0, 0, 0, 0],
        28,
        "drone remote ID protocol entity tags",
        "RFC 9374",
        Nothing,
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation",
        "RFC 3849",
        Nothing,
    ),
    v6(
        [0x2002, 0, 0, 0, 0, 0, 0, 0],
        16,
        "6to4",
        "RFC 3056",
        SixToFour,
    ),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "direct delegation AS112 service",
        "RFC 7534",
        Nothing,
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation",
        "RFC 9637",
        Nothing,
    ),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "segment routing (SRv6) SIDs",
        "RFC 9602",
        Nothing,
    ),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "unique-local",
        "RFC 4193, RFC 8190",
        Nothing,
    ),
    v6(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "link-local unicast",
        "RFC 4291",
        Nothing,
    ),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "site-local (deprecated)",
        "RFC 3879",
        Nothing,
    ),
    v6(
        [0xff00, 0, 0, 0, 0, 0, 0, 0],
        8,
        "multicast",
        "RFC 4291",
        Nothing,
    ),
];

/// Every IPv6 address outside this block that no row names is refused:
/// IANA has allocated only `2000::/3` for global unicast.
pub(crate) const GLOBAL_UNICAST: Row = v6(
    [0x2000, 0, 0, 0, 0, 0, 0, 0],
    3,
    "outside global unicast (2000::/3)",
    "RFC 4291 §2.4, RFC 3513",
    Nothing,
);

/// Why an address is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    ip: IpAddr,
    row: Row,
    /// The IPv4 address inside, and (when that is what is refused) its row.
    inner: Option<(Ipv4Addr, Option<Row>)>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Row {
            prefix, name, rfc, ..
        } = self.row;
        if prefix == GLOBAL_UNICAST.prefix {
            write!(f, "{} is {name} ({rfc})", self.ip)?;
        } else {
            write!(f, "{} is in {prefix}, {name} ({rfc})", self.ip)?;
        }
        match self.inner {
            Some((v4, Some(inner))) => write!(
                f,
                ", and embeds {v4}, in {}, {} ({})",
                inner.prefix, inner.name, inner.rfc
            ),
            Some((v4, None)) => write!(f, ", and embeds {v4}"),
            None => Ok(()),
        }
    }
}

/// The most specific row of `table` holding `ip`.
fn row_of(table: &[Row], ip: IpAddr) -> Option<Row> {
    table
        .iter()
        .filter(|r| r.prefix.contains(ip))
        .max_by_key(|r| r.prefix.len())
        .copied()
}

/// The IPv4 address `ip` (in `row`) embeds, if any.
fn embedded(row: &Row, ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let at = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
    match row.embeds {
        Nothing => None,
        Reaches | Last32 => Some(at(0)),
        SixToFour => Some(at(80)),
        Teredo => Some(Ipv4Addr::from(!(bits as u32))),
    }
}

/// Why `ip` must not be called, or `None` if it is a public address.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    let v6 = match ip {
        IpAddr::V4(_) => {
            return row_of(V4, ip).map(|row| Refusal {
                ip,
                row,
                inner: None,
            });
        }
        IpAddr::V6(v6) => v6,
    };
    let Some(row) = row_of(V6, ip) else {
        return (!GLOBAL_UNICAST.prefix.contains(ip)).then_some(Refusal {
            ip,
            row: GLOBAL_UNICAST,
            inner: None,
        });
    };
    let inner = embedded(&row, v6);
    if row.embeds == Reaches {
        // Judged by the IPv4 host it reaches.
        let v4 = inner?;
        let inner_row = row_of(V4, IpAddr::V4(v4))?;
        return Some(Refusal {
            ip,
            row,
            inner: Some((v4, Some(inner_row))),
        });
    }
    Some(Refusal {
        ip,
        row,
        inner: inner.map(|v4| (v4, row_of(V4, IpAddr::V4(v4)))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address inside `p`: its first, with the low bits set to `low`.
    fn inside(p: &Prefix, low: u128) -> IpAddr {
        match *p {
            Prefix::V4(a, len) => {
                let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) | (low as u32 & host)))
            }
            Prefix::V6(a, len) => {
                let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | (low & host)))
            }
        }
    }

    #[test]
    fn every_row_of_both_registries_is_refused_at_its_first_and_last_address() {
        for row in V4.iter().chain(V6) {
            // A row judged by the IPv4 host it reaches embeds a loopback one.
            let (first, last) = match row.embeds {
                Reaches => (0x7f00_0001, 0x7fff_ffff),
                _ => (0, u128::MAX),
            };
            for ip in [inside(&row.prefix, first), inside(&row.prefix, last)] {
                let r = refusal(ip).unwrap_or_else(|| panic!("{ip} ({}) passed", row.name));
                assert!(r.to_string().contains("RFC"), "{r}");
            }
        }
        assert_eq!(V4.len() + V6.len(), 55);
    }

    #[test]
    fn embedded_ipv4_is_extracted_and_named() {
        for (ip, says) in [
            (
                "64:ff9b::7f00:1",
                "embeds 127.0.0.1, in 127.0.0.0/8, loopback",
            ),
            ("64:ff9b::a00:1", "embeds 10.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "embeds 169.254.169.254"),
            ("::ffff:127.0.0.1", "embeds 127.0.0.1"),
            ("::ffff:198.18.0.1", "benchmarking (RFC 2544)"),
            ("64:ff9b:1::7f00:1", "(RFC 8215), and embeds 127.0.0.1"),
            ("2002:7f00:1::1", "6to4 (RFC 3056), and embeds 127.0.0.1"),
            ("2002:808:808::1", "6to4 (RFC 3056), and embeds 8.8.8.8"),
            ("::127.0.0.1", "IPv4-compatible (deprecated)"),
            ("::10.1.2.3", "embeds 10.1.2.3, in 10.0.0.0/8"),
            // Teredo: the client's address, inverted, in the last 32 bits.
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                "Teredo (RFC 4380, RFC 8190), and embeds 127.0.0.1",
            ),
            ("fec0::1", "site-local (deprecated) (RFC 3879)"),
            ("100::1", "discard-only (RFC 6666)"),
            ("198.18.0.1", "198.18.0.0/15, benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("4000::1", "outside global unicast"),
        ] {
            let r = refusal(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(r.to_string().contains(says), "{ip}: {r}");
        }
    }

    #[test]
    fn ordinary_public_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "192.88.98.1",
            "11.0.0.1",
            "2606:4700::1111",
            "2a00:1450:4001:82a::200e",
            "2001:4860:4860::8888",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(refusal(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
