//! `openapi/agent.json` is generated from the code; this fails when it is stale.
//! Refresh with `UPDATE_OPENAPI=1 cargo test -p weft-agent --test agent openapi`.

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/agent.json");
    let generated = weft_agent::http::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/agent.json is stale: run UPDATE_OPENAPI=1 cargo test -p weft-agent --test agent openapi"
    );
}
