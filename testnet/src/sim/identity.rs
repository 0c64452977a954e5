//! Who the simulated nodes are and where they live: each node's ed25519 key
//! (the same across its restarts, so that its records keep verifying), its
//! datagram socket in the benchmarking range, and the clients' addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use baton_protocol::map::LocalKey;

use super::network::mix;

/// Nodes live in 198.18.0.0/16 (RFC 2544's benchmarking range), clients in
/// 198.19.0.0/16: node `i` is `198.18.0.0 + i + 1`.
const NODE_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);

/// The port of every node's datagram socket.
pub const DATAGRAM_PORT: u16 = 7702;

/// The most nodes a simulation can address.
pub const MAX_NODES: usize = 65_000;

/// Node `i`'s signing key, derived from the run's seed.
pub fn key(seed: u64, i: usize) -> LocalKey {
    let mut bytes = [0u8; 32];
    for (k, chunk) in bytes.chunks_mut(8).enumerate() {
        let word = mix(seed ^ mix(0x6b65_7973 ^ ((i as u64) << 8 | k as u64)));
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    LocalKey::from_seed(bytes)
}

/// Node `i`'s IP address.
pub fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(NODE_BASE + i as u32 + 1))
}

/// Node `i`'s datagram socket.
pub fn datagram_addr(i: usize) -> SocketAddr {
    SocketAddr::new(ip(i), DATAGRAM_PORT)
}

/// The node whose datagram socket is `addr`, if it is one.
pub fn node_of(addr: &SocketAddr, nodes: usize) -> Option<usize> {
    let IpAddr::V4(v4) = addr.ip() else {
        return None;
    };
    let i = u32::from(v4).checked_sub(NODE_BASE + 1)? as usize;
    (i < nodes && addr.port() == DATAGRAM_PORT).then_some(i)
}

/// The multiaddr a node is dialled at (opaque to the protocol; the
/// simulator resolves peers by id).
pub fn multiaddr(i: usize) -> String {
    format!("/ip4/{}/udp/7700/quic-v1", ip(i))
}

/// The address of client `host` in location (`/24`) `location`.
pub fn client_addr(location: u8, host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 19, location, host.max(1))),
        port,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_protocol::session::Signer;

    #[test]
    fn addresses_map_back_to_their_node() {
        for i in [0, 1, 255, 256, 999, MAX_NODES - 1] {
            assert_eq!(node_of(&datagram_addr(i), MAX_NODES), Some(i));
        }
        assert_eq!(node_of(&datagram_addr(10), 10), None);
        assert_eq!(node_of(&"198.18.0.0:7702".parse().unwrap(), 10), None);
        assert_eq!(node_of(&"198.18.0.1:7703".parse().unwrap(), 10), None);
    }

    #[test]
    fn keys_are_stable_per_seed_and_distinct_per_node() {
        assert_eq!(key(1, 3).id(), key(1, 3).id());
        assert_ne!(key(1, 3).id(), key(1, 4).id());
        assert_ne!(key(1, 3).id(), key(2, 3).id());
    }
}
