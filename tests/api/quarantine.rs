//! Quarantine holds across every path by which a released VLAN or address could come back
//! (issue 8, 3.1): the owner of a quarantined value being deleted and re-created must not hand
//! it out early.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{epg_body, spawn_app, TestApp};

const EPG: &str = "/api/v1/epgs/t/ap/a";

async fn reserve(app: &TestApp, name: &str) -> Value {
    let r = app
        .put(
            &app.operator,
            &format!("{EPG}/reservations/{name}"),
            &json!({}),
        )
        .await;
    assert!(
        r.status().is_success(),
        "reserve: {}",
        r.text().await.unwrap()
    );
    r.json().await.unwrap()
}

async fn put_epg(app: &TestApp, body: &Value) {
    let r = app.put(&app.operator, EPG, body).await;
    assert!(r.status().is_success(), "epg: {}", r.text().await.unwrap());
}

async fn put_pool(app: &TestApp, first: u16, last: u16) {
    let r = app
        .put(
            &app.admin,
            "/api/v1/vlan-pools/p",
            &json!({"ranges": [{"first": first, "last": last}]}),
        )
        .await;
    assert!(r.status().is_success(), "pool: {}", r.text().await.unwrap());
}

/// Pool `p` of VLANs 500-501, with 500 quarantined after EPG `a` that held it was deleted.
async fn quarantine_vlan_500(app: &TestApp) {
    put_pool(app, 500, 501).await;
    assert_eq!(
        app.epg("a", "p", "10.0.0.0/29", "10.0.0.1").await["vlan"],
        500
    );
    app.delete_ok(&app.operator, EPG).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_deleted_and_recreated_epg_does_not_hand_out_a_quarantined_address(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/29", "10.0.0.1").await;
    assert_eq!(reserve(&app, "x").await["address"], "10.0.0.2");
    app.delete_ok(&app.operator, &format!("{EPG}/reservations/x"))
        .await;
    app.delete_ok(&app.operator, EPG).await;
    app.epg("a", "p", "10.0.0.0/29", "10.0.0.1").await;
    assert_eq!(reserve(&app, "y").await["address"], "10.0.0.3");
    // The name that held it gets its own address back, as before the EPG was deleted.
    assert_eq!(reserve(&app, "x").await["address"], "10.0.0.2");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_subnet_dropped_and_put_back_keeps_its_quarantined_address(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    let mut both = epg_body("p", "10.0.0.0/29", "10.0.0.1");
    both["subnets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cidr": "10.0.1.0/29", "gateway": "10.0.1.1", "reserved": []}));
    put_epg(&app, &both).await;
    assert_eq!(reserve(&app, "x").await["address"], "10.0.0.2");
    app.delete_ok(&app.operator, &format!("{EPG}/reservations/x"))
        .await;
    put_epg(&app, &epg_body("p", "10.0.1.0/29", "10.0.1.1")).await;
    put_epg(&app, &both).await;
    assert_eq!(reserve(&app, "y").await["address"], "10.0.0.3");
}

#[sqlx::test(migrations = "./migrations")]
async fn pool_ranges_shrunk_and_restored_keep_a_quarantined_vlan(db: PgPool) {
    let app = spawn_app(db).await;
    quarantine_vlan_500(&app).await;
    put_pool(&app, 501, 501).await;
    put_pool(&app, 500, 501).await;
    let pool = app.get_json(&app.viewer, "/api/v1/vlan-pools/p").await;
    assert_eq!(pool["usage"]["quarantined"], 1);
    assert_eq!(
        app.epg("b", "p", "10.0.1.0/29", "10.0.1.1").await["vlan"],
        501
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_pool_deleted_and_recreated_keeps_its_quarantined_vlan(db: PgPool) {
    let app = spawn_app(db).await;
    quarantine_vlan_500(&app).await;
    app.delete_and_check_gone(&app.admin, "/api/v1/vlan-pools/p")
        .await;
    put_pool(&app, 500, 501).await;
    assert_eq!(
        app.epg("b", "p", "10.0.1.0/29", "10.0.1.1").await["vlan"],
        501
    );
    // All of the pool is now allocated or quarantined.
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/c",
            &epg_body("p", "10.0.2.0/29", "10.0.2.1"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
}
