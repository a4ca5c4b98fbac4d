//! Gratuitous ARP from a raw packet socket inside the container namespace, so the leaf
//! learns the endpoint at once (the seed pinged; forking `arping` costs ~20 ms).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use weft_agent_api::MacAddr;

const ETH_P_ARP: u16 = 0x0806;

/// A send-only raw `AF_PACKET` socket (protocol 0 receives nothing) in the calling
/// thread's namespace.
pub fn packet_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned fd is owned by the OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The 42-byte broadcast ARP request announcing `ip` at `mac` (sender = target = ip).
pub fn frame(mac: MacAddr, ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends the gratuitous ARP out of interface `ifindex` of the socket's namespace.
pub fn send(socket: &OwnedFd, ifindex: u32, mac: MacAddr, ip: Ipv4Addr) -> std::io::Result<()> {
    let frame = frame(mac, ip);
    // SAFETY: sockaddr_ll is plain old data; zeroed is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: frame and addr outlive the call; lengths match the buffers passed.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_announces_sender_as_target() {
        let mac = MacAddr([2, 0x57, 10, 0, 0, 5]);
        let f = frame(mac, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[22..28], &mac.0);
        assert_eq!(&f[28..32], &[10, 0, 0, 5]);
        assert_eq!(&f[38..42], &[10, 0, 0, 5]);
    }
}
