use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::spawn_app;

/// Fails when the committed openapi/weft.json differs from what the code generates; run
/// `cargo run -- openapi` and commit the result.
#[test]
fn committed_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/weft.json");
    let committed = std::fs::read_to_string(path).expect("openapi/weft.json exists");
    let generated = weft::openapi::document().unwrap();
    assert!(
        committed == generated,
        "openapi/weft.json is stale: run `cargo run -- openapi` and commit it"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn served_document_equals_the_committed_one(db: PgPool) {
    let app = spawn_app(db).await;
    let served: Value = app.openapi().await;
    let committed: Value = serde_json::from_str(&weft::openapi::document().unwrap()).unwrap();
    assert_eq!(served, committed);
    // Every API route is documented.
    let paths = served["paths"].as_object().unwrap();
    for p in [
        "/api/v1/vlan-pools/{name}",
        "/api/v1/epgs/{tenant}/{app}/{epg}",
        "/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}",
        "/api/v1/hosts/{name}",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
}
