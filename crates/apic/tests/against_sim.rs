//! weft-apic against apic-sim over real HTTP.

use apic_sim::{spawn, FaultConfig, SimConfig, SimHandle, Topology};
use serde_json::json;
use std::time::Duration;
use weft_apic::*;

const POOL_VLAN: u16 = 150;

fn config(urls: Vec<String>) -> ApicConfig {
    let mut c = ApicConfig::new(urls, "admin", "password");
    c.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    c.rate_limit = None;
    c
}

async fn sim_with(f: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::new(Topology::example().expect("example topology"));
    f(&mut cfg);
    spawn(cfg).await.expect("sim starts")
}

async fn setup() -> (SimHandle, ApicClient) {
    let sim = sim_with(|_| {}).await;
    let client = ApicClient::new(config(vec![sim.url.clone()])).unwrap();
    (sim, client)
}

fn web() -> EpgKey {
    EpgKey::new("t1", "ap1", "web").unwrap()
}

fn managed(epg: EpgKey) -> ManagedEpg {
    ManagedEpg {
        epg,
        bridge_domain: "bd1".into(),
        physical_domain: "weft_phys".into(),
        vrf: "vrf1".into(),
    }
}

fn vlan(n: u16) -> VlanId {
    VlanId::new(n).unwrap()
}

fn binding(path: PathDn, v: u16, mode: BindingMode) -> Binding {
    Binding {
        path,
        encap: vlan(v),
        mode,
        immediacy: Immediacy::Immediate,
    }
}

/// A regular (tagged) binding on the pool's VLAN.
fn regular(path: PathDn) -> Binding {
    binding(path, POOL_VLAN, BindingMode::Regular)
}

fn port(node: u16, p: &str) -> PathDn {
    PathDn::port(1, node, p).unwrap()
}

#[tokio::test]
async fn discovery_finds_leaves_ports_vpcs_fex_and_lldp_hosts() {
    let (_sim, client) = setup().await;
    let fabric = client.discover().await.unwrap();
    assert_eq!(fabric.nodes.len(), 6);
    assert_eq!(
        fabric.leaves().map(|n| n.id).collect::<Vec<_>>(),
        vec![101, 102, 103, 104]
    );
    assert!(fabric.has_path(&port(104, "eth1/8")));
    let vpcs: Vec<_> = fabric.vpcs().map(|p| p.path.to_string()).collect();
    assert_eq!(
        vpcs,
        vec![
            "topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]",
            "topology/pod-1/protpaths-101-102/pathep-[host-6_vpc]"
        ]
    );
    assert!(fabric.vpcs().all(|p| p.lag == "node"));
    let fex: Vec<_> = fabric.fex_paths().map(|p| p.path.clone()).collect();
    assert_eq!(fex.len(), 4);
    assert_eq!(fex[0].leaves(), vec![103]);
    assert_eq!(fabric.lldp_neighbours.len(), 6);
    let host3 = match_uplinks("host-3", &[], &fabric.lldp_neighbours);
    assert_eq!(
        host3.uplinks.len(),
        1,
        "both vPC member links collapse into the vPC path"
    );
    assert_eq!(
        host3.uplinks[0].path,
        PathDn::vpc(1, 101, 102, "host-3_vpc").unwrap()
    );
    let host4 = match_uplinks("host-4", &[], &fabric.lldp_neighbours);
    assert_eq!(
        host4.uplinks[0].path.to_string(),
        "topology/pod-1/paths-103/extpaths-111/pathep-[eth1/1]"
    );
    let conflict = match_uplinks(
        "host-1",
        &[("eth0".into(), port(102, "eth1/3"))],
        &fabric.lldp_neighbours,
    );
    assert!(matches!(
        conflict.agreement,
        UplinkAgreement::Conflict { .. }
    ));
}

#[tokio::test]
async fn refreshes_the_session_before_the_token_expires() {
    let sim = sim_with(|c| c.token_lifetime = Duration::from_secs(2)).await;
    let client = ApicClient::new(config(vec![sim.url.clone()])).unwrap();
    client.list_owned_bindings().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past half the lifetime
    client.list_owned_bindings().await.unwrap();
    assert_eq!(sim.count("login"), 1);
    assert_eq!(sim.count("refresh"), 1);
}

#[tokio::test]
async fn an_expired_token_means_a_login_not_a_doomed_refresh() {
    let sim = sim_with(|c| c.token_lifetime = Duration::from_secs(3)).await;
    let client = ApicClient::new(config(vec![sim.url.clone()])).unwrap();
    let expiries = 2;
    client.class_all("fabricNode", None).await.unwrap();
    for _ in 0..expiries {
        // Idle past the token's lifetime (a long retry wait, a quiet period).
        tokio::time::sleep(Duration::from_millis(3500)).await;
        client.class_all("fabricNode", None).await.unwrap();
    }
    assert_eq!(sim.count("login"), 1 + expiries, "one login per expiry");
    assert_eq!(
        sim.count("refresh"),
        0,
        "no refresh with a token known to be expired"
    );
}

#[tokio::test]
async fn expired_token_mid_work_means_one_relogin_and_a_retry() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    sim.expire_tokens();
    client
        .apply_bindings(&web(), &[regular(port(101, "eth1/7"))])
        .await
        .unwrap();
    assert_eq!(sim.count("login"), 2);
    assert_eq!(
        sim.count("mo_post"),
        2,
        "one ensure_epg and one apply: the 403 hit the apply's ownership query, retried once"
    );
    assert_eq!(client.list_owned_bindings().await.unwrap().len(), 1);
}

/// Expires every session as each of the next `k` class queries arrives: the sim holds every
/// request `latency_ms` before it checks the token, so each of those queries meets a token
/// that died while it was on its way (a busy APIC whose sessions time out under the load).
fn expire_under_each_query(sim: &SimHandle, k: u64) -> tokio::task::JoinHandle<()> {
    let state = sim.state.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        while seen < k {
            let n = state.count("class_get");
            if n > seen {
                state.expire_tokens();
                seen = n;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// A simulator that holds every request 100 ms (no login throttle), and a client of it.
async fn slow_setup() -> (SimHandle, ApicClient) {
    let sim = sim_with(|c| {
        c.faults.latency_ms = 100;
        c.faults.login_rate_per_sec = None;
    })
    .await;
    let client = ApicClient::new(config(vec![sim.url.clone()])).unwrap();
    (sim, client)
}

#[tokio::test]
async fn every_new_token_rejection_in_one_call_means_a_new_login() {
    let (sim, client) = slow_setup().await;
    let expiring = expire_under_each_query(&sim, 3);
    let nodes = client.class_all("fabricNode", None).await.unwrap();
    expiring.await.unwrap();
    assert_eq!(nodes.len(), 6);
    assert_eq!(
        (sim.count("login"), sim.count("class_get")),
        (4, 4),
        "three tokens died under the query: three logins after the first, the fourth query answered"
    );
}

#[tokio::test]
async fn token_rejections_in_one_call_are_bounded() {
    let (sim, client) = slow_setup().await;
    let expiring = expire_under_each_query(&sim, 10);
    let err = client.class_all("fabricNode", None).await.unwrap_err();
    expiring.abort();
    assert_eq!(err.code(), Some("403"), "{err}");
    assert_eq!(
        (sim.count("login"), sim.count("class_get")),
        (4, 4),
        "max_attempts (3) logins after the first, then the call gives up"
    );
}

#[tokio::test]
async fn a_request_takes_its_token_after_waiting_its_turn_under_the_rate_limit() {
    // Tokens live one second; six queries queued behind a limit of two a second wait up to
    // three seconds for their turn. Had they taken the token before waiting, the later ones
    // would carry a dead token and be rejected.
    let sim = sim_with(|c| {
        c.token_lifetime = Duration::from_secs(1);
        c.faults.login_rate_per_sec = None;
    })
    .await;
    let mut cfg = config(vec![sim.url.clone()]);
    cfg.rate_limit = Some(RateLimit {
        per_second: 2.0,
        burst: 1,
    });
    let client = std::sync::Arc::new(ApicClient::new(cfg).unwrap());
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.class_all("fabricNode", None).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 6);
    }
    assert_eq!(
        sim.count("class_get"),
        6,
        "no query was sent with a token that died while it waited (no 403, no resend)"
    );
}

#[tokio::test]
async fn fails_over_when_the_first_controller_is_down() {
    let sim = sim_with(|_| {}).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let client = ApicClient::new(config(vec![dead, sim.url.clone()])).unwrap();
    let fabric = client.discover().await.unwrap();
    assert_eq!(fabric.leaves().count(), 4);
    assert_eq!(sim.count("login"), 1);
}

#[tokio::test]
async fn overload_pages_are_retried_with_backoff() {
    let (sim, client) = setup().await;
    client.login().await.unwrap();
    sim.set_faults(FaultConfig {
        overload_next: 2,
        ..FaultConfig::default()
    });
    client.list_owned_bindings().await.unwrap();
    assert_eq!(
        sim.count("class_get"),
        3,
        "two HTML 503 pages, then success"
    );
}

#[tokio::test]
async fn retries_are_bounded() {
    let (sim, client) = setup().await;
    client.login().await.unwrap();
    sim.set_faults(FaultConfig {
        overload_next: 100,
        ..FaultConfig::default()
    });
    let err = client.list_owned_bindings().await.unwrap_err();
    assert!(
        matches!(err, ApicError::Unavailable { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(sim.count("class_get"), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (sim, client) = setup().await;
    let err = client
        .apply_bindings(&web(), &[regular(port(101, "eth1/7"))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("102"), "{err}");
    assert_eq!(sim.count("mo_post"), 1);
    assert!(
        sim.get(&web().dn()).is_none(),
        "a missing EPG is not silently created"
    );
}

#[tokio::test]
async fn wrong_password_fails_without_retry() {
    let sim = sim_with(|_| {}).await;
    let mut cfg = config(vec![sim.url.clone()]);
    cfg.password = Secret::new("wrong");
    let client = ApicClient::new(cfg).unwrap();
    let err = client.discover().await.unwrap_err();
    assert!(matches!(err, ApicError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"));
    assert_eq!(sim.count("login"), 1);
}

#[tokio::test]
async fn all_bindings_of_an_epg_go_in_one_post() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    sim.reset_counts();
    let bindings = [
        regular(port(101, "eth1/1")),
        regular(PathDn::vpc(1, 101, 102, "host-3_vpc").unwrap()),
        binding(
            PathDn::parse("topology/pod-1/paths-103/extpaths-111/pathep-[eth1/1]").unwrap(),
            POOL_VLAN,
            BindingMode::Untagged,
        ),
    ];
    client.apply_bindings(&web(), &bindings).await.unwrap();
    assert_eq!(sim.count("mo_post"), 1);
    let owned = client.list_owned_bindings().await.unwrap();
    assert_eq!(owned.len(), 3);
    assert!(owned.iter().all(|b| b.epg == web()
        && b.encap == Some(vlan(POOL_VLAN))
        && b.immediacy == Some(Immediacy::Immediate)));
    for b in &bindings {
        assert!(
            client
                .binding_faults(&web(), &b.path)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            b.path
        );
    }
}

#[tokio::test]
async fn attribute_typo_fails_against_the_sim() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    let typo = Mo::new("fvRsPathAtt")
        .attr("tDn", port(101, "eth1/7").to_string())
        .attr("encap", "vlan-150")
        .attr("instrImmedcy", "immediate");
    let err = client.post_mo(&web().dn(), &typo).await.unwrap_err();
    assert_eq!(err.code(), Some("400"));
    assert!(
        err.to_string()
            .contains("unknown attribute 'instrImmedcy' in element 'fvRsPathAtt'"),
        "{err}"
    );
    assert_eq!(sim.count("mo_post"), 2, "not retried");
}

#[tokio::test]
async fn ensure_epg_is_idempotent_and_respects_foreign_objects() {
    let (sim, client) = setup().await;
    sim.inject(
        "uni",
        &json!({"fvTenant":{"attributes":{"name":"t1","descr":"owned by the network team"}}}),
    )
    .unwrap();
    client.ensure_epg(&managed(web())).await.unwrap();
    client.ensure_epg(&managed(web())).await.unwrap();
    let tenant = sim.get("uni/tn-t1").unwrap();
    assert_eq!(
        tenant["fvTenant"]["attributes"]["annotation"], "",
        "existing tenant left unmarked"
    );
    let epg = sim.get(&web().dn()).unwrap();
    assert_eq!(epg["fvAEPg"]["attributes"]["annotation"], OWNER_ANNOTATION);
    let ap = sim.get("uni/tn-t1/ap-ap1").unwrap();
    assert_eq!(
        ap["fvAp"]["attributes"]["annotation"], OWNER_ANNOTATION,
        "created AP is marked"
    );
    sim.inject(
        "uni/tn-t1/ap-ap1",
        &json!({"fvAEPg":{"attributes":{"name":"handmade"}}}),
    )
    .unwrap();
    let err = client
        .ensure_epg(&managed(EpgKey::new("t1", "ap1", "handmade").unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, ApicError::NotOwned { .. }), "{err}");
}

#[tokio::test]
async fn list_owned_bindings_pages_and_ignores_foreign_ones() {
    let sim = sim_with(|_| {}).await;
    let mut cfg = config(vec![sim.url.clone()]);
    cfg.page_size = 2;
    let client = ApicClient::new(cfg).unwrap();
    client.ensure_epg(&managed(web())).await.unwrap();
    let bindings: Vec<_> = (1..=5)
        .map(|i| regular(port(104, &format!("eth1/{i}"))))
        .collect();
    client.apply_bindings(&web(), &bindings).await.unwrap();
    sim.inject(
        &web().dn(),
        &json!({"fvRsPathAtt":{"attributes":{"tDn":port(104, "eth1/8").to_string(),"encap":"vlan-150"}}}),
    )
    .unwrap();
    sim.reset_counts();
    let owned = client.list_owned_bindings().await.unwrap();
    assert_eq!(owned.len(), 5);
    assert!(owned.iter().all(|b| b.path() != Some(port(104, "eth1/8"))));
    assert_eq!(sim.count("class_get"), 3, "pages of 2, 2 and 1");
}

#[tokio::test]
async fn delete_binding_only_touches_weft_objects() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    client
        .apply_bindings(&web(), &[regular(port(101, "eth1/1"))])
        .await
        .unwrap();
    sim.inject(
        &web().dn(),
        &json!({"fvRsPathAtt":{"attributes":{"tDn":port(101, "eth1/2").to_string(),"encap":"vlan-150"}}}),
    )
    .unwrap();
    client
        .delete_binding(&web(), &port(101, "eth1/1"))
        .await
        .unwrap();
    assert!(sim
        .get(&Binding::dn(&web(), &port(101, "eth1/1")))
        .is_none());
    client
        .delete_binding(&web(), &port(101, "eth1/1"))
        .await
        .unwrap();
    let err = client
        .delete_binding(&web(), &port(101, "eth1/2"))
        .await
        .unwrap_err();
    assert!(matches!(err, ApicError::NotOwned { .. }));
    assert!(sim
        .get(&Binding::dn(&web(), &port(101, "eth1/2")))
        .is_some());
}

#[tokio::test]
async fn delete_bindings_removes_weft_ones_in_one_post_and_leaves_foreign_ones() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    let ours: Vec<PathDn> = (1..=3).map(|i| port(104, &format!("eth1/{i}"))).collect();
    let bindings: Vec<Binding> = ours.iter().cloned().map(regular).collect();
    client.apply_bindings(&web(), &bindings).await.unwrap();
    sim.inject(
        &web().dn(),
        &json!({"fvRsPathAtt":{"attributes":{"tDn":port(104, "eth1/4").to_string(),"encap":"vlan-150"}}}),
    )
    .unwrap();
    sim.reset_counts();
    let mut asked = ours.clone();
    asked.push(port(104, "eth1/4")); // someone else's
    asked.push(port(104, "eth1/5")); // absent
    let foreign = client.delete_bindings(&web(), &asked).await.unwrap();
    assert_eq!(foreign, [port(104, "eth1/4")]);
    assert_eq!(sim.count("mo_post"), 1, "one POST for the three");
    assert_eq!(sim.count("mo_delete"), 0);
    for path in &ours {
        assert!(sim.get(&Binding::dn(&web(), path)).is_none(), "{path}");
    }
    assert!(
        sim.get(&Binding::dn(&web(), &port(104, "eth1/4")))
            .is_some(),
        "the foreign binding is untouched"
    );
    // Nothing of Weft's left: no POST at all.
    sim.reset_counts();
    let foreign = client.delete_bindings(&web(), &asked).await.unwrap();
    assert_eq!(foreign.len(), 1);
    assert_eq!(sim.count("mo_post"), 0);
}

#[tokio::test]
async fn a_foreign_binding_is_never_taken_over_and_the_whole_batch_is_refused() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    sim.inject(
        &web().dn(),
        &json!({"fvAEPg":{"attributes":{},"children":[
            {"fvRsPathAtt":{"attributes":{"tDn":port(101, "eth1/2").to_string(),"encap":"vlan-182"}}},
            {"fvRsPathAtt":{"attributes":{"tDn":port(101, "eth1/3").to_string(),"encap":"vlan-183","annotation":"orchestrator:terraform"}}}]}}),
    )
    .unwrap();
    let before = sim.dump();
    sim.reset_counts();
    for (foreign, annotation) in [("eth1/2", ""), ("eth1/3", "orchestrator:terraform")] {
        let batch = [regular(port(101, "eth1/1")), regular(port(101, foreign))];
        let err = client.apply_bindings(&web(), &batch).await.unwrap_err();
        match &err {
            ApicError::NotOwned { dn, annotation: a } => {
                assert_eq!(dn, &Binding::dn(&web(), &port(101, foreign)));
                assert_eq!(a, annotation);
            }
            other => panic!("expected NotOwned, got {other}"),
        }
        let err = client.delete_binding(&web(), &port(101, foreign)).await;
        assert!(matches!(err, Err(ApicError::NotOwned { .. })), "{err:?}");
        let paths = [port(101, foreign)];
        let err = client
            .preflight(&request(&web(), &paths))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PreflightError::Apic(ApicError::NotOwned { .. })),
            "{err}"
        );
    }
    assert_eq!(sim.count("mo_post") + sim.count("mo_delete"), 0);
    assert_eq!(sim.dump(), before, "nothing changed, not even eth1/1");
}

/// The `fvRsBd` of `epg` as the APIC reports it: (state, target DN).
fn rsbd(sim: &SimHandle, epg: &EpgKey) -> (String, String) {
    let v = sim.get(&format!("{}/rsbd", epg.dn())).expect("fvRsBd");
    let a = &v["fvRsBd"]["attributes"];
    (
        a["state"].as_str().unwrap().into(),
        a["tDn"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn a_managed_epg_in_a_new_tenant_ends_with_a_resolved_bd() {
    let (sim, client) = setup().await;
    let e = EpgKey::new("fresh", "ap", "e").unwrap();
    client.ensure_epg(&managed(e.clone())).await.unwrap();
    assert_eq!(
        rsbd(&sim, &e),
        ("formed".into(), "uni/tn-fresh/BD-bd1".into())
    );
    let bd = sim.get("uni/tn-fresh/BD-bd1").unwrap();
    assert_eq!(bd["fvBD"]["attributes"]["annotation"], OWNER_ANNOTATION);
    let rsctx = sim.get("uni/tn-fresh/BD-bd1/rsctx").unwrap();
    assert_eq!(rsctx["fvRsCtx"]["attributes"]["state"], "formed", "{rsctx}");
    let vrf = sim.get("uni/tn-fresh/ctx-vrf1").unwrap();
    assert_eq!(vrf["fvCtx"]["attributes"]["annotation"], OWNER_ANNOTATION);
    // A BD (or VRF) that resolves in `common` is used, not shadowed by a new one.
    sim.inject(
        "uni/tn-common",
        &json!({"fvBD":{"attributes":{"name":"shared"}}}),
    )
    .unwrap();
    let s = EpgKey::new("fresh", "ap", "s").unwrap();
    client
        .ensure_epg(&ManagedEpg {
            bridge_domain: "shared".into(),
            ..managed(s.clone())
        })
        .await
        .unwrap();
    assert_eq!(
        rsbd(&sim, &s),
        ("formed".into(), "uni/tn-common/BD-shared".into())
    );
    assert!(sim.get("uni/tn-fresh/BD-shared").is_none());
}

#[tokio::test]
async fn preflight_refuses_an_epg_whose_bd_does_not_resolve() {
    let (sim, client) = setup().await;
    // Made by hand in a new tenant: the BD it names was never created.
    sim.inject("uni", &json!({"fvTenant":{"attributes":{"name":"t1"},"children":[{"fvAp":{"attributes":{"name":"ap1"},"children":[
        {"fvAEPg":{"attributes":{"name":"web","annotation":OWNER_ANNOTATION},"children":[
            {"fvRsBd":{"attributes":{"tnFvBDName":"bd1"}}},
            {"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}}]}}]}}]}})).unwrap();
    assert_eq!(rsbd(&sim, &web()).0, "missing-target");
    let (web_key, paths) = (web(), [port(101, "eth1/1")]);
    for managed_epg in [false, true] {
        let req = PreflightRequest {
            managed: managed_epg,
            ..request(&web_key, &paths)
        };
        let err = client.preflight(&req).await.unwrap_err();
        assert!(matches!(err, PreflightError::BdUnresolved { .. }), "{err}");
        assert_eq!(err.object_dn(), Some("uni/tn-t1/BD-bd1"));
    }
    client.ensure_epg(&managed(web())).await.unwrap();
    assert_eq!(rsbd(&sim, &web()).0, "formed");
    client.preflight(&request(&web(), &paths)).await.unwrap();
}

/// A pre-flight of a regular binding on the pool's VLAN in `weft_phys`, EPG not managed.
fn request<'a>(epg: &'a EpgKey, paths: &'a [PathDn]) -> PreflightRequest<'a> {
    PreflightRequest {
        epg,
        physical_domain: "weft_phys",
        encap: vlan(POOL_VLAN),
        mode: BindingMode::Regular,
        managed: false,
        paths,
    }
}

/// Creates the managed EPGs `web` and `db` (same tenant and AP); returns `db`'s key.
async fn web_and_db(client: &ApicClient) -> EpgKey {
    let db = EpgKey::new("t1", "ap1", "db").unwrap();
    client.ensure_epg(&managed(web())).await.unwrap();
    client.ensure_epg(&managed(db.clone())).await.unwrap();
    db
}

/// Runs pre-flight of a regular binding, then binds anyway and returns the F0467 qualifier the sim raised.
async fn preflight_then_force(
    client: &ApicClient,
    epg: &EpgKey,
    path: PathDn,
    v: u16,
) -> (Result<PreflightReport, PreflightError>, Option<String>) {
    let paths = [path.clone()];
    let req = PreflightRequest {
        encap: vlan(v),
        ..request(epg, &paths)
    };
    let verdict = client.preflight(&req).await;
    client
        .apply_bindings(epg, &[binding(path.clone(), v, BindingMode::Regular)])
        .await
        .unwrap();
    let faults = client.binding_faults(epg, &path).await.unwrap();
    (verdict, faults.first().and_then(|f| f.qualifier.clone()))
}

#[tokio::test]
async fn preflight_accepts_a_good_binding_without_writing() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    sim.reset_counts();
    let web_key = web();
    let paths = [
        PathDn::vpc(1, 101, 102, "host-3_vpc").unwrap(),
        port(103, "eth1/1"),
    ];
    let req = request(&web_key, &paths);
    client.preflight(&req).await.unwrap();
    assert_eq!(
        sim.count("mo_post") + sim.count("mo_delete"),
        0,
        "pre-flight only reads"
    );
}

#[tokio::test]
async fn preflight_missing_epg() {
    let (_sim, client) = setup().await;
    let web_key = web();
    let paths = [port(101, "eth1/1")];
    let req = request(&web_key, &paths);
    let err = client.preflight(&req).await.unwrap_err();
    assert!(matches!(err, PreflightError::EpgMissing { .. }));
    assert_eq!(err.object_dn(), Some("uni/tn-t1/ap-ap1/epg-web"));
}

#[tokio::test]
async fn preflight_of_a_managed_epg_still_to_create_checks_domain_pool_and_leaves() {
    let (sim, client) = setup().await;
    let web_key = web();
    let paths = [port(101, "eth1/1")];
    let req = PreflightRequest {
        managed: true,
        ..request(&web_key, &paths)
    };
    sim.reset_counts();
    let report = client.preflight(&req).await.unwrap();
    assert_eq!(report, PreflightReport { epg_exists: false });
    assert_eq!(sim.count("mo_post") + sim.count("mo_delete"), 0);
    // The VLAN must still be in the domain's pool.
    let outside = PreflightRequest {
        encap: vlan(250),
        ..req.clone()
    };
    let err = client.preflight(&outside).await.unwrap_err();
    assert!(matches!(err, PreflightError::VlanNotInPool { .. }), "{err}");
    let no_domain = PreflightRequest {
        physical_domain: "nope",
        ..req
    };
    let err = client.preflight(&no_domain).await.unwrap_err();
    assert_eq!(err.object_dn(), Some("uni/phys-nope"), "{err}");
}

#[tokio::test]
async fn preflight_invalid_vlan_no_domain() {
    let (sim, client) = setup().await;
    sim.inject("uni", &json!({"fvTenant":{"attributes":{"name":"t1"},"children":[{"fvAp":{"attributes":{"name":"ap1"},"children":[
        {"fvAEPg":{"attributes":{"name":"web","annotation":"orchestrator:weft"}}}]}}]}})).unwrap();
    let (verdict, fault) =
        preflight_then_force(&client, &web(), port(101, "eth1/7"), POOL_VLAN).await;
    let err = verdict.unwrap_err();
    assert!(
        matches!(err, PreflightError::DomainNotAssociated { .. }),
        "{err}"
    );
    assert_eq!(err.object_dn(), Some("uni/tn-t1/ap-ap1/epg-web"));
    assert_eq!(
        fault.as_deref(),
        Some("invalid-vlan"),
        "the sim raises what pre-flight predicted"
    );
}

#[tokio::test]
async fn preflight_invalid_vlan_outside_pool() {
    let (_sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    let (verdict, fault) = preflight_then_force(&client, &web(), port(101, "eth1/7"), 250).await;
    let err = verdict.unwrap_err();
    assert!(matches!(err, PreflightError::VlanNotInPool { .. }), "{err}");
    assert_eq!(err.object_dn(), Some("uni/infra/vlanns-[weft_pool]-static"));
    assert_eq!(fault.as_deref(), Some("invalid-vlan"));
}

#[tokio::test]
async fn preflight_invalid_path() {
    let (_sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    let (verdict, fault) =
        preflight_then_force(&client, &web(), port(101, "eth1/99"), POOL_VLAN).await;
    let err = verdict.unwrap_err();
    assert!(matches!(err, PreflightError::PathMissing { .. }), "{err}");
    assert_eq!(
        err.object_dn(),
        Some("topology/pod-1/paths-101/pathep-[eth1/99]")
    );
    assert_eq!(fault.as_deref(), Some("invalid-path"));
}

#[tokio::test]
async fn preflight_encap_already_in_use_on_the_leaf() {
    let (_sim, client) = setup().await;
    let db = web_and_db(&client).await;
    client
        .apply_bindings(
            &db,
            &[regular(PathDn::vpc(1, 101, 102, "host-3_vpc").unwrap())],
        )
        .await
        .unwrap();
    let (verdict, fault) =
        preflight_then_force(&client, &web(), port(102, "eth1/2"), POOL_VLAN).await;
    let err = verdict.unwrap_err();
    assert!(
        matches!(err, PreflightError::EncapInUse { leaf: 102, .. }),
        "{err}"
    );
    assert_eq!(err.object_dn(), Some("uni/tn-t1/ap-ap1/epg-db/rspathAtt-[topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]]"));
    assert_eq!(fault.as_deref(), Some("encap-already-in-use"));
    let web_key = web();
    let other_leaf = [port(104, "eth1/2")];
    let ok = request(&web_key, &other_leaf);
    client.preflight(&ok).await.unwrap();
}

#[tokio::test]
async fn preflight_encap_already_in_use_by_a_static_leaf_binding() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    sim.inject("uni", &json!({"fvTenant":{"attributes":{"name":"foreign"},"children":[{"fvAp":{"attributes":{"name":"app"},"children":[
        {"fvAEPg":{"attributes":{"name":"db"},"children":[
            {"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}},
            {"fvRsNodeAtt":{"attributes":{"tDn":"topology/pod-1/node-102","encap":"vlan-183"}}}]}}]}}]}})).unwrap();
    let (verdict, fault) = preflight_then_force(&client, &web(), port(102, "eth1/3"), 183).await;
    let err = verdict.unwrap_err();
    assert!(
        matches!(err, PreflightError::EncapInUse { leaf: 102, .. }),
        "{err}"
    );
    assert_eq!(
        err.object_dn(),
        Some("uni/tn-foreign/ap-app/epg-db/rsnodeAtt-[topology/pod-1/node-102]")
    );
    assert_eq!(fault.as_deref(), Some("encap-already-in-use"));
    let (verdict, fault) = preflight_then_force(&client, &web(), port(101, "eth1/3"), 183).await;
    verdict.unwrap();
    assert_eq!(fault, None, "leaf 101 is free");
}

#[tokio::test]
async fn preflight_invalid_path_when_the_ports_aaep_lacks_the_domain() {
    let (sim, client) = setup().await;
    client.ensure_epg(&managed(web())).await.unwrap();
    // Leaf 102's eth1/2 and the vPC's policy group move to an AAEP without weft_phys.
    let bare = json!({"infraRsAttEntP":{"attributes":{"tDn":"uni/infra/attentp-bare_aaep"}}});
    sim.inject(
        "uni/infra",
        &json!({"infraAttEntityP":{"attributes":{"name":"bare_aaep"}}}),
    )
    .unwrap();
    sim.inject("uni/infra/funcprof/accbundle-host-3_vpc", &bare)
        .unwrap();
    sim.inject(
        "uni/infra/funcprof",
        &json!({"infraAccPortGrp":{"attributes":{"name":"bare_ipg"},"children":[bare]}}),
    )
    .unwrap();
    sim.inject(
        "uni/infra/accportprof-leaf-102/hports-eth1_2-typ-range",
        &json!({"infraRsAccBaseGrp":{"attributes":{"tDn":"uni/infra/funcprof/accportgrp-bare_ipg"}}}),
    )
    .unwrap();
    let vpc = PathDn::vpc(1, 101, 102, "host-3_vpc").unwrap();
    for (path, leaf) in [(port(102, "eth1/2"), 102), (vpc.clone(), 101)] {
        let (verdict, fault) = preflight_then_force(&client, &web(), path, POOL_VLAN).await;
        let err = verdict.unwrap_err();
        assert!(
            matches!(&err, PreflightError::DomainNotOnPath { leaf: l, .. } if *l == leaf),
            "{err}"
        );
        assert_eq!(err.object_dn(), Some("uni/infra/attentp-bare_aaep"));
        assert!(
            err.to_string().contains("AAEP uni/infra/attentp-bare_aaep"),
            "{err}"
        );
        assert_eq!(fault.as_deref(), Some("invalid-path"), "the sim agrees");
    }
    let on_vpc = client.binding_faults(&web(), &vpc).await.unwrap();
    let nodes: Vec<_> = on_vpc.iter().map(|f| f.node).collect();
    assert_eq!(
        nodes,
        [Some(101), Some(102)],
        "raised on both leaves of the vPC"
    );
    let (verdict, fault) =
        preflight_then_force(&client, &web(), port(102, "eth1/3"), POOL_VLAN).await;
    verdict.unwrap();
    assert_eq!(fault, None, "the other ports of leaf 102 keep weft_aaep");
    sim.inject(
        "uni/infra/attentp-bare_aaep",
        &json!({"infraRsDomP":{"attributes":{"tDn":"uni/phys-weft_phys"}}}),
    )
    .unwrap();
    let paths = [port(102, "eth1/2"), vpc.clone()];
    client.preflight(&request(&web(), &paths)).await.unwrap();
    for path in &paths {
        assert!(client
            .binding_faults(&web(), path)
            .await
            .unwrap()
            .is_empty());
    }
    // A port no selector covers reaches no AAEP at all: named by its path.
    sim.remove("uni/infra/accportprof-leaf-104/hports-eth1_4-typ-range");
    let bare = [port(104, "eth1/4")];
    let err = client.preflight(&request(&web(), &bare)).await.unwrap_err();
    assert!(
        matches!(err, PreflightError::DomainNotOnPath { aaep: None, .. }),
        "{err}"
    );
    assert_eq!(
        err.object_dn(),
        Some("topology/pod-1/paths-104/pathep-[eth1/4]")
    );
}

#[tokio::test]
async fn preflight_second_untagged_epg_on_a_port() {
    let (_sim, client) = setup().await;
    let db = web_and_db(&client).await;
    client
        .apply_bindings(
            &db,
            &[binding(port(103, "eth1/3"), 160, BindingMode::Untagged)],
        )
        .await
        .unwrap();
    let (web_key, paths) = (web(), [port(103, "eth1/3")]);
    let req = PreflightRequest {
        encap: vlan(161),
        mode: BindingMode::Native,
        ..request(&web_key, &paths)
    };
    let err = client.preflight(&req).await.unwrap_err();
    assert!(matches!(err, PreflightError::NativeInUse { .. }), "{err}");
    let tagged = PreflightRequest {
        mode: BindingMode::Regular,
        ..req
    };
    client.preflight(&tagged).await.unwrap();
}

#[tokio::test]
async fn logout_ends_the_session() {
    let (sim, client) = setup().await;
    client.login().await.unwrap();
    client.logout().await.unwrap();
    assert_eq!(sim.count("logout"), 1);
    client.discover().await.unwrap();
    assert_eq!(sim.count("login"), 2, "next call logs in again");
}

#[test]
fn tls_settings_are_checked_at_construction() {
    let mut cfg = config(vec!["https://apic.invalid".into()]);
    cfg.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(matches!(ApicClient::new(cfg), Err(ApicError::Config(_))));
    assert!(matches!(
        ApicClient::new(config(vec![])),
        Err(ApicError::Config(_))
    ));
    let mut lab = config(vec!["https://apic.invalid".into()]);
    lab.insecure = true;
    ApicClient::new(lab).unwrap();
}

/// A TLS front for the sim with a fresh self-signed certificate for `localhost`;
/// returns its port and the certificate (PEM).
async fn tls_front(backend: std::net::SocketAddr) -> (u16, String) {
    use std::sync::Arc;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let (Ok(mut tls), Ok(mut up)) = (
                    acceptor.accept(tcp).await,
                    tokio::net::TcpStream::connect(backend).await,
                ) {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    (port, ck.cert.pem())
}

#[tokio::test]
async fn tls_is_verified_by_default_and_a_ca_file_or_insecure_opts_out() {
    let sim = sim_with(|_| {}).await;
    let (port, ca_pem) = tls_front(sim.addr).await;
    let url = format!("https://localhost:{port}");
    let strict = ApicClient::new(config(vec![url.clone()])).unwrap();
    let err = strict.discover().await.unwrap_err();
    assert!(matches!(err, ApicError::Unavailable { .. }), "{err}");
    assert_eq!(
        sim.count("login"),
        0,
        "an unverified server never sees the password"
    );

    let ca = std::env::temp_dir().join(format!("weft-apic-test-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, ca_pem).unwrap();
    let mut with_ca = config(vec![url.clone()]);
    with_ca.ca_file = Some(ca.clone());
    let fabric = ApicClient::new(with_ca).unwrap().discover().await;
    std::fs::remove_file(&ca).ok();
    assert_eq!(fabric.unwrap().leaves().count(), 4);

    let mut lab = config(vec![url]);
    lab.insecure = true;
    assert_eq!(
        ApicClient::new(lab)
            .unwrap()
            .discover()
            .await
            .unwrap()
            .leaves()
            .count(),
        4
    );
}

#[tokio::test]
async fn concurrent_work_shares_one_session() {
    let (sim, client) = setup().await;
    let client = std::sync::Arc::new(client);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.list_owned_bindings().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sim.count("login"), 1, "one login shared by all workers");
    assert_eq!(sim.count("class_get"), 8);
}
