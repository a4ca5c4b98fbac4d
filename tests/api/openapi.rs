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

/// What schemathesis (scripts/schemathesis.sh) found the document lacking, checked here too so
/// a plain `cargo nextest` catches a regression: the host's `effective_uplinks`, the limits the
/// server enforces, and pages that reference their items.
#[test]
fn the_document_states_what_the_server_enforces() {
    let doc: Value = serde_json::from_str(&weft::openapi::document().unwrap()).unwrap();
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Host"]["properties"]["effective_uplinks"].is_object());
    for (name, schema) in schemas.as_object().unwrap() {
        if let Some(item) = name.strip_prefix("Page_") {
            assert_eq!(
                schema["properties"]["items"]["items"]["$ref"],
                format!("#/components/schemas/{item}"),
                "{name}"
            );
        }
    }
    let params = doc["paths"]["/api/v1/epgs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |n: &str| &params.iter().find(|p| p["name"] == n).unwrap()["schema"];
    assert_eq!(param("limit")["minimum"], 1);
    assert_eq!(param("limit")["maximum"], 1000);
    assert_eq!(param("cursor")["pattern"], "^[0-9]{1,18}$");
    assert_eq!(schemas["ApicName"]["pattern"], "^[a-zA-Z0-9_.:-]{1,64}$");
    for s in ["InterfaceName", "PathDn"] {
        assert!(schemas[s]["pattern"].is_string(), "{s}");
    }
    let name = &doc["paths"]["/api/v1/hosts/{name}"]["get"]["parameters"][0]["schema"];
    assert_eq!(name["$ref"], "#/components/schemas/ApicName");
}

/// The reservation body is optional and documented as nullable: `null` is the same as none.
#[sqlx::test(migrations = "./migrations")]
async fn a_null_reservation_body_is_an_absent_one(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 100).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/a/reservations/r1",
            &Value::Null,
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
}
