//! The reconciler: a pass finds what drifted on the APIC and on a real weft-agent and repairs
//! it (or reports what it must not touch); one replica leads and another takes over.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use weft::startup::Application;
use weft::workflow::reconcile::Settings;

use crate::e2e::{agent_bin, attach, register, sh, weft, Host};
use crate::helpers::{json_ok, TestApp};

const EPG_DN: &str = "uni/tn-t/ap-ap/epg-web";

/// Weft with apic-sim and host-1 registered (a real agent in a netns); None, after a loud
/// SKIPPED, without root or the agent binary.
async fn weft_and_host(db: &PgPool, test: &str) -> Option<(TestApp, apic_sim::SimHandle, Host)> {
    let bin = agent_bin(test)?;
    let (app, sim) = weft(db.clone()).await;
    let host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;
    Some((app, sim, host))
}

fn binding_dn(port: &str) -> String {
    format!("{EPG_DN}/rspathAtt-[topology/pod-1/paths-101/pathep-[{port}]]")
}

async fn reconcile(app: &TestApp) -> Value {
    json_ok(
        app.post(&app.operator, "/api/v1/reconcile", &json!({}))
            .await,
    )
    .await
}

/// The report's item about `object`, if any.
fn item<'a>(report: &'a Value, object: &str) -> Option<&'a Value> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["object"] == object)
}

/// Puts a binding of EPG web on leaf 101's `port` on apic-sim out of band.
fn inject_binding(sim: &apic_sim::SimHandle, port: &str, annotation: Option<&str>) {
    let mut attrs = json!({"tDn": format!("topology/pod-1/paths-101/pathep-[{port}]"),
                           "encap": "vlan-150", "mode": "untagged"});
    if let Some(a) = annotation {
        attrs["annotation"] = json!(a);
    }
    sim.inject(EPG_DN, &json!({"fvRsPathAtt": {"attributes": attrs}}))
        .unwrap();
}

#[sqlx::test(migrations = "./migrations")]
async fn a_pass_repairs_bindings_interfaces_and_leftovers_and_leaves_foreign_objects_alone(
    db: PgPool,
) {
    let Some((app, sim, mut host)) = weft_and_host(&db, "reconcile repairs").await else {
        return;
    };
    let c0 = host.container();
    let id = Uuid::new_v4();
    assert_eq!(attach(&app, id, &c0).await["state"], "attached");

    let clean = reconcile(&app).await;
    assert_eq!(clean["counters"]["found"], 0, "{clean}");
    assert_eq!(clean["checked"]["bindings"], 1, "{clean}");
    assert_eq!(clean["checked"]["attachments"], 1, "{clean}");
    assert_eq!(clean["checked"]["hosts"], 1, "{clean}");

    // Drift on every side: Weft's binding deleted in the APIC GUI, a binding of Weft's that
    // nothing wants, a hand-made one (not Weft's), the agent forgetting the interface, and an
    // interface of an attachment that does not exist.
    let weft_dn = binding_dn("eth1/1");
    assert!(sim.remove(&weft_dn));
    inject_binding(&sim, "eth1/2", Some("orchestrator:weft"));
    inject_binding(&sim, "eth1/3", None);
    let foreign = sim.get(&binding_dn("eth1/3")).unwrap();
    let agent = host.client();
    agent.remove_attachment(id).await.unwrap();
    let leftover = Uuid::new_v4();
    let c1 = host.container();
    let spec = serde_json::from_value(json!({"target": {"kind": "netns", "path": c1},
        "vlan": 150, "address": "10.50.0.99/24"}))
    .unwrap();
    agent.ensure_attachment(leftover, &spec).await.unwrap();

    let report = reconcile(&app).await;
    let expect = [
        (weft_dn.clone(), "binding", "missing on the APIC"),
        (
            binding_dn("eth1/2"),
            "binding",
            "Weft's binding, not wanted",
        ),
        (
            id.to_string(),
            "attachment",
            "the agent has no interface for it",
        ),
        (
            leftover.to_string(),
            "agent_leftover",
            "the agent has an interface of an attachment that does not exist",
        ),
    ];
    for (object, kind, drift) in &expect {
        let i = item(&report, object).unwrap_or_else(|| panic!("no item {object}: {report}"));
        assert_eq!(i["kind"], *kind, "{i}");
        assert_eq!(i["drift"], *drift, "{i}");
        assert_eq!(i["outcome"], "repaired", "{i}");
    }
    assert!(item(&report, &binding_dn("eth1/3")).is_none(), "{report}");
    assert_eq!(
        report["counters"],
        json!({"found": 4, "repaired": 4, "failed": 0, "conflicts": 0})
    );
    let missing = item(&report, &weft_dn).unwrap();
    assert_eq!(
        missing["desired"],
        json!({"encap": "vlan-150", "mode": "untagged", "immediacy": "lazy"})
    );
    assert_eq!(missing["apic"], Value::Null);

    // The APIC: Weft's binding back with its annotation, the orphan gone, the foreign one as
    // it was.
    let back = sim.get(&weft_dn).unwrap().to_string();
    assert!(back.contains("orchestrator:weft"), "{back}");
    assert!(sim.get(&binding_dn("eth1/2")).is_none());
    assert_eq!(sim.get(&binding_dn("eth1/3")).unwrap(), foreign);
    // The host: the interface back with its address and MAC, the leftover gone.
    let state = agent.state().await.unwrap();
    assert_eq!(state.attachments.len(), 1, "{state:?}");
    assert!(state.attachments[0].actual.wired, "{state:?}");
    assert!(state.unclaimed.is_empty(), "{state:?}");
    let ns = c0.trim_start_matches("/run/netns/");
    let link = sh(&format!(
        "ip -n {ns} -o -4 addr show dev eth0; ip -n {ns} -o link show dev eth0"
    ));
    assert!(
        link.contains("10.50.0.2/24") && link.contains("02:57:0a:32:00:02"),
        "{link}"
    );

    // Every repair is in the audit log with the pass as its cause.
    let run = report["id"].as_str().unwrap();
    let audit = app
        .get_json(
            &app.viewer,
            &format!("/api/v1/audit?request_id=reconcile:{run}"),
        )
        .await;
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{audit}");
    assert!(
        entries.iter().all(|e| e["actor"] == "reconciler"),
        "{audit}"
    );

    // The report is kept: last, by id, and in the history (newest first, without items).
    let last = app.get_json(&app.viewer, "/api/v1/reconcile/last").await;
    assert_eq!(last, report);
    let by_id = app
        .get_json(&app.viewer, &format!("/api/v1/reconcile/runs/{run}"))
        .await;
    assert_eq!(by_id, report);
    let runs = app.get_json(&app.viewer, "/api/v1/reconcile/runs").await;
    let runs = runs["items"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], report["id"]);
    assert_eq!(runs[0]["counters"]["repaired"], 4);
    assert_eq!(runs[1]["id"], clean["id"]);

    let after = reconcile(&app).await;
    assert_eq!(after["counters"]["found"], 0, "{after}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_foreign_binding_on_weft_s_path_is_a_conflict_and_a_gone_container_is_lost(db: PgPool) {
    let Some((app, sim, mut host)) = weft_and_host(&db, "reconcile conflict and lost").await else {
        return;
    };
    let c0 = host.container();
    let id = Uuid::new_v4();
    assert_eq!(attach(&app, id, &c0).await["state"], "attached");

    // Somebody replaced Weft's binding by a hand-made one on the same path.
    let weft_dn = binding_dn("eth1/1");
    assert!(sim.remove(&weft_dn));
    inject_binding(&sim, "eth1/1", None);
    let theirs = sim.get(&weft_dn).unwrap();
    // And the container is gone (its namespace deleted).
    sh(&format!(
        "ip netns del {}",
        c0.trim_start_matches("/run/netns/")
    ));

    let report = reconcile(&app).await;
    let conflict = item(&report, &weft_dn).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(conflict["outcome"], "conflict", "{conflict}");
    assert_eq!(conflict["apic"]["weft"], false, "{conflict}");
    assert_eq!(sim.get(&weft_dn).unwrap(), theirs, "left as it was");
    let lost = item(&report, &id.to_string()).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(lost["drift"], "the container is gone", "{lost}");
    assert_eq!(lost["outcome"], "repaired", "{lost}");
    let a = app
        .get_json(&app.viewer, &format!("/api/v1/attachments/{id}"))
        .await;
    assert_eq!(a["state"], "lost", "{a}");
    assert_eq!(a["container_status"], "gone", "{a}");
    assert_eq!(
        report["counters"],
        json!({"found": 2, "repaired": 1, "failed": 0, "conflicts": 1})
    );
    let run = report["id"].as_str().unwrap();
    let audit = app
        .get_json(
            &app.viewer,
            &format!("/api/v1/audit?request_id=reconcile:{run}"),
        )
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["attachment.reconcile_lost"], "{audit}");
}

/// A replica with a one-second reconcile interval, sharing `tokens`' tokens (or making its own).
async fn replica(db: &PgPool, tokens: Option<&TestApp>) -> TestApp {
    let app = Application::bind(
        "127.0.0.1:0".parse().unwrap(),
        db.clone(),
        crate::helpers::LONG,
        None,
    )
    .await
    .unwrap()
    .with_reconcile(Settings {
        interval: Duration::from_secs(1),
        ..Settings::default()
    });
    match tokens {
        None => crate::helpers::serve_with_tokens(app, db.clone()).await,
        Some(other) => {
            let mut app = crate::helpers::serve(app);
            app.operator = other.operator.clone();
            app.viewer = other.viewer.clone();
            app
        }
    }
}

/// The replica of the latest timed pass, once there is one after `after` (a run id).
async fn next_timer_replica(db: &PgPool, after: i64) -> Option<(i64, String)> {
    sqlx::query_as(
        "SELECT seq, replica::text FROM reconcile_runs WHERE trigger = 'timer' AND seq > $1
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(after)
    .fetch_optional(db)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "./migrations")]
async fn one_replica_leads_and_another_takes_over_when_its_connection_dies(db: PgPool) {
    let a = replica(&db, None).await;
    let b = replica(&db, Some(&a)).await;
    let id_a = reconcile(&a).await["replica"].as_str().unwrap().to_owned();
    let id_b = reconcile(&b).await["replica"].as_str().unwrap().to_owned();
    assert_ne!(id_a, id_b);

    let mut leader = None;
    for _ in 0..100 {
        leader = next_timer_replica(&db, 0).await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (seq, first) = leader.expect("a timed pass within ten seconds");
    assert!(first == id_a || first == id_b);
    // Only the leader runs timed passes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (timers, replicas): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT replica) FROM reconcile_runs WHERE trigger = 'timer'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(timers >= 2, "{timers}");
    assert_eq!(replicas, 1);

    // The leader's database connection dies (again whenever it gets the lead back): the other
    // replica leads.
    let other = if first == id_a { &id_b } else { &id_a };
    let mut took_over = false;
    for _ in 0..100 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(format!("weft-reconcile-leader {first}"))
        .execute(&db)
        .await
        .unwrap();
        if let Some((_, r)) = next_timer_replica(&db, seq).await {
            if &r == other {
                took_over = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(took_over, "{other} never led");
    let r = a.post(&a.operator, "/api/v1/reconcile", &json!({})).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "any replica still runs a pass on request"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn passes_during_concurrent_attaches_leave_them_alone(db: PgPool) {
    let Some((app, sim, mut host)) = weft_and_host(&db, "reconcile during attaches").await else {
        return;
    };
    let containers: Vec<String> = (0..6).map(|_| host.container()).collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let passes = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            let mut reports = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                reports.push(reconcile(&app).await);
            }
            reports.push(reconcile(&app).await);
            reports
        })
    };
    let attaches = containers.iter().map(|c| {
        let app = &app;
        async move { attach(app, Uuid::new_v4(), c).await }
    });
    for a in futures::future::join_all(attaches).await {
        assert_eq!(a["state"], "attached", "{a}");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let reports = passes.await.unwrap();
    assert!(reports.len() >= 2, "{}", reports.len());
    for r in &reports {
        assert_eq!(r["counters"]["repaired"], 0, "{r}");
        assert_eq!(r["counters"]["failed"], 0, "{r}");
    }
    assert_eq!(reports.last().unwrap()["counters"]["found"], 0);
    assert!(sim.get(&binding_dn("eth1/1")).is_some());
    let state = host.client().state().await.unwrap();
    assert_eq!(state.attachments.len(), 6);
    assert!(
        state.attachments.iter().all(|a| a.actual.wired),
        "{state:?}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_wrong_encap_is_corrected_and_faults_and_vlans_outside_the_domain_are_reported(
    db: PgPool,
) {
    let Some((app, sim, mut host)) = weft_and_host(&db, "reconcile encap, faults, pools").await
    else {
        return;
    };
    let c0 = host.container();
    assert_eq!(attach(&app, Uuid::new_v4(), &c0).await["state"], "attached");
    let weft_dn = binding_dn("eth1/1");

    // Somebody changed the VLAN of Weft's binding; Weft's pool grew past the domain's block.
    sim.inject(
        EPG_DN,
        &json!({"fvRsPathAtt": {"attributes": {"tDn": "topology/pod-1/paths-101/pathep-[eth1/1]",
            "encap": "vlan-151"}}}),
    )
    .unwrap();
    let r = app
        .put(
            &app.admin,
            "/api/v1/vlan-pools/p",
            &json!({"ranges": [{"first": 100, "last": 299}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let report = reconcile(&app).await;
    let wrong = item(&report, &weft_dn).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(wrong["drift"], "wrong encap or mode on the APIC", "{wrong}");
    assert_eq!(wrong["apic"]["encap"], "vlan-151", "{wrong}");
    assert_eq!(wrong["outcome"], "repaired", "{wrong}");
    assert!(sim.get(&weft_dn).unwrap().to_string().contains("vlan-150"));
    let pool = item(&report, "p").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(pool["kind"], "vlan_pool");
    assert_eq!(
        pool["drift"],
        "VLANs 200-299 are not in physical domain weft_phys's blocks"
    );
    assert_eq!(pool["outcome"], "reported");

    // The domain loses its block: the APIC faults Weft's binding (F0467 invalid-vlan); the
    // fault is shown on the binding until the block is back.
    let block = "uni/infra/vlanns-[weft_pool]-static/from-[vlan-100]-to-[vlan-199]";
    assert!(sim.remove(block));
    let report = reconcile(&app).await;
    let faulted = item(&report, &weft_dn).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(faulted["drift"], "faulted on the APIC", "{faulted}");
    assert!(
        faulted["reason"].as_str().unwrap().starts_with("F0467"),
        "{faulted}"
    );
    let pool = item(&report, "p").unwrap();
    assert_eq!(
        pool["drift"],
        "VLANs 100-299 are not in physical domain weft_phys's blocks"
    );
    let bindings = app.get_json(&app.viewer, "/api/v1/bindings").await;
    assert_eq!(bindings["items"][0]["apic_state"], "faulted", "{bindings}");
    assert!(
        bindings["items"][0]["last_fault"]
            .as_str()
            .unwrap()
            .contains("invalid-vlan"),
        "{bindings}"
    );
    sim.inject(
        "uni/infra/vlanns-[weft_pool]-static",
        &json!({"fvnsEncapBlk": {"attributes": {"from": "vlan-100", "to": "vlan-299"}}}),
    )
    .unwrap();
    let report = reconcile(&app).await;
    assert_eq!(report["counters"]["found"], 0, "{report}");
    let bindings = app.get_json(&app.viewer, "/api/v1/bindings").await;
    assert_eq!(bindings["items"][0]["apic_state"], "applied", "{bindings}");
    assert_eq!(
        bindings["items"][0]["last_fault"],
        Value::Null,
        "{bindings}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_segment_deleted_behind_the_agent_s_back_is_rebuilt_and_the_container_reaches_the_gateway(
    db: PgPool,
) {
    let Some((app, _sim, mut host)) = weft_and_host(&db, "reconcile segment").await else {
        return;
    };
    let c0 = host.container();
    assert_eq!(attach(&app, Uuid::new_v4(), &c0).await["state"], "attached");
    let ns = c0.trim_start_matches("/run/netns/");
    sh(&format!("ip netns exec {ns} ping -c 1 -W 2 10.50.0.1"));

    sh(&format!("ip -n {} link del wbr150", host.ns));
    let report = reconcile(&app).await;
    let segment = item(&report, "host-1/vlan-150").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(segment["kind"], "segment", "{segment}");
    assert_eq!(segment["outcome"], "repaired", "{segment}");
    assert_eq!(report["counters"]["failed"], 0, "{report}");
    sh(&format!("ip netns exec {ns} ping -c 1 -W 2 10.50.0.1"));
    let again = reconcile(&app).await;
    assert_eq!(again["counters"]["found"], 0, "{again}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_pool_following_a_domain_takes_its_blocks_unless_an_epg_s_vlan_would_fall_outside(
    db: PgPool,
) {
    let (app, sim) = crate::helpers::spawn_with_sim(db).await;
    let r = app
        .put(
            &app.admin,
            "/api/v1/vlan-pools/f",
            &json!({"ranges": [{"first": 300, "last": 310}], "follow_domain": "weft_phys"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["follow_domain"], "weft_phys");

    let report = reconcile(&app).await;
    let pool = item(&report, "f").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(pool["outcome"], "repaired", "{pool}");
    let got = app.get_json(&app.viewer, "/api/v1/vlan-pools/f").await;
    assert_eq!(got["ranges"], json!([{"first": 100, "last": 199}]), "{got}");
    let run = report["id"].as_str().unwrap();
    let audit = app
        .get_json(
            &app.viewer,
            &format!("/api/v1/audit?request_id=reconcile:{run}"),
        )
        .await;
    assert_eq!(
        audit["items"][0]["action"], "vlan-pool.follow_domain",
        "{audit}"
    );
    assert_eq!(reconcile(&app).await["counters"]["found"], 0);

    // An EPG holds VLAN 150; the domain's block shrinks below it: the pool keeps its ranges.
    let mut epg = crate::helpers::epg_body("f", "10.9.0.0/24", "10.9.0.1");
    epg["physical_domain"] = json!("weft_phys");
    epg["requested_vlan"] = json!(150);
    let r = app.put(&app.operator, "/api/v1/epgs/t/ap/e", &epg).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(sim.remove("uni/infra/vlanns-[weft_pool]-static/from-[vlan-100]-to-[vlan-199]"));
    sim.inject(
        "uni/infra/vlanns-[weft_pool]-static",
        &json!({"fvnsEncapBlk": {"attributes": {"from": "vlan-100", "to": "vlan-120"}}}),
    )
    .unwrap();
    let report = reconcile(&app).await;
    let failed = item(&report, "f").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("[150]"),
        "{failed}"
    );
    let got = app.get_json(&app.viewer, "/api/v1/vlan-pools/f").await;
    assert_eq!(got["ranges"], json!([{"first": 100, "last": 199}]), "{got}");
}
