//! Adds and removes N = 50 and 200 VLAN access ports on a private OVS
//! (userspace datapath), three ways: concurrently through the batcher,
//! one at a time through this crate, and one `ovs-vsctl` call per port.
//! Each Weft call returns once ovs-vswitchd applied it, like `ovs-vsctl`,
//! except in the rows marked "no wait" (database committed only).
//!
//! Run as root: `cargo run -p weft-ovsdb --example bench_ports --release`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Ovs;
use weft_ovsdb::{AccessPort, DatapathType, Vswitch, VswitchOptions};

const BRIDGE: &str = "brb";

#[tokio::main]
async fn main() {
    let Some(ovs) = Ovs::start() else {
        std::process::exit(1)
    };
    ovs.quiet_ipv6();
    let vs = Vswitch::connect(&ovs.addr(), VswitchOptions::default())
        .await
        .expect("connecting to ovsdb-server");
    let no_wait_opts = VswitchOptions {
        wait_applied: false,
        ..VswitchOptions::default()
    };
    let vs_no_wait = Vswitch::connect(&ovs.addr(), no_wait_opts)
        .await
        .expect("connecting to ovsdb-server");
    vs.ensure_bridge(BRIDGE, DatapathType::Netdev)
        .await
        .expect("creating the bridge");
    println!("per-port latency (ms); each call waits for ovs-vswitchd to apply");
    println!(
        "{:<34} {:>5} {:>8} {:>8} {:>12} {:>6}",
        "method", "N", "median", "p90", "wall/N", "txns"
    );
    for n in [50usize, 200] {
        let ports = make_ports(&ovs, n);
        let before = vs.transact_count();
        let (add, wall) = weft_concurrent_add(&vs, &ports).await;
        report(
            "weft batched, concurrent add",
            n,
            &add,
            wall,
            vs.transact_count() - before,
        );
        let before = vs.transact_count();
        let (del, wall) = weft_concurrent_remove(&vs, &ports).await;
        report(
            "weft batched, concurrent remove",
            n,
            &del,
            wall,
            vs.transact_count() - before,
        );

        weft_concurrent_add(&vs, &ports).await;
        let before = vs_no_wait.transact_count();
        let (del, wall) = weft_concurrent_remove(&vs_no_wait, &ports).await;
        let txns = vs_no_wait.transact_count() - before;
        report("weft batched, remove, no wait", n, &del, wall, txns);
        settle(&ovs);
        let before = vs_no_wait.transact_count();
        let (add, wall) = weft_sequential(&vs_no_wait, &ports, true).await;
        let txns = vs_no_wait.transact_count() - before;
        report("weft one at a time, add, no wait", n, &add, wall, txns);
        settle(&ovs);
        weft_concurrent_remove(&vs, &ports).await;

        let before = vs.transact_count();
        let (add, wall) = weft_sequential(&vs, &ports, true).await;
        report(
            "weft one at a time, add",
            n,
            &add,
            wall,
            vs.transact_count() - before,
        );
        let before = vs.transact_count();
        let (del, wall) = weft_sequential(&vs, &ports, false).await;
        report(
            "weft one at a time, remove",
            n,
            &del,
            wall,
            vs.transact_count() - before,
        );

        let (add, wall) = vsctl_each(&ovs, &ports, true);
        report("ovs-vsctl add-port per port", n, &add, wall, n as u64);
        let (del, wall) = vsctl_each(&ovs, &ports, false);
        report("ovs-vsctl del-port per port", n, &del, wall, n as u64);
    }
}

/// Lets ovs-vswitchd catch up after no-wait calls, so the next measurement
/// does not pay for them: `ovs-vsctl` waits for it after any change.
fn settle(ovs: &Ovs) {
    let nanos = std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos());
    let stamp = format!("external_ids:weft-bench={nanos}");
    ovs.vsctl(&["set", "open_vswitch", ".", &stamp]);
}

/// N veth pairs in the OVS namespace (setup, not measured).
fn make_ports(ovs: &Ovs, n: usize) -> Vec<AccessPort> {
    let ports: Vec<AccessPort> = (0..n)
        .map(|i| AccessPort {
            name: format!("b{n}p{i}"),
            iface: format!("b{n}p{i}"),
            tag: 181,
            external_ids: BTreeMap::from([(
                "weft-attachment".to_owned(),
                format!("bench-{n}-{i}"),
            )]),
        })
        .collect();
    let mut script = String::new();
    for (i, p) in ports.iter().enumerate() {
        let peer = format!("b{n}q{i}");
        script.push_str(&format!(
            "link add {} type veth peer name {peer}\n",
            p.iface
        ));
        script.push_str(&format!("link set {} up\nlink set {peer} up\n", p.iface));
    }
    let mut ip = Command::new("ip")
        .args(["-n", &ovs.netns.0, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("starting ip -batch");
    ip.stdin
        .take()
        .expect("ip stdin")
        .write_all(script.as_bytes())
        .expect("writing ip batch");
    assert!(
        ip.wait().expect("ip -batch").success(),
        "creating veths failed"
    );
    ports
}

async fn weft_concurrent_add(vs: &Vswitch, ports: &[AccessPort]) -> (Vec<Duration>, Duration) {
    timed_concurrently(ports.iter().map(|p| {
        let vs = vs.clone();
        let p = p.clone();
        async move { vs.ensure_access_ports(BRIDGE, &[p]).await }
    }))
    .await
}

async fn weft_concurrent_remove(vs: &Vswitch, ports: &[AccessPort]) -> (Vec<Duration>, Duration) {
    timed_concurrently(ports.iter().map(|p| {
        let vs = vs.clone();
        let name = p.name.clone();
        async move { vs.remove_ports(BRIDGE, &[name]).await }
    }))
    .await
}

/// Runs all futures as separate tasks at once; per-task latency and total wall time.
async fn timed_concurrently<F, T>(work: impl Iterator<Item = F>) -> (Vec<Duration>, Duration)
where
    F: std::future::Future<Output = weft_ovsdb::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = work
        .map(|f| {
            tokio::spawn(async move {
                let t = Instant::now();
                f.await.expect("port change");
                t.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.expect("bench task"));
    }
    (latencies, start.elapsed())
}

async fn weft_sequential(
    vs: &Vswitch,
    ports: &[AccessPort],
    add: bool,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(ports.len());
    for p in ports {
        let t = Instant::now();
        if add {
            vs.ensure_access_ports(BRIDGE, std::slice::from_ref(p))
                .await
        } else {
            vs.remove_ports(BRIDGE, &[p.name.as_str()]).await
        }
        .expect("port change");
        latencies.push(t.elapsed());
    }
    (latencies, start.elapsed())
}

fn vsctl_each(ovs: &Ovs, ports: &[AccessPort], add: bool) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(ports.len());
    for p in ports {
        let t = Instant::now();
        if add {
            ovs.vsctl(&["add-port", BRIDGE, &p.name, "tag=181"]);
        } else {
            ovs.vsctl(&["del-port", BRIDGE, &p.name]);
        }
        latencies.push(t.elapsed());
    }
    (latencies, start.elapsed())
}

fn report(method: &str, n: usize, latencies: &[Duration], wall: Duration, txns: u64) {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{method:<34} {n:>5} {:>8.2} {:>8.2} {:>12.2} {txns:>6}",
        pick(0.5),
        pick(0.9),
        wall.as_secs_f64() * 1e3 / n as f64
    );
}
