//! PROXY v2 headers for arbitrary address pairs parse back to the same addresses; arbitrary
//! bytes never panic the parser.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use netstrap::planes::tcp::proxy_header;

fn addr(b: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([b[0], b[1]]);
    if b[2] & 1 == 0 {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[3], b[4], b[5], b[6])), port)
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[3..19]);
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = ppp::v2::Header::try_from(data);
    if data.len() >= 38 {
        let (src, dst) = (addr(&data[..19]), addr(&data[19..38]));
        let header = proxy_header(src, dst).expect("a header for any pair");
        let parsed = ppp::v2::Header::try_from(header.as_slice()).expect("parses back");
        let (ps, pd) = match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => (
                SocketAddr::new(a.source_address.into(), a.source_port),
                SocketAddr::new(a.destination_address.into(), a.destination_port),
            ),
            ppp::v2::Addresses::IPv6(a) => (
                SocketAddr::new(a.source_address.into(), a.source_port),
                SocketAddr::new(a.destination_address.into(), a.destination_port),
            ),
            other => panic!("unexpected {other:?}"),
        };
        let same = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
        };
        assert!(same(ps, src) && same(pd, dst), "{src} {dst} -> {ps} {pd}");
    }
});
