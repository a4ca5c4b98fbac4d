//! Follow-up gratuitous ARPs.
//!
//! The kernel sends the first one itself (`arp_notify`) when the container end comes up. On a
//! Linux bridge that frame can arrive before the host end's port forwards: the carrier event
//! that enables the port is handled asynchronously by the kernel, so the first announcement
//! is sometimes dropped and the leaf never learns the MAC. Two more, sent later from a packet
//! socket inside the container's namespace (as `arping -U -c 3` would), close that window.
//! They run on their own thread, off the response path: closing a packet socket waits for an
//! RCU grace period (~15 ms).

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::netns::Netns;
use crate::Result;

/// Delays of the follow-up announcements, counted from the previous one.
const FOLLOW_UPS: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(450)];

/// Announces `ip` at `mac` on `ifname` inside `ns` twice more, in the background.
pub fn announce_later(ns: &Netns, ifname: &str, mac: [u8; 6], ip: Ipv4Addr) -> Result<()> {
    let ifname = ifname.to_owned();
    ns.spawn(move || {
        for delay in FOLLOW_UPS {
            std::thread::sleep(delay);
            if let Err(e) = announce(&ifname, mac, ip) {
                tracing::warn!(%ifname, %ip, error = %e, "gratuitous ARP not sent");
                return;
            }
        }
    })
}

/// One gratuitous ARP request (sender = target = `ip`), broadcast on `ifname` of the
/// calling thread's namespace, shaped like the kernel's own.
fn announce(ifname: &str, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let name = CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2) call; the fd is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let frame = arp_request(mac, ip);
    // SAFETY: `frame` and `addr` outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    let result = if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

/// The ARP payload (the kernel adds the Ethernet header for a `SOCK_DGRAM` packet socket).
fn arp_request(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // target hardware address stays zero, as in the kernel's own announcement
    p[24..28].copy_from_slice(&ip.octets());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_is_a_gratuitous_request_for_its_own_address() {
        let p = arp_request([2, 0x57, 10, 0, 0, 5], Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0x57, 10, 0, 0, 5]);
        assert_eq!(&p[14..18], &[10, 0, 0, 5]);
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[10, 0, 0, 5]);
    }
}
