use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{assert_problem, epg_body, spawn_app, spawn_with, TestApp, NONE};

#[sqlx::test(migrations = "./migrations")]
async fn an_epg_gets_the_lowest_free_vlan_and_keeps_it_across_updates(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 110).await;
    let a = app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    assert_eq!(a["vlan"], 100);
    assert_eq!(a["encap"], "vlan-100");
    assert_eq!(a["dn"], "uni/tn-t/ap-ap/epg-a");
    assert_eq!(a["mode"], "regular");
    assert_eq!(a["immediacy"], "lazy");

    let mut body = epg_body("p", "10.0.0.0/24", "10.0.0.1");
    body["mode"] = json!("untagged");
    body["immediacy"] = json!("immediate");
    body["managed"] = json!(true);
    let r = app.put(&app.operator, "/api/v1/epgs/t/ap/a", &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["vlan"], 100, "VLAN must be stable across updates");
    assert_eq!(updated["mode"], "untagged");
    assert_eq!(updated["managed"], true);

    let again: Value = app
        .put(&app.operator, "/api/v1/epgs/t/ap/a", &body)
        .await
        .json()
        .await
        .unwrap();
    let got: Value = app.get_json(&app.viewer, "/api/v1/epgs/t/ap/a").await;
    assert_eq!(again, got, "GET returns what the PUT returned");
    for k in [
        "bridge_domain",
        "physical_domain",
        "vlan_pool",
        "subnets",
        "mode",
        "immediacy",
        "managed",
    ] {
        assert_eq!(got[k], body[k], "{k}");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_requested_vlan_is_used_when_free_otherwise_the_lowest_free(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 110).await;
    let mut body = epg_body("p", "10.0.0.0/24", "10.0.0.1");
    body["requested_vlan"] = json!(107);
    let a: Value = app
        .put(&app.operator, "/api/v1/epgs/t/ap/a", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["vlan"], 107);
    // Another subnet: EPGs on one bridge domain cannot share one.
    body["subnets"] = json!([{"cidr": "10.0.1.0/24", "gateway": "10.0.1.1", "reserved": []}]);
    let b: Value = app
        .put(&app.operator, "/api/v1/epgs/t/ap/b", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b["vlan"], 100);
    body["requested_vlan"] = json!(500);
    let r = app.put(&app.operator, "/api/v1/epgs/t/ap/c", &body).await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
}

#[sqlx::test(migrations = "./migrations")]
async fn an_exhausted_pool_is_a_clean_conflict(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    app.epg("b", "p", "10.0.1.0/24", "10.0.1.1").await;
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/c",
            &epg_body("p", "10.0.2.0/24", "10.0.2.1"),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "pool-exhausted").await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM epgs")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 2, "the refused EPG must not be stored");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_released_vlan_stays_quarantined(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/a").await;
    let b = app.epg("b", "p", "10.0.1.0/24", "10.0.1.1").await;
    assert_eq!(b["vlan"], 101, "VLAN 100 is quarantined");
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/c",
            &epg_body("p", "10.0.2.0/24", "10.0.2.1"),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "pool-exhausted").await;
    // The same EPG coming back takes its own VLAN out of quarantine.
    let a = app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    assert_eq!(a["vlan"], 100);
}

#[sqlx::test(migrations = "./migrations")]
async fn without_quarantine_a_released_vlan_is_reused(db: PgPool) {
    let app = spawn_with(db, NONE).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/a").await;
    let b = app.epg("b", "p", "10.0.1.0/24", "10.0.1.1").await;
    assert_eq!(b["vlan"], 100);
}

/// Host `h1` with container `c1` attached to every EPG (as the attach workflow will record it).
async fn attach_a_container(app: &TestApp, db: &PgPool) {
    let host = json!({"agent_url": "http://h1:9180", "backend": "ovs"});
    let r = app.put(&app.admin, "/api/v1/hosts/h1", &host).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    sqlx::query(
        "INSERT INTO attachments (id, host_id, epg_id, container, target, state)
         SELECT gen_random_uuid(), h.id, e.id, 'c1', '{\"kind\": \"netns\", \"path\": \"/run/netns/c1\"}', 'attached'
         FROM hosts h, epgs e",
    )
    .execute(db)
    .await
    .unwrap();
}

#[sqlx::test(migrations = "./migrations")]
async fn deleting_an_epg_with_attachments_or_reservations_is_refused(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    attach_a_container(&app, &db).await;
    let r = app.delete(&app.operator, "/api/v1/epgs/t/ap/a").await;
    assert_problem(r, StatusCode::CONFLICT, "in-use").await;
    assert_problem(
        app.delete(&app.admin, "/api/v1/hosts/h1").await,
        StatusCode::CONFLICT,
        "in-use",
    )
    .await;
    sqlx::query("DELETE FROM attachments")
        .execute(&db)
        .await
        .unwrap();

    app.put(
        &app.operator,
        "/api/v1/epgs/t/ap/a/reservations/r1",
        &json!({}),
    )
    .await;
    let r = app.delete(&app.operator, "/api/v1/epgs/t/ap/a").await;
    assert_problem(r, StatusCode::CONFLICT, "in-use").await;
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/a/reservations/r1")
        .await;
    app.delete_and_check_gone(&app.operator, "/api/v1/epgs/t/ap/a")
        .await;
}

#[sqlx::test(migrations = "./migrations")]
async fn the_pool_of_an_epg_cannot_change_and_subnets_in_use_cannot_go(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    app.pool("q", 200, 201).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/a",
            &epg_body("q", "10.0.0.0/24", "10.0.0.1"),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "conflict").await;
    let res: Value = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/a/reservations/r1",
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["address"], "10.0.0.2");
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/a",
            &epg_body("p", "10.0.1.0/24", "10.0.1.1"),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "in-use").await;
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/a",
            &epg_body("p", "10.0.0.0/24", "10.0.0.2"),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "in-use").await;
    // Adding a second subnet keeps the first and its lease.
    let mut body = epg_body("p", "10.0.0.0/24", "10.0.0.1");
    body["subnets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}));
    let r = app.put(&app.operator, "/api/v1/epgs/t/ap/a", &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = app
        .get_json(&app.viewer, "/api/v1/epgs/t/ap/a/reservations/r1")
        .await;
    assert_eq!(got["address"], "10.0.0.2");
}

#[sqlx::test(migrations = "./migrations")]
async fn epgs_list_filters_by_tenant_and_pool(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 110).await;
    app.pool("q", 200, 210).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    app.epg("b", "q", "10.0.1.0/24", "10.0.1.1").await;
    app.put(
        &app.operator,
        "/api/v1/epgs/other/ap/c",
        &epg_body("p", "10.0.2.0/24", "10.0.2.1"),
    )
    .await;
    let names = |v: Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["epg"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(app.get_json(&app.viewer, "/api/v1/epgs?tenant=t").await),
        ["a", "b"]
    );
    assert_eq!(
        names(app.get_json(&app.viewer, "/api/v1/epgs?vlan_pool=p").await),
        ["a", "c"]
    );
    // Each listed EPG carries its own subnets, in declaration order.
    let two = json!({
        "bridge_domain": "bd1", "physical_domain": "phys1", "vlan_pool": "q",
        "subnets": [{"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"},
                    {"cidr": "10.0.9.0/24", "gateway": "10.0.9.1"}]
    });
    let r = app.put(&app.operator, "/api/v1/epgs/t/ap/b", &two).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = app.get_json(&app.viewer, "/api/v1/epgs?tenant=t").await;
    let cidrs = |i: usize| {
        page["items"][i]["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cidr"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(cidrs(0), ["10.0.0.0/24"]);
    assert_eq!(cidrs(1), ["10.0.1.0/24", "10.0.9.0/24"]);
    assert_eq!(
        names(
            app.get_json(&app.viewer, "/api/v1/epgs?tenant=t&vlan_pool=q")
                .await
        ),
        ["b"]
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn overlapping_subnets_are_refused_wherever_they_stand_in_the_list(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    let mut body = epg_body("p", "10.0.0.0/16", "10.0.0.1");
    body["subnets"] = json!([
        {"cidr": "10.0.0.0/16", "gateway": "10.0.0.1"},
        {"cidr": "10.1.0.0/24", "gateway": "10.1.0.1"},
        {"cidr": "10.2.0.0/24", "gateway": "10.2.0.1"},
        {"cidr": "10.0.5.0/24", "gateway": "10.0.5.1"}
    ]);
    let r = app.put(&app.operator, "/api/v1/epgs/t/ap/a", &body).await;
    let p = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("subnets 10.0.0.0/16 and 10.0.5.0/24 overlap"),
        "{p}"
    );
    body["subnets"][3] = json!({"cidr": "10.3.0.0/24", "gateway": "10.3.0.1"});
    let r = app.put(&app.operator, "/api/v1/epgs/t/ap/a", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_changed_requested_vlan_moves_the_epg_or_says_why_not(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.pool("p", 600, 610).await;
    assert_eq!(
        app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await["vlan"],
        600
    );
    assert_eq!(
        app.epg("b", "p", "10.0.1.0/24", "10.0.1.1").await["vlan"],
        601
    );
    let url = "/api/v1/epgs/t/ap/a";
    let put_vlan = |v: u16| {
        let mut body = epg_body("p", "10.0.0.0/24", "10.0.0.1");
        body["requested_vlan"] = json!(v);
        let app = &app;
        async move { app.put(&app.operator, url, &body).await }
    };

    // Free: the EPG moves, and its old VLAN goes into quarantine.
    let r = put_vlan(605).await;
    assert_eq!(r.status(), StatusCode::OK);
    let moved: Value = r.json().await.unwrap();
    assert_eq!(
        (moved["vlan"].clone(), moved["requested_vlan"].clone()),
        (json!(605), json!(605))
    );
    assert_eq!(app.get_json(&app.viewer, url).await, moved);
    let pool = app.get_json(&app.viewer, "/api/v1/vlan-pools/p").await;
    assert_eq!(pool["usage"]["allocated"], 2);
    assert_eq!(pool["usage"]["quarantined"], 1);

    // Held by another EPG, quarantined after another EPG, outside the pool: refused, unchanged.
    let held = assert_problem(put_vlan(601).await, StatusCode::CONFLICT, "conflict").await;
    assert!(
        held["detail"].as_str().unwrap().contains("t/ap/b"),
        "{held}"
    );
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/b").await;
    let q = assert_problem(put_vlan(601).await, StatusCode::CONFLICT, "conflict").await;
    assert!(q["detail"].as_str().unwrap().contains("quarantine"), "{q}");
    assert_problem(
        put_vlan(700).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-input",
    )
    .await;
    assert_eq!(app.get_json(&app.viewer, url).await, moved);

    // Its own VLAN from before is its to take back.
    let r = put_vlan(600).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["vlan"], 600);

    // An attachment pins the VLAN it uses.
    attach_a_container(&app, &db).await;
    let pinned = assert_problem(put_vlan(607).await, StatusCode::CONFLICT, "in-use").await;
    assert!(
        pinned["detail"].as_str().unwrap().contains("attachment"),
        "{pinned}"
    );
    assert_eq!(app.get_json(&app.viewer, url).await["vlan"], 600);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_subnet_belongs_to_its_bridge_domain_so_epgs_there_cannot_overlap(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 110).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    let with_bd = |tenant: &str, bd: &str, cidr: &str, gateway: &str| {
        let mut body = epg_body("p", cidr, gateway);
        body["bridge_domain"] = json!(bd);
        (format!("/api/v1/epgs/{tenant}/ap/b"), body)
    };

    // Same tenant and bridge domain: the same CIDR, or one inside it, is refused, naming `a`.
    for (cidr, gateway) in [("10.0.0.0/24", "10.0.0.1"), ("10.0.0.128/25", "10.0.0.129")] {
        let (url, body) = with_bd("t", "bd1", cidr, gateway);
        let p = assert_problem(
            app.put(&app.operator, &url, &body).await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("t/ap/a") && detail.contains("bd1"),
            "{detail}"
        );
        assert_eq!(
            app.get(&app.viewer, &url).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    // Another bridge domain, or another tenant's bridge domain of that name: another address space.
    let (url, on_bd2) = with_bd("t", "bd2", "10.0.0.0/24", "10.0.0.1");
    assert_eq!(
        app.put(&app.operator, &url, &on_bd2).await.status(),
        StatusCode::CREATED
    );
    let (url2, other_tenant) = with_bd("t2", "bd1", "10.0.0.0/24", "10.0.0.1");
    assert_eq!(
        app.put(&app.operator, &url2, &other_tenant).await.status(),
        StatusCode::CREATED
    );

    // Moving `t/ap/b` onto bd1 is refused too, and leaves it on bd2.
    let (_, to_bd1) = with_bd("t", "bd1", "10.0.0.0/24", "10.0.0.1");
    assert_problem(
        app.put(&app.operator, &url, &to_bd1).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(
        app.get_json(&app.viewer, &url).await["bridge_domain"],
        "bd2"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn parallel_epgs_with_one_subnet_on_one_bridge_domain_in_different_pools_one_wins(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    for i in 0..8 {
        app.pool(&format!("p{i}"), 100 + i, 100 + i).await;
    }
    // Different pools, so the pool lock does not serialize them: the bridge domain's lock must.
    let puts = futures::future::join_all((0..8).map(|i| {
        let body = epg_body(&format!("p{i}"), "10.5.0.0/24", "10.5.0.1");
        let app = &app;
        async move {
            app.put(&app.operator, &format!("/api/v1/epgs/t/ap/e{i}"), &body)
                .await
                .status()
        }
    }))
    .await;
    let created = puts.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = puts.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, refused), (1, 7), "{puts:?}");
}
