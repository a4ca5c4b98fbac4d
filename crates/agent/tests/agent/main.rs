//! weft-agent integration tests: real netlink in private namespaces, real Docker, real
//! OVS (userspace datapath), and 802.1Q inside a QEMU VM (scripts/vm-test.sh).

mod binary;
mod client;
mod concurrency;
mod docker;
mod helpers;
mod http;
mod linux_bridge;
mod macvlan;
mod names;
mod openapi;
mod ovs;
mod tls;
mod vlan;
