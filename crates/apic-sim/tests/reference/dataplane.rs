//! The data plane (root only): hosts are namespaces with their own OVS, cabled to leaf ports;
//! pings prove a frame crosses the fabric exactly where the deployed bindings allow it.

use super::{sim_with, Api};
use apic_sim::testbed::{self, TestHost};
use apic_sim::{DataPlaneConfig, SimConfig, Topology};
use reqwest::{Method, StatusCode};
use serde_json::json;

const T: &str = "uni/tn-dp/ap-ap";

fn path(node: u32, port: &str) -> String {
    format!("topology/pod-1/paths-{node}/pathep-[{port}]")
}

const VPC: &str = "topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]";

/// Removes the fabric namespace even when the test fails (the server's state may outlive
/// the test process's last await).
struct Fabric(Api);

impl Drop for Fabric {
    fn drop(&mut self) {
        if let Some(dp) = self.0.sim.data_plane() {
            dp.remove();
        }
    }
}

/// Runs all checks `(from, to, expected)` in parallel; a reachable pair may take a few
/// seconds to learn ARP, an unreachable one must stay silent for two pings.
fn check(hosts: &[&TestHost], expect: &[(usize, usize, bool)]) {
    let wrong: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = expect
            .iter()
            .map(|&(a, b, want)| {
                let (from, to) = (hosts[a], hosts[b]);
                s.spawn(move || {
                    let got = from.reaches(&to.ip, if want { 10 } else { 2 });
                    (got != want)
                        .then(|| format!("{} -> {}: expected reachable={want}", from.netns, to.ip))
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().expect("ping thread"))
            .collect()
    });
    assert!(wrong.is_empty(), "ping matrix wrong:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_cross_the_fabric_only_where_bindings_allow() {
    if let Some(why) = testbed::unavailable() {
        eprintln!("SKIPPED frames_cross_the_fabric_only_where_bindings_allow: {why}");
        return;
    }
    let id = std::process::id();
    let mut config = SimConfig::new(Topology::example().unwrap());
    config.data_plane = Some(DataPlaneConfig {
        netns: format!("weft-fabric-{id}"),
    });
    let fabric = Fabric(sim_with(config).await);
    let api = &fabric.0;
    let epg = |name: &str| {
        json!({"fvAEPg":{"attributes":{"name":name},"children":[
        {"fvRsBd":{"attributes":{"tnFvBDName":"bd"}}},
        {"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}}]}})
    };
    api.post_ok(
        "uni",
        json!({"fvTenant":{"attributes":{"name":"dp"},"children":[
        {"fvBD":{"attributes":{"name":"bd"}}},
        {"fvAp":{"attributes":{"name":"ap"},"children":[epg("web"), epg("db"), epg("other")]}}]}}),
    )
    .await;
    let web = format!("{T}/epg-web");
    for (epg, p, vlan) in [
        (web.clone(), path(101, "eth1/1"), "vlan-100"),
        (web.clone(), path(102, "eth1/1"), "vlan-100"),
        (web.clone(), VPC.to_string(), "vlan-100"),
        (format!("{T}/epg-db"), path(102, "eth1/2"), "vlan-101"),
        // The same VLAN as web, but another EPG on another leaf: allowed, and isolated.
        (format!("{T}/epg-other"), path(103, "eth1/1"), "vlan-100"),
    ] {
        api.bind(&epg, &p, vlan).await;
    }
    // Not deployed: vlan-100 on leaf 101 already belongs to web (F0467 encap-already-in-use).
    api.bind(&format!("{T}/epg-other"), &path(101, "eth1/2"), "vlan-100")
        .await;
    // Untagged: not modelled, so it forwards nothing (not even the tagged frames of its VLAN).
    api.post_ok(
        &web,
        json!({"fvRsPathAtt":{"attributes":{"tDn":path(104, "eth1/4"),"encap":"vlan-100","mode":"untagged"}}}),
    )
    .await;
    // A whole-leaf binding: db's vlan-101 on every port of leaf 104.
    api.post_ok(
        &format!("{T}/epg-db"),
        json!({"fvRsNodeAtt":{"attributes":{"tDn":"topology/pod-1/node-104","encap":"vlan-101"}}}),
    )
    .await;
    let dp = api.sim.data_plane().expect("data plane");
    let ns = |n: &str| format!("wdp{id}-{n}");
    let a = TestHost::start(&ns("a"), dp, 101, "eth1/1", 100, "10.9.0.1").unwrap();
    let b = TestHost::start(&ns("b"), dp, 102, "eth1/1", 100, "10.9.0.2").unwrap();
    let c = TestHost::start(&ns("c"), dp, 102, "eth1/2", 101, "10.9.0.3").unwrap();
    let d = TestHost::start(&ns("d"), dp, 103, "eth1/1", 100, "10.9.0.4").unwrap();
    // Cabled to the vPC's member on the second leaf.
    let e = TestHost::start(&ns("e"), dp, 102, "eth1/5", 100, "10.9.0.5").unwrap();
    let f = TestHost::start(&ns("f"), dp, 101, "eth1/2", 100, "10.9.0.6").unwrap();
    let g = TestHost::start(&ns("g"), dp, 104, "eth1/3", 101, "10.9.0.7").unwrap();
    let h = TestHost::start(&ns("h"), dp, 104, "eth1/4", 100, "10.9.0.8").unwrap();
    let hosts = [&a, &b, &c, &d, &e, &f, &g, &h];
    let (a_, b_, c_, d_, e_, f_, g_, h_) = (0, 1, 2, 3, 4, 5, 6, 7);

    check(
        &hosts,
        &[
            (a_, b_, true),
            (b_, a_, true),
            (e_, a_, true),
            (a_, c_, false),
            (a_, d_, false),
            (b_, d_, false),
            (e_, d_, false),
            (f_, d_, false),
            (f_, a_, false),
            (g_, c_, true),
            (g_, a_, false),
            (h_, a_, false),
        ],
    );

    // b's binding deleted out of band: b is cut off, the rest of web keeps forwarding.
    let binding = format!("{web}/rspathAtt-[{}]", path(102, "eth1/1"));
    let r = api
        .http
        .delete(format!("{}/_sim/mo/{binding}", api.sim.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"deleted": true})
    );
    check(&hosts, &[(a_, b_, false), (e_, b_, false), (a_, e_, true)]);

    // Re-created: reachable again.
    api.bind(&web, &path(102, "eth1/1"), "vlan-100").await;
    check(&hosts, &[(a_, b_, true), (b_, e_, true), (b_, d_, false)]);

    // Updates touch only what changed: a continuous ping between a and e loses nothing while
    // c's binding (another EPG, another leaf) is deleted and re-created again and again.
    let db = format!("{T}/epg-db");
    let c_binding = format!("{db}/rspathAtt-[{}]", path(102, "eth1/2"));
    let c_body =
        json!({"fvRsPathAtt":{"attributes":{"tDn":path(102, "eth1/2"),"encap":"vlan-101"}}});
    let (received, toggles) = std::thread::scope(|s| {
        let stream = s.spawn(|| a.ping_stream(&e.ip, 200, 10));
        let mut toggles = 0;
        while !stream.is_finished() {
            assert!(api.sim.remove(&c_binding));
            api.sim.inject(&db, &c_body).expect("binding re-created");
            toggles += 1;
        }
        (stream.join().expect("ping thread"), toggles)
    });
    assert_eq!(
        received, 200,
        "lost pings during {toggles} unrelated updates"
    );
    assert!(toggles > 10, "only {toggles} updates during the ping");

    // Deleted through the APIC API: the vPC member is cut off.
    let vpc_binding = format!("{web}/rspathAtt-[{VPC}]");
    let (status, body) = api
        .call(Method::DELETE, &format!("/api/mo/{vpc_binding}.json"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check(&hosts, &[(a_, e_, false), (a_, b_, true)]);

    // Back to the seeded topology: no tenant, nothing forwards.
    api.sim.reset();
    check(&hosts, &[(a_, b_, false), (g_, c_, false)]);
}
