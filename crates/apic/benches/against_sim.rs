//! `cargo bench -p weft-apic`: client + apic-sim throughput for the operations Weft runs most
//! (batched binding POST, paginated reconciliation read, pre-flight). Prints mean times.

use apic_sim::{spawn, SimConfig, Topology};
use std::time::{Duration, Instant};
use weft_apic::*;

async fn time<F, Fut>(name: &str, rounds: u32, mut f: F)
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for i in 0..rounds {
        f(i).await;
    }
    let mean = start.elapsed() / rounds;
    println!("{name:<48} {mean:>12.3?} per op ({rounds} rounds)");
}

#[tokio::main]
async fn main() {
    let sim = spawn(SimConfig::new(
        Topology::example().expect("example topology"),
    ))
    .await
    .expect("sim");
    let mut cfg = ApicConfig::new(vec![sim.url.clone()], "admin", "password");
    cfg.rate_limit = None;
    cfg.retry.base_delay = Duration::from_millis(1);
    let client = ApicClient::new(cfg).expect("client");
    let epg = |i: u32| EpgKey::new("bench", "ap", &format!("epg{i}")).expect("epg name");
    let ports: Vec<PathDn> = [101, 102, 103, 104]
        .iter()
        .flat_map(|n| {
            (1..=8).map(move |p| PathDn::port(1, *n, &format!("eth1/{p}")).expect("port"))
        })
        .collect();
    time(
        "ensure_epg (3 GETs, 1-2 class queries for BD/VRF, 1 POST)",
        20,
        |i| {
            let m = ManagedEpg {
                epg: epg(i),
                bridge_domain: "bd".into(),
                physical_domain: "weft_phys".into(),
                vrf: "vrf".into(),
            };
            let c = &client;
            async move { c.ensure_epg(&m).await.expect("ensure") }
        },
    )
    .await;
    time("apply_bindings, 32 bindings in one POST", 20, |i| {
        let vlan = VlanId::new(100 + i as u16).expect("vlan");
        let bindings: Vec<Binding> = ports
            .iter()
            .map(|p| Binding {
                path: p.clone(),
                encap: vlan,
                mode: BindingMode::Regular,
                immediacy: Immediacy::Immediate,
            })
            .collect();
        let (c, e) = (&client, epg(i));
        async move { c.apply_bindings(&e, &bindings).await.expect("apply") }
    })
    .await;
    time(
        "list_owned_bindings, 640 bindings, pages of 1000",
        10,
        |_| {
            let c = &client;
            async move {
                assert_eq!(c.list_owned_bindings().await.expect("list").len(), 640);
            }
        },
    )
    .await;
    time("preflight, 2 paths", 20, |i| {
        let (c, e) = (&client, epg(i));
        let paths = [
            PathDn::port(1, 101, "eth1/1").expect("port"),
            PathDn::vpc(1, 101, 102, "host-3_vpc").expect("vpc"),
        ];
        async move {
            let req = PreflightRequest {
                epg: &e,
                physical_domain: "weft_phys",
                encap: VlanId::new(100 + i as u16).expect("vlan"),
                mode: BindingMode::Regular,
                managed: false,
                paths: &paths,
            };
            c.preflight(&req).await.expect("preflight");
        }
    })
    .await;
    time("discover (4 class queries)", 10, |_| {
        let c = &client;
        async move {
            c.discover().await.expect("discover");
        }
    })
    .await;
}
