//! Allocation under concurrency, within one app instance and across replicas on one database.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::helpers::{
    assert_problem, epg_body, hold_subnet_locks, spawn_app, spawn_replica, wait_for_lock_waiters,
    wide_pool, TestApp,
};

async fn put_epg(app: &TestApp, name: String, pool: &str, i: usize) -> Value {
    let body = epg_body(
        pool,
        &format!("10.{}.{}.0/24", i / 256, i % 256),
        &format!("10.{}.{}.1", i / 256, i % 256),
    );
    let r = app
        .put(&app.operator, &format!("/api/v1/epgs/t/ap/{name}"), &body)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{name}");
    r.json().await.unwrap()
}

async fn reserve(app: &TestApp, epg: &str, i: usize) -> reqwest::Response {
    app.put(
        &app.operator,
        &format!("/api/v1/epgs/t/ap/{epg}/reservations/r{i}"),
        &json!({}),
    )
    .await
}

#[sqlx::test(migrations = "./migrations")]
async fn fifty_parallel_epg_creates_get_fifty_distinct_vlans(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 149).await;
    let epgs = join_all((0..50).map(|i| put_epg(&app, format!("e{i}"), "p", i))).await;
    let vlans: HashSet<u64> = epgs.iter().map(|e| e["vlan"].as_u64().unwrap()).collect();
    assert_eq!(vlans.len(), 50);
    assert!(vlans.iter().all(|v| (100..=149).contains(v)));
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/one-more",
            &epg_body("p", "10.99.0.0/24", "10.99.0.1"),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "pool-exhausted").await;
}

#[sqlx::test(migrations = "./migrations")]
async fn two_hundred_fifty_parallel_reservations_fill_a_slash_24_and_the_next_is_refused(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    // A /24 has 254 host addresses; minus the gateway and three reserved ones leaves 250.
    let mut body = epg_body("p", "192.168.7.0/24", "192.168.7.1");
    body["subnets"][0]["reserved"] = json!([{"first": "192.168.7.100", "last": "192.168.7.102"}]);
    assert_eq!(
        app.put(&app.operator, "/api/v1/epgs/t/ap/a", &body)
            .await
            .status(),
        StatusCode::CREATED
    );

    let responses = join_all((0..250).map(|i| reserve(&app, "a", i))).await;
    let mut addresses = HashSet::new();
    for r in responses {
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        let a: Ipv4Addr = v["address"].as_str().unwrap().parse().unwrap();
        let last = a.octets()[3];
        assert_eq!(&a.octets()[..3], &[192, 168, 7]);
        assert!(
            last != 0 && last != 1 && last != 255 && !(100..=102).contains(&last),
            "{a} handed out"
        );
        assert!(addresses.insert(a), "{a} handed out twice");
    }
    assert_eq!(addresses.len(), 250);
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/a/reservations/r250",
            &json!({}),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "pool-exhausted").await;
}

/// Two app instances with their own connection pools (as two replicas would be) on one database.
#[sqlx::test(migrations = "./migrations")]
async fn two_replicas_hammering_one_pool_never_collide(
    opts: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let db1 = opts.clone().connect_with(connect.clone()).await.unwrap();
    let db2 = PgPoolOptions::new()
        .max_connections(5)
        .connect_with(connect)
        .await
        .unwrap();
    let a = spawn_app(db1).await;
    let b = spawn_replica(db2, &a).await;
    a.pool("p", 200, 240).await;
    let shared = a.epg("shared", "p", "172.16.0.0/24", "172.16.0.1").await;

    // 40 EPGs (the rest of the pool) and 200 reservations, alternating between the replicas.
    let epgs = join_all((0..40).map(|i| {
        put_epg(
            if i % 2 == 0 { &a } else { &b },
            format!("e{i}"),
            "p",
            i + 1,
        )
    }))
    .await;
    let mut vlans: HashSet<u64> = epgs.iter().map(|e| e["vlan"].as_u64().unwrap()).collect();
    assert!(vlans.insert(shared["vlan"].as_u64().unwrap()));
    assert_eq!(vlans.len(), 41);
    let leases =
        join_all((0..200).map(|i| reserve(if i % 2 == 0 { &a } else { &b }, "shared", i))).await;
    let mut addresses = HashSet::new();
    for r in leases {
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        assert!(addresses.insert(v["address"].as_str().unwrap().to_owned()));
    }
    assert_eq!(addresses.len(), 200);
}

#[sqlx::test(migrations = "./migrations")]
async fn parallel_puts_of_one_reservation_name_all_get_the_same_single_address(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    let url = "/api/v1/epgs/t/ap/a/reservations/same";
    let body = json!({});
    let responses = join_all((0..20).map(|_| app.put(&app.operator, url, &body))).await;
    let mut addresses = HashSet::new();
    for r in responses {
        assert!(r.status().is_success(), "{}", r.status());
        let v: Value = r.json().await.unwrap();
        addresses.insert(v["address"].as_str().unwrap().to_owned());
    }
    assert_eq!(addresses.len(), 1);
    let (leases,): (i64,) = sqlx::query_as("SELECT count(*) FROM ip_leases")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(leases, 1);
}

#[sqlx::test(migrations = "./migrations")]
async fn twenty_identical_reservation_puts_create_it_once_with_one_audit_entry(
    _opts: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let db = wide_pool(connect, 20).await;
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    let url = "/api/v1/epgs/t/ap/a/reservations/same";
    let body = json!({});
    // All twenty have looked for the reservation, and found none, before the first creates it.
    let lock = hold_subnet_locks(&db, "a").await;
    let (responses, ()) = tokio::join!(
        join_all((0..20).map(|_| app.put(&app.operator, url, &body))),
        async {
            wait_for_lock_waiters(&db, 20).await;
            lock.rollback().await.unwrap();
        }
    );
    let mut created = 0;
    let mut addresses = HashSet::new();
    for r in responses {
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            s => panic!("unexpected {s}"),
        }
        let v: Value = r.json().await.unwrap();
        addresses.insert(v["address"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1, "exactly one PUT creates the reservation");
    assert_eq!(addresses.len(), 1);
    let (leases, audited): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ip_leases),
                (SELECT count(*) FROM audit_log WHERE action = 'reservation.put')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((leases, audited), (1, 1));
}

#[sqlx::test(migrations = "./migrations")]
async fn reservation_puts_racing_an_epg_delete_answer_404_once_it_is_gone(
    _opts: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let db = wide_pool(connect, 21).await;
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    // The DELETE queues for the EPG's subnets first, twenty reservation PUTs that found the EPG
    // behind it; the DELETE wins, and they find it gone.
    let lock = hold_subnet_locks(&db, "a").await;
    let (deleted, puts, ()) = tokio::join!(
        app.delete(&app.operator, "/api/v1/epgs/t/ap/a"),
        async {
            wait_for_lock_waiters(&db, 1).await;
            join_all((0..20).map(|i| reserve(&app, "a", i))).await
        },
        async {
            wait_for_lock_waiters(&db, 21).await;
            lock.rollback().await.unwrap();
        }
    );
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    for r in puts {
        assert_problem(r, StatusCode::NOT_FOUND, "not-found").await;
    }
    // Nothing of the EPG is left but its VLAN in quarantine, and no reservation was recorded.
    let r = app.get(&app.viewer, "/api/v1/epgs/t/ap/a").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let pool = app.get_json(&app.viewer, "/api/v1/vlan-pools/p").await;
    assert_eq!(pool["usage"]["allocated"], 0);
    assert_eq!(pool["usage"]["quarantined"], 1);
    let (rows, audited): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM epgs) + (SELECT count(*) FROM subnets) + (SELECT count(*) FROM ip_leases),
                (SELECT count(*) FROM audit_log WHERE action = 'reservation.put')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((rows, audited), (0, 0));
}
