//! The datagram socket: SWIM's sealed datagrams leave and arrive here, one
//! UDP datagram each (the protocol `Node` seals and opens them).

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Binds the datagram socket, non-blocking for tokio.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Sends one datagram without waiting (a full socket buffer is loss, which
/// SWIM tolerates). With `confirm`, tells the kernel the peer answered
/// recently (Linux `MSG_CONFIRM`): its neighbour entry stays reachable
/// without an ARP probe every half minute.
pub fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr, confirm: bool) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if confirm {
        use nix::sys::socket::{SockaddrStorage, sendto};
        use std::os::fd::AsRawFd;
        let addr = SockaddrStorage::from(to);
        return socket.try_io(tokio::io::Interest::WRITABLE, || {
            sendto(socket.as_raw_fd(), bytes, &addr, confirm_flag()).map_err(io::Error::from)
        });
    }
    let _ = confirm;
    socket.try_send_to(bytes, to)
}

/// Linux's `MSG_CONFIRM`, which nix does not name.
#[cfg(target_os = "linux")]
fn confirm_flag() -> nix::sys::socket::MsgFlags {
    nix::sys::socket::MsgFlags::from_bits_retain(nix::libc::MSG_CONFIRM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_confirmed_datagram_arrives_like_any_other() {
        let a = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        a.writable().await.unwrap();
        assert_eq!(send(&a, b"one", to, true).unwrap(), 3);
        assert_eq!(send(&a, b"two", to, false).unwrap(), 3);
        let mut buf = [0u8; 16];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"one"[..], a.local_addr().unwrap()));
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
    }
}
