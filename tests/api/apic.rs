//! Weft's REST API in front of the APIC (an in-process apic-sim of deploy/sim/topology.json):
//! fabric discovery and its cache, host uplinks from LLDP with conflicts, pre-flight checks
//! that name the APIC object at fault and never write to the APIC, and APIC errors as
//! problems that never show the password.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{
    apic_settings, assert_problem, json_ok, spawn_app, spawn_with_apic, spawn_with_sim, TestApp,
};

const VPC: &str = "topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]";
const FEX_PORT: &str = "topology/pod-1/paths-103/extpaths-111/pathep-[eth1/1]";
const HOST5_LLDP: &str = "topology/pod-1/paths-104/pathep-[eth1/2]";

fn has_path(fabric: &Value, dn: &str, kind: &str) -> bool {
    fabric["paths"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["path"] == dn && p["kind"] == kind)
}

fn lldp_names(fabric: &Value) -> Vec<String> {
    fabric["lldp_neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["sys_name"].as_str().unwrap().to_owned())
        .collect()
}

/// A host registered without uplinks.
async fn bare_host(app: &TestApp, name: &str) {
    let r = app
        .put(
            &app.admin,
            &format!("/api/v1/hosts/{name}"),
            &json!({"agent_url": "http://h:9180", "backend": "linux-bridge"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[sqlx::test(migrations = "./migrations")]
async fn fabric_shows_leaves_vpc_and_fex_paths_and_lldp_and_is_cached(db: PgPool) {
    let (app, sim) = spawn_with_sim(db).await;
    let fabric = app.get_json(&app.viewer, "/api/v1/fabric").await;
    let leaves: Vec<u64> = fabric["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "leaf")
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(leaves, vec![101, 102, 103, 104]);
    assert!(has_path(&fabric, VPC, "vpc"), "{fabric}");
    assert!(has_path(&fabric, FEX_PORT, "fex"), "{fabric}");
    assert!(has_path(
        &fabric,
        "topology/pod-1/paths-101/pathep-[eth1/7]",
        "port"
    ));
    let host3: Vec<&Value> = fabric["lldp_neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["sys_name"] == "host-3")
        .collect();
    assert_eq!(host3.len(), 2);
    assert!(host3.iter().all(|n| n["uplink"] == VPC), "{host3:?}");
    assert!(fabric["fetched_at"].is_string());

    // Within the TTL the snapshot is served without asking the APIC again.
    sim.reset_counts();
    let again = app.get_json(&app.viewer, "/api/v1/fabric").await;
    assert_eq!(again["fetched_at"], fabric["fetched_at"]);
    assert_eq!(sim.count("class_get"), 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn refresh_picks_up_a_change_made_on_the_apic_by_hand(db: PgPool) {
    let (app, sim) = spawn_with_sim(db).await;
    bare_host(&app, "host-5").await;
    let before = app.get_json(&app.viewer, "/api/v1/fabric").await;
    assert!(lldp_names(&before).contains(&"host-5".to_string()));

    // Someone unplugs host-5: its LLDP adjacency disappears on the APIC.
    assert!(sim.remove("topology/pod-1/node-104/sys/lldp/inst/if-[eth1/2]/adj-1"));
    let cached = app.get_json(&app.viewer, "/api/v1/fabric").await;
    assert!(
        lldp_names(&cached).contains(&"host-5".to_string()),
        "served from the cache until refreshed"
    );
    let r = app
        .post(&app.viewer, "/api/v1/fabric/refresh", &json!({}))
        .await;
    assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let refreshed = json_ok(
        app.post(&app.operator, "/api/v1/fabric/refresh", &json!({}))
            .await,
    )
    .await;
    assert!(!lldp_names(&refreshed).contains(&"host-5".to_string()));
    assert_ne!(refreshed["fetched_at"], before["fetched_at"]);
    let host = app.get_json(&app.viewer, "/api/v1/hosts/host-5").await;
    assert_eq!(host["effective_uplinks"]["agreement"]["state"], "unknown");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_host_without_uplinks_gets_them_from_lldp_and_configured_ones_are_confirmed(db: PgPool) {
    let (app, _sim) = spawn_with_sim(db).await;
    bare_host(&app, "host-3").await;
    let host = app.get_json(&app.viewer, "/api/v1/hosts/host-3").await;
    assert_eq!(host["uplinks"], json!([]), "nothing configured");
    let eff = &host["effective_uplinks"];
    assert_eq!(eff["agreement"]["state"], "lldp_only");
    assert_eq!(
        eff["uplinks"],
        json!([{"path": VPC, "interfaces": ["eth0", "eth1"], "source": "lldp"}]),
        "both vPC member links collapse into the vPC path"
    );
    assert!(eff["lldp_fetched_at"].is_string());

    let r = app
        .put(
            &app.admin,
            "/api/v1/hosts/host-1",
            &json!({"agent_url": "http://h:9180", "backend": "ovs", "uplinks": [
                {"interface": "eth0", "path_dn": "topology/pod-1/paths-101/pathep-[eth1/1]"}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let list = app.get_json(&app.viewer, "/api/v1/hosts").await;
    let host1 = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "host-1")
        .unwrap();
    assert_eq!(host1["effective_uplinks"]["agreement"]["state"], "agree");
    assert_eq!(host1["effective_uplinks"]["uplinks"][0]["source"], "both");
}

#[sqlx::test(migrations = "./migrations")]
async fn configured_uplinks_that_lldp_contradicts_are_a_conflict_not_a_guess(db: PgPool) {
    let (app, sim) = spawn_with_sim(db).await;
    let wrong = "topology/pod-1/paths-104/pathep-[eth1/3]";
    let r = app
        .put(
            &app.admin,
            "/api/v1/hosts/host-5",
            &json!({"agent_url": "http://h:9180", "backend": "ovs",
                    "uplinks": [{"interface": "eth0", "path_dn": wrong}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let host = app.get_json(&app.viewer, "/api/v1/hosts/host-5").await;
    assert_eq!(
        host["effective_uplinks"]["agreement"],
        json!({"state": "conflict", "configured_only": [wrong], "lldp_only": [HOST5_LLDP]})
    );

    epg_on_both(&app, &sim, "web", 150, true).await;
    let r = app
        .post(
            &app.operator,
            "/api/v1/epgs/t/ap/web/preflight",
            &json!({"host": "host-5"}),
        )
        .await;
    let p = assert_problem(r, StatusCode::CONFLICT, "uplink-conflict").await;
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(wrong) && detail.contains(HOST5_LLDP),
        "{detail}"
    );
}

/// Pool `p` (100-300) in Weft, EPG `t/ap/{name}` with `vlan` in domain `weft_phys`, and, when
/// `on_apic`, the same EPG on the APIC associated with the domain.
async fn epg_on_both(
    app: &TestApp,
    sim: &apic_sim::SimHandle,
    name: &str,
    vlan: u16,
    on_apic: bool,
) {
    let r = app.get(&app.viewer, "/api/v1/vlan-pools/p").await;
    if r.status() == StatusCode::NOT_FOUND {
        app.pool("p", 100, 300).await;
    }
    let body = json!({
        "bridge_domain": "bd1",
        "physical_domain": "weft_phys",
        "vlan_pool": "p",
        "requested_vlan": vlan,
        "subnets": [{"cidr": format!("10.{}.0.0/24", vlan - 100), "gateway": format!("10.{}.0.1", vlan - 100), "reserved": []}]
    });
    let r = app
        .put(&app.operator, &format!("/api/v1/epgs/t/ap/{name}"), &body)
        .await;
    let epg: Value = r.json().await.unwrap();
    assert_eq!(epg["vlan"], vlan, "{epg}");
    if on_apic {
        crate::helpers::inject_epg(sim, name);
    }
}

async fn preflight(app: &TestApp, epg: &str, body: Value) -> reqwest::Response {
    app.post(
        &app.operator,
        &format!("/api/v1/epgs/t/ap/{epg}/preflight"),
        &body,
    )
    .await
}

#[sqlx::test(migrations = "./migrations")]
async fn preflight_passes_for_a_host_learned_from_lldp_and_writes_nothing(db: PgPool) {
    let (app, sim) = spawn_with_sim(db).await;
    bare_host(&app, "host-3").await;
    epg_on_both(&app, &sim, "web", 150, true).await;
    let before = sim.dump();
    sim.reset_counts();
    let ok = json_ok(preflight(&app, "web", json!({"host": "host-3"})).await).await;
    assert_eq!(
        ok,
        json!({"epg_exists": true, "epg_dn": "uni/tn-t/ap-ap/epg-web", "encap": "vlan-150",
               "mode": "regular", "physical_domain": "weft_phys", "paths": [VPC]})
    );
    let fex = json_ok(preflight(&app, "web", json!({"paths": [FEX_PORT]})).await).await;
    assert_eq!(fex["paths"], json!([FEX_PORT]));

    // A managed EPG Weft has yet to create passes on the domain, pool and leaf checks alone.
    epg_on_both(&app, &sim, "fresh", 160, false).await;
    let body: Value = app.get_json(&app.viewer, "/api/v1/epgs/t/ap/fresh").await;
    let spec = json!({"bridge_domain": body["bridge_domain"], "physical_domain": "weft_phys",
        "vlan_pool": "p", "managed": true, "subnets": body["subnets"]});
    let r = app
        .put(&app.operator, "/api/v1/epgs/t/ap/fresh", &spec)
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let fresh = json_ok(preflight(&app, "fresh", json!({"host": "host-3"})).await).await;
    assert_eq!(fresh["epg_exists"], false);
    assert_eq!(sim.count("mo_post"), 0);
    assert_eq!(sim.count("mo_delete"), 0);
    assert_eq!(sim.dump(), before, "the APIC is unchanged");
}

#[sqlx::test(migrations = "./migrations")]
async fn each_preflight_failure_is_a_409_naming_the_apic_object(db: PgPool) {
    let (app, sim) = spawn_with_sim(db).await;
    let port = |p: &str| format!("topology/pod-1/paths-101/pathep-[{p}]");
    epg_on_both(&app, &sim, "web", 150, true).await;
    epg_on_both(&app, &sim, "ghost", 151, false).await;
    epg_on_both(&app, &sim, "high", 250, true).await;
    epg_on_both(&app, &sim, "nodom", 152, true).await;
    assert!(sim.remove("uni/tn-t/ap-ap/epg-nodom/rsdomAtt-[uni/phys-weft_phys]"));
    // Another EPG already uses vlan-150 on leaf 101 (made by hand on the APIC).
    sim.inject(
        "uni",
        &json!({"fvTenant":{"attributes":{"name":"t"},"children":[{"fvAp":{"attributes":{"name":"ap"},"children":[
            {"fvAEPg":{"attributes":{"name":"other"},"children":[
                {"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}},
                {"fvRsPathAtt":{"attributes":{"tDn": port("eth1/2"), "encap":"vlan-150"}}}]}}]}}]}}),
    )
    .unwrap();
    let before = sim.dump();
    sim.reset_counts();
    let cases = [
        ("ghost", "uni/tn-t/ap-ap/epg-ghost", "does not exist"),
        ("nodom", "uni/tn-t/ap-ap/epg-nodom", "not associated"),
        ("high", "uni/infra/vlanns-[weft_pool]-static", "vlan-250"),
        (
            "web",
            "uni/tn-t/ap-ap/epg-other/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/2]]",
            "encap-already-in-use",
        ),
    ];
    for (epg, object_dn, reason) in cases {
        let r = preflight(&app, epg, json!({"paths": [port("eth1/1")]})).await;
        let p = assert_problem(r, StatusCode::CONFLICT, "preflight-failed").await;
        assert_eq!(p["object_dn"], object_dn, "{epg}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(reason), "{epg}: {p}");
    }
    let r = preflight(
        &app,
        "web",
        json!({"paths": ["topology/pod-1/paths-101/pathep-[eth1/99]"]}),
    )
    .await;
    let p = assert_problem(r, StatusCode::CONFLICT, "preflight-failed").await;
    assert_eq!(p["object_dn"], "topology/pod-1/paths-101/pathep-[eth1/99]");
    assert_eq!(sim.count("mo_post"), 0);
    assert_eq!(sim.count("mo_delete"), 0);
    assert_eq!(sim.dump(), before, "the APIC is unchanged");

    let r = preflight(&app, "absent", json!({"paths": [port("eth1/1")]})).await;
    assert_problem(r, StatusCode::NOT_FOUND, "not-found").await;
    let r = preflight(&app, "web", json!({})).await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
    let many: Vec<String> = (1..=65).map(|i| port(&format!("eth1/{i}"))).collect();
    sim.reset_counts();
    let r = preflight(&app, "web", json!({ "paths": many })).await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
    assert_eq!(sim.count("class_get"), 0, "refused before asking the APIC");
    let r = preflight(&app, "web", json!({"host": "nobody"})).await;
    assert_problem(r, StatusCode::NOT_FOUND, "not-found").await;
    bare_host(&app, "host-9").await;
    let r = preflight(&app, "web", json!({"host": "host-9"})).await;
    assert_problem(r, StatusCode::CONFLICT, "conflict").await;
}

#[sqlx::test(migrations = "./migrations")]
async fn without_an_apic_its_endpoints_answer_503_and_hosts_show_configured_uplinks(db: PgPool) {
    let app = spawn_app(db).await;
    let r = app.get(&app.viewer, "/api/v1/fabric").await;
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "apic-not-configured").await;
    let r = app
        .post(&app.operator, "/api/v1/fabric/refresh", &json!({}))
        .await;
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "apic-not-configured").await;
    let r = preflight(&app, "web", json!({"paths": [VPC]})).await;
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "apic-not-configured").await;

    let r = app
        .put(
            &app.admin,
            "/api/v1/hosts/host-1",
            &json!({"agent_url": "http://h:9180", "backend": "ovs", "uplinks": [
                {"interface": "eth0", "path_dn": VPC}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let host = app.get_json(&app.viewer, "/api/v1/hosts/host-1").await;
    assert_eq!(
        host["effective_uplinks"],
        json!({"uplinks": [{"path": VPC, "interfaces": ["eth0"], "source": "configured"}],
               "agreement": {"state": "configured_only"}, "lldp_fetched_at": null})
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn apic_failures_are_problems_that_never_show_the_password(db: PgPool) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let secret = "wrong-pw-never-shown-7f3a";
    let app = spawn_with_apic(db.clone(), apic_settings(&sim.url, secret)).await;
    let r = app.get(&app.viewer, "/api/v1/fabric").await;
    let p = assert_problem(r, StatusCode::BAD_GATEWAY, "apic-auth-failed").await;
    assert!(!p.to_string().contains(secret), "{p}");
}

#[sqlx::test(migrations = "./migrations")]
async fn an_unreachable_apic_is_a_503_apic_unavailable(db: PgPool) {
    let secret = "pw-never-shown-unreachable";
    // Nothing listens on port 1.
    let app = spawn_with_apic(db, apic_settings("http://127.0.0.1:1", secret)).await;
    let r = app
        .post(&app.operator, "/api/v1/fabric/refresh", &json!({}))
        .await;
    let p = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "apic-unavailable").await;
    assert!(!p.to_string().contains(secret), "{p}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_busy_apic_leaves_the_last_snapshot_in_use_but_refresh_reports_it(db: PgPool) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let mut settings = apic_settings(&sim.url, "password");
    settings.discovery_ttl = std::time::Duration::ZERO;
    let app = spawn_with_apic(db, settings).await;
    let first = app.get_json(&app.viewer, "/api/v1/fabric").await;

    // Every APIC request now gets nginx's overload page.
    sim.set_faults(apic_sim::FaultConfig {
        overload_rate: 1.0,
        ..Default::default()
    });
    let served = app.get_json(&app.viewer, "/api/v1/fabric").await;
    assert_eq!(
        served["fetched_at"], first["fetched_at"],
        "the older snapshot, dated"
    );
    let r = app
        .post(&app.operator, "/api/v1/fabric/refresh", &json!({}))
        .await;
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "apic-unavailable").await;
}

#[sqlx::test(migrations = "./migrations")]
async fn after_a_failed_re_read_the_apic_is_left_alone_for_a_while(db: PgPool) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let mut settings = apic_settings(&sim.url, "password");
    settings.discovery_ttl = std::time::Duration::from_secs(1);
    let app = spawn_with_apic(db, settings).await;
    let first = app.get_json(&app.viewer, "/api/v1/fabric").await;
    sim.set_faults(apic_sim::FaultConfig {
        overload_rate: 1.0,
        ..Default::default()
    });
    let before = sim.count("class_get");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // past the TTL
    let served = app.get_json(&app.viewer, "/api/v1/fabric").await;
    assert_eq!(served["fetched_at"], first["fetched_at"]);
    let asked = sim.count("class_get");
    assert!(asked > before, "the expired snapshot was re-read");
    // Within the retry wait every request gets the previous snapshot at once.
    for _ in 0..3 {
        let again = app.get_json(&app.viewer, "/api/v1/fabric").await;
        assert_eq!(again["fetched_at"], first["fetched_at"]);
    }
    assert_eq!(
        sim.count("class_get"),
        asked,
        "the APIC was not asked again"
    );
    // Once the APIC answers and the wait is over, the fabric is read again.
    sim.set_faults(apic_sim::FaultConfig::default());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let fresh = app.get_json(&app.viewer, "/api/v1/fabric").await;
    assert_ne!(fresh["fetched_at"], first["fetched_at"]);
}
