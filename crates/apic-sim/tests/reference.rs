//! apic-sim checked against `shared/reference/apic-api.md`, case by case, over real HTTP.

use apic_sim::{spawn, FaultConfig, SimConfig, SimHandle, Topology};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const EPG: &str = "uni/tn-t1/ap-ap1/epg-web";
const P101: &str = "topology/pod-1/paths-101/pathep-[eth1/7]";

struct Api {
    sim: SimHandle,
    http: reqwest::Client,
    token: String,
}

async fn sim_with(config: SimConfig) -> Api {
    let sim = spawn(config).await.expect("sim starts");
    let http = reqwest::Client::new();
    let mut api = Api {
        sim,
        http,
        token: String::new(),
    };
    let (status, body) = api.login("admin", "password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.token = body["imdata"][0]["aaaLogin"]["attributes"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    api
}

async fn sim() -> Api {
    sim_with(SimConfig::new(Topology::example().unwrap())).await
}

impl Api {
    async fn login(&self, user: &str, pwd: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/api/aaaLogin.json", self.sim.url))
            .json(&json!({"aaaUser":{"attributes":{"name":user,"pwd":pwd}}}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.sim.url))
            .header("Cookie", format!("APIC-cookie={}", self.token));
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    async fn post(&self, dn: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/api/mo/{dn}.json"), Some(body))
            .await
    }

    /// POSTs expecting the APIC's 400 error document; returns its (code, text).
    async fn post_err(&self, dn: &str, body: Value) -> (String, String) {
        let (s, v) = self.post(dn, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "POST {dn}: {v}");
        error_of(&v)
    }

    async fn post_ok(&self, dn: &str, body: Value) {
        let (s, v) = self.post(dn, body).await;
        assert_eq!(s, StatusCode::OK, "POST {dn}: {v}");
        assert_eq!(v, json!({"totalCount":"0","imdata":[]}));
    }

    async fn tenant_with_epg(&self, domain: bool) {
        let mut epg_children = vec![json!({"fvRsBd":{"attributes":{"tnFvBDName":"bd1"}}})];
        if domain {
            epg_children.push(json!({"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys","instrImedcy":"immediate"}}}));
        }
        self.post_ok("uni", json!({"fvTenant":{"attributes":{"name":"t1","annotation":"orchestrator:weft"},"children":[
            {"fvCtx":{"attributes":{"name":"vrf1"}}},
            {"fvBD":{"attributes":{"name":"bd1"},"children":[{"fvRsCtx":{"attributes":{"tnFvCtxName":"vrf1"}}},
                {"fvSubnet":{"attributes":{"ip":"10.1.1.1/24","scope":"private"}}}]}},
            {"fvAp":{"attributes":{"name":"ap1"},"children":[
                {"fvAEPg":{"attributes":{"name":"web"},"children":epg_children}},
                {"fvAEPg":{"attributes":{"name":"db"},"children":[{"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}}]}}]}}]}}))
            .await;
    }

    async fn bind(&self, epg: &str, path: &str, encap: &str) {
        self.post_ok(epg, json!({"fvRsPathAtt":{"attributes":{"tDn":path,"encap":encap,"instrImedcy":"immediate"}}})).await;
    }

    /// The F0467 faults of one binding, one per leaf, read as a client reads them: the
    /// `faultDelegate`s under the EPG whose faulted object is the binding's `stpathatt` on one
    /// of the path's leaves.
    async fn faults_of(&self, epg: &str, path: &str) -> Vec<Value> {
        let v = self
            .get(&format!(
                "/api/mo/{epg}.json?query-target=children&target-subtree-class=faultDelegate"
            ))
            .await;
        let (head, name) = path.rsplit_once("/pathep-").unwrap_or_default();
        let nodes: Vec<&str> = head
            .rsplit('/')
            .next()
            .and_then(|c| c.strip_prefix("protpaths-").or(c.strip_prefix("paths-")))
            .map(|n| n.split('-').collect())
            .unwrap_or_default();
        v["imdata"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d["faultDelegate"]["attributes"].clone())
            .filter(|a| {
                let affected = a["affected"].as_str().unwrap_or_default();
                nodes
                    .iter()
                    .any(|n| affected.ends_with(&format!("/node-{n}/stpathatt-{name}/nwissues")))
            })
            .collect()
    }

    async fn fault_of(&self, epg: &str, path: &str) -> Option<Value> {
        self.faults_of(epg, path).await.into_iter().next()
    }
}

fn error_of(v: &Value) -> (String, String) {
    let a = &v["imdata"][0]["error"]["attributes"];
    (
        a["code"].as_str().unwrap_or("").into(),
        a["text"].as_str().unwrap_or("").into(),
    )
}

#[tokio::test]
async fn login_returns_token_in_body_and_cookie() {
    let api = sim().await;
    let r = api
        .http
        .post(format!("{}/api/aaaLogin.json", api.sim.url))
        .json(&json!({"aaaUser":{"attributes":{"name":"admin","pwd":"password"}}}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    let attrs = &body["imdata"][0]["aaaLogin"]["attributes"];
    let token = attrs["token"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("APIC-cookie={token}")));
    assert_eq!(attrs["refreshTimeoutSeconds"], "600");
    assert_eq!(body["totalCount"], "1");
}

#[tokio::test]
async fn wrong_password_is_401_with_reference_text() {
    let api = sim().await;
    let (s, v) = api.login("admin", "nope").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_of(&v),
        (
            "401".into(),
            "Username or password is incorrect - FAILED local authentication".into()
        )
    );
}

#[tokio::test]
async fn expired_or_missing_token_is_403_token_timeout() {
    let mut api = sim().await;
    api.get("/api/class/fabricNode.json").await;
    api.sim.expire_tokens();
    let (s, v) = api
        .call(Method::GET, "/api/class/fabricNode.json", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(&v),
        (
            "403".into(),
            "Token was invalid (Error: Token timeout)".into()
        )
    );
    api.token = "bogus".into();
    let (s, _) = api.call(Method::GET, "/api/node/mo/uni.json", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn refresh_issues_new_aaa_login_token_and_logout_ends_session() {
    let mut api = sim().await;
    let v = api.get("/api/aaaRefresh.json").await;
    let new = v["imdata"][0]["aaaLogin"]["attributes"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, api.token);
    api.token = new;
    api.get("/api/mo/uni.json").await;
    let (s, _) = api
        .call(
            Method::POST,
            "/api/aaaLogout.json",
            Some(json!({"aaaUser":{"attributes":{"name":"admin"}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.call(Method::GET, "/api/mo/uni.json", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn token_lifetime_is_configurable() {
    let mut cfg = SimConfig::new(Topology::example().unwrap());
    cfg.token_lifetime = std::time::Duration::from_secs(30);
    let api = sim_with(cfg).await;
    let (_, v) = api.login("admin", "password").await;
    assert_eq!(
        v["imdata"][0]["aaaLogin"]["attributes"]["refreshTimeoutSeconds"],
        "30"
    );
}

#[tokio::test]
async fn logins_beyond_the_throttle_rate_get_nginx_503() {
    let api = sim().await; // one login already used
    let (s, _) = api.login("admin", "password").await;
    assert_eq!(s, StatusCode::OK);
    let r = api
        .http
        .post(format!("{}/api/aaaLogin.json", api.sim.url))
        .body(r#"{"aaaUser":{"attributes":{"name":"admin","pwd":"password"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("Faithfully yours, nginx."));
}

#[tokio::test]
async fn nested_post_creates_tree_with_defaults_and_string_values() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    api.bind(EPG, P101, "vlan-150").await;
    let v = api
        .get(&format!(
            "/api/mo/{EPG}.json?rsp-subtree=children&rsp-subtree-class=fvRsPathAtt,fvRsBd"
        ))
        .await;
    assert_eq!(v["totalCount"], "1");
    let epg = &v["imdata"][0]["fvAEPg"];
    assert_eq!(epg["attributes"]["dn"], EPG);
    assert_eq!(epg["attributes"]["pcEnfPref"], "unenforced");
    let children = epg["children"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{children:?}");
    let path = children.iter().find_map(|c| c.get("fvRsPathAtt")).unwrap();
    assert_eq!(path["attributes"]["rn"], format!("rspathAtt-[{P101}]"));
    assert_eq!(path["attributes"]["mode"], "regular");
    assert_eq!(path["attributes"]["instrImedcy"], "immediate");
    assert_eq!(path["attributes"]["state"], "formed");
    assert!(path["attributes"].get("dn").is_none());
}

#[tokio::test]
async fn absent_object_is_200_with_empty_imdata() {
    let api = sim().await;
    let raw = api
        .http
        .get(format!("{}/api/mo/uni/tn-nothere.json", api.sim.url))
        .header("Cookie", format!("APIC-cookie={}", api.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        raw, r#"{"totalCount":"0","imdata":[]}"#,
        "same bytes as an APIC"
    );
}

#[tokio::test]
async fn status_semantics() {
    let api = sim().await;
    let t = |status: &str| json!({"fvTenant":{"attributes":{"name":"s1","status":status}}});
    api.post_ok("uni/tn-s1", t("created")).await;
    let (code, text) = api.post_err("uni/tn-s1", t("created")).await;
    assert_eq!(code, "103");
    assert!(text.contains("already exists"));
    api.post_ok("uni/tn-s1", t("created,modified")).await;
    api.post_ok("uni/tn-s1", t("modified")).await;
    api.post_ok(
        "uni/tn-s1",
        json!({"fvTenant":{"attributes":{"descr":"x"}}}),
    )
    .await;
    api.post_ok("uni/tn-s1", t("deleted")).await;
    api.post_ok("uni/tn-s1", t("deleted")).await;
    assert_eq!(api.get("/api/mo/uni/tn-s1.json").await["totalCount"], "0");
    let e = api
        .post_err(
            "uni/tn-s2",
            json!({"fvTenant":{"attributes":{"status":"modified"}}}),
        )
        .await;
    assert_eq!(e.0, "102");
    let e = api.post_err("uni/tn-s1", t("bogus")).await;
    assert_eq!(e.0, "120");
    let e = api
        .post_err(
            "uni/tn-s1",
            json!({"fvTenant":{"attributes":{"name":"other"}}}),
        )
        .await;
    assert_eq!(
        e.1,
        "Create-only and naming props cannot be modified after creation, class=fvTenant, prop=name"
    );
}

#[tokio::test]
async fn rsp_subtree_modified_lists_changes() {
    let api = sim().await;
    let (_, v) = api
        .call(
            Method::POST,
            "/api/mo/uni/tn-m.json?rsp-subtree=modified",
            Some(json!({"fvTenant":{"attributes":{"name":"m"}}})),
        )
        .await;
    assert_eq!(
        v["imdata"][0]["fvTenant"]["attributes"]["status"],
        "created"
    );
    let (_, v) = api
        .call(
            Method::POST,
            "/api/mo/uni/tn-m.json?rsp-subtree=modified",
            Some(json!({"fvTenant":{"attributes":{"name":"m"}}})),
        )
        .await;
    assert_eq!(v["totalCount"], "0");
}

#[tokio::test]
async fn missing_parent_is_102_naming_the_child() {
    let api = sim().await;
    let e = api
        .post_err(
            "uni/tn-customera",
            json!({"fvBD":{"attributes":{"name":"VLAN_NEW"}}}),
        )
        .await;
    assert_eq!(
        e,
        (
            "102".into(),
            "configured object ((Dn0)) not found Dn0=uni/tn-customera/BD-VLAN_NEW, ".into()
        )
    );
}

#[tokio::test]
async fn attribute_typo_is_rejected_and_nothing_changes() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    let e = api.post_err(EPG, json!({"fvAEPg":{"attributes":{},"children":[
            {"fvRsPathAtt":{"attributes":{"tDn":"topology/pod-1/paths-101/pathep-[eth1/1]","encap":"vlan-150"}}},
            {"fvRsPathAtt":{"attributes":{"tDn":P101,"encap":"vlan-150","instrImmedcy":"immediate"}}}]}})).await;
    assert_eq!(
        e,
        (
            "400".into(),
            "unknown attribute 'instrImmedcy' in element 'fvRsPathAtt'".into()
        )
    );
    let v = api
        .get(&format!("/api/node/class/{EPG}/fvRsPathAtt.json"))
        .await;
    assert_eq!(
        v["totalCount"], "0",
        "a rejected POST must not apply its valid part"
    );
}

#[tokio::test]
async fn validation_errors_match_reference() {
    let api = sim().await;
    let e = api
        .post_err("uni/tn-x", json!({"fvFoobar":{"attributes":{}}}))
        .await;
    assert_eq!(
        e,
        ("122".into(), "unknown managed object class fvFoobar".into())
    );
    let e = api
        .post_err(
            "uni/tn-ansible_test",
            json!({"fvTenant":{"attributes":{"descr":"This is an [invalid] description"}}}),
        )
        .await;
    assert_eq!(
        e,
        ("801".into(), "property descr of uni/tn-ansible_test failed validation for value 'This is an [invalid] description'".into())
    );
    let e = api
        .post_err(
            "uni/tn-x",
            json!({"fvTenant":{"attributes":{"description":"d"}}}),
        )
        .await;
    assert_eq!(e.1, "unknown attribute 'description' in element 'fvTenant'");
    let e = api
        .post_err("uni/tn-x", json!({"fvTenant":{"children":[]}}))
        .await;
    assert_eq!(
        e.1,
        "invalid data at line '1'. Attributes are missing, tag 'attributes' must be specified first, before any other tag"
    );
    let (_, v) = api
        .call(
            Method::POST,
            "/api/mo/uni/tn-x.json",
            Some(Value::String(
                "{\"fvTenant\":{\"attributes\":{\"name\":".into(),
            )),
        )
        .await;
    assert_eq!(error_of(&v).0, "400");
    api.tenant_with_epg(true).await;
    let e = api
        .post_err(
            EPG,
            json!({"fvRsPathAtt":{"attributes":{"tDn":P101,"encap":"vlan-150","mode":"trunk"}}}),
        )
        .await;
    assert_eq!(e.0, "120");
    assert!(e
        .1
        .starts_with("unknown property value trunk, , name mode, class fvRsPathAtt"));
    let e = api
        .post_err(
            EPG,
            json!({"fvRsPathAtt":{"attributes":{"tDn":P101,"encap":"vlan-4095"}}}),
        )
        .await;
    assert_eq!(e.0, "801");
    let e = api
        .post_err("uni", json!({"fvAp":{"attributes":{"name":"a"}}}))
        .await;
    assert_eq!(
        e.1,
        "Invalid request. Can not contain child 'ap-a' under parent 'uni'"
    );
    let (_, v) = api
        .call(Method::GET, "/api/mo/uni/tn-t1/bogus-1.json", None)
        .await;
    assert_eq!(error_of(&v), ("104".into(), "Invalid RN bogus-1".into()));
}

#[tokio::test]
async fn node_mo_with_dn_in_attributes_and_delete() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    let body = json!({"fvRsPathAtt":{"attributes":{"dn":format!("{EPG}/rspathAtt-[{P101}]"),"encap":"vlan-151"}}});
    let (s, v) = api
        .call(Method::POST, "/api/node/mo.json", Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let binding = format!("/api/mo/{EPG}/rspathAtt-[{P101}].json");
    assert_eq!(
        api.get(&binding).await["imdata"][0]["fvRsPathAtt"]["attributes"]["tDn"],
        P101
    );
    let (s, _) = api.call(Method::DELETE, &binding, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(api.get(&binding).await["totalCount"], "0");
    let (s, _) = api.call(Method::DELETE, &binding, None).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "deleting an absent object is not an error"
    );
    let (s, _) = api
        .call(Method::DELETE, "/api/mo/uni/tn-t1.json", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        api.get(&format!("/api/mo/{EPG}.json")).await["totalCount"],
        "0",
        "subtree removed"
    );
}

#[tokio::test]
async fn topology_is_read_only() {
    let api = sim().await;
    let (s, _) = api
        .post(
            "topology/pod-1/node-101",
            json!({"fabricNode":{"attributes":{"name":"x"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api
        .call(Method::DELETE, "/api/mo/topology/pod-1/node-101.json", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        api.get("/api/mo/topology/pod-1/node-101.json").await["totalCount"],
        "1"
    );
}

#[tokio::test]
async fn class_queries_filters_and_pages() {
    let api = sim().await;
    let leaves = api
        .get("/api/node/class/fabricNode.json?query-target-filter=eq(fabricNode.role,\"leaf\")")
        .await;
    assert_eq!(leaves["totalCount"], "4");
    let not_leaves = api
        .get("/api/class/fabricNode.json?query-target-filter=ne(fabricNode.role,\"leaf\")")
        .await;
    assert_eq!(not_leaves["totalCount"], "2");
    let vpcs = api
        .get(r#"/api/node/class/fabricPathEp.json?query-target-filter=and(eq(fabricPathEp.lagT,"node"),wcard(fabricPathEp.dn,"^topology/pod-[\d]*/protpaths-"))"#)
        .await;
    assert_eq!(vpcs["totalCount"], "2");
    assert_eq!(
        vpcs["imdata"][0]["fabricPathEp"]["attributes"]["dn"],
        "topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]"
    );
    let either = api
        .get(r#"/api/class/fabricNode.json?query-target-filter=or(eq(fabricNode.id,"101"),eq(fabricNode.id,"201"))"#)
        .await;
    assert_eq!(either["totalCount"], "2");
    let fex = api.get(r#"/api/class/fabricPathEp.json?query-target-filter=wcard(fabricPathEp.dn,"/extpaths-111/")"#).await;
    assert_eq!(fex["totalCount"], "4");
    let p0 = api
        .get("/api/class/fabricPathEp.json?page=0&page-size=5")
        .await;
    let p1 = api
        .get("/api/class/fabricPathEp.json?page=1&page-size=5")
        .await;
    assert_eq!(p0["totalCount"], "38");
    assert_eq!(p0["imdata"].as_array().unwrap().len(), 5);
    assert_ne!(p0["imdata"][0], p1["imdata"][0]);
    let (s, v) = api
        .call(
            Method::GET,
            "/api/class/fabricNode.json?query-target-filter=eq(fabricNode.bogus,\"x\")",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let lldp = api
        .get(r#"/api/node/class/lldpAdjEp.json?query-target-filter=eq(lldpAdjEp.sysName,"host-3")"#)
        .await;
    assert_eq!(lldp["totalCount"], "2");
}

#[tokio::test]
async fn query_target_and_subtree_class() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    let v = api
        .get("/api/mo/uni/tn-t1.json?query-target=subtree&target-subtree-class=fvAEPg,fvBD")
        .await;
    assert_eq!(v["totalCount"], "3");
    let v = api
        .get("/api/mo/uni/tn-t1.json?query-target=children")
        .await;
    assert_eq!(v["totalCount"], "3", "ctx, BD and AP");
    let v = api
        .get("/api/mo/uni/tn-t1.json?rsp-subtree=full&rsp-prop-include=naming-only")
        .await;
    assert!(
        v["imdata"][0]["fvTenant"]["children"]
            .as_array()
            .unwrap()
            .len()
            == 3
    );
}

#[tokio::test]
async fn oversized_unpaged_query_is_rejected() {
    let mut cfg = SimConfig::new(Topology::example().unwrap());
    cfg.max_result = 10;
    let api = sim_with(cfg).await;
    let (s, v) = api
        .call(Method::GET, "/api/class/fabricPathEp.json", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&v).1,
        "Unable to process the query, result dataset is too big"
    );
    api.get("/api/class/fabricPathEp.json?page=0&page-size=10")
        .await;
}

#[tokio::test]
async fn f0467_invalid_path() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    let bad = "topology/pod-1/paths-101/pathep-[eth1/99]";
    api.bind(EPG, bad, "vlan-150").await;
    let f = api.fault_of(EPG, bad).await.expect("fault raised");
    assert_eq!(f["code"], "F0467");
    assert!(f["changeSet"].as_str().unwrap().contains("invalid-path"));
    assert_eq!(
        f["dn"],
        format!("{EPG}/fd-[topology/pod-1/node-101/local/svc-policyelem-id-0/uni/epp/fv-[{EPG}]/node-101/stpathatt-[eth1/99]/nwissues]-fault-F0467")
    );
}

#[tokio::test]
async fn f0467_invalid_vlan_without_domain_or_outside_pool() {
    let api = sim().await;
    api.tenant_with_epg(false).await;
    api.bind(EPG, P101, "vlan-150").await;
    let f = api
        .fault_of(EPG, P101)
        .await
        .expect("no domain -> invalid-vlan");
    assert_eq!(
        f["descr"],
        format!("Configuration failed for {EPG} node 101 eth1/7 due to Invalid VLAN Configuration, debug message: invalid-vlan: vlan-150 :Either the EpG is not associated with a domain or the domain does not have this vlan assigned to it;")
    );
    api.post_ok(
        EPG,
        json!({"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}}),
    )
    .await;
    assert!(
        api.fault_of(EPG, P101).await.is_none(),
        "fault clears once the domain is there"
    );
    api.bind(EPG, P101, "vlan-250").await;
    assert!(
        api.fault_of(EPG, P101).await.is_some(),
        "vlan-250 is outside the pool"
    );
    let all = api
        .get(r#"/api/node/class/faultInst.json?query-target-filter=eq(faultInst.code,"F0467")"#)
        .await;
    assert_eq!(all["totalCount"], "1");
}

#[tokio::test]
async fn f0467_encap_already_in_use_on_same_leaf_and_vpc() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    let db = "uni/tn-t1/ap-ap1/epg-db";
    api.bind(EPG, P101, "vlan-150").await;
    api.bind(db, "topology/pod-1/paths-101/pathep-[eth1/8]", "vlan-150")
        .await;
    let f = api
        .fault_of(db, "topology/pod-1/paths-101/pathep-[eth1/8]")
        .await
        .expect("same leaf");
    assert!(f["descr"]
        .as_str()
        .unwrap()
        .ends_with("encap-already-in-use: Encap (vlan-150) is already in use by t1:ap1:web;"));
    api.bind(db, "topology/pod-1/paths-103/pathep-[eth1/8]", "vlan-150")
        .await;
    assert!(
        api.fault_of(db, "topology/pod-1/paths-103/pathep-[eth1/8]")
            .await
            .is_none(),
        "other leaf is fine"
    );
    let vpc = "topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]";
    api.bind(db, vpc, "vlan-150").await;
    assert!(api.fault_of(db, vpc).await.is_some(), "vPC spans leaf 101");
    api.sim.remove(&format!("{EPG}/rspathAtt-[{P101}]"));
    assert!(
        api.fault_of(db, vpc).await.is_none(),
        "owner gone, fault cleared"
    );
}

#[tokio::test]
async fn f0467_encap_already_in_use_by_a_static_leaf_binding() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    let db = "uni/tn-t1/ap-ap1/epg-db";
    api.post_ok(
        db,
        json!({"fvRsNodeAtt":{"attributes":{"tDn":"topology/pod-1/node-102","encap":"vlan-183","instrImedcy":"immediate"}}}),
    )
    .await;
    let p102 = "topology/pod-1/paths-102/pathep-[eth1/3]";
    api.bind(EPG, p102, "vlan-183").await;
    let f = api
        .fault_of(EPG, p102)
        .await
        .expect("the leaf's VLAN is db's");
    assert!(f["descr"]
        .as_str()
        .unwrap()
        .ends_with("encap-already-in-use: Encap (vlan-183) is already in use by t1:ap1:db;"));
    api.bind(EPG, P101, "vlan-183").await;
    assert!(
        api.fault_of(EPG, P101).await.is_none(),
        "other leaf is fine"
    );
    let (code, _) = api
        .post_err(
            db,
            json!({"fvRsNodeAtt":{"attributes":{"tDn":"topology/pod-1/node-102","encap":"vlan-183","instrImmedcy":"lazy"}}}),
        )
        .await;
    assert_eq!(code, "400", "attributes are checked as for path bindings");
}

/// Moves leaf 102's eth1/2 and the vPC `host-3_vpc` onto an AAEP `bare_aaep` without domains.
async fn bare_aaep_on_leaf_102_and_the_vpc(api: &Api) {
    api.post_ok(
        "uni/infra",
        json!({"infraInfra":{"attributes":{},"children":[
            {"infraAttEntityP":{"attributes":{"name":"bare_aaep"}}},
            {"infraFuncP":{"attributes":{},"children":[
                {"infraAccPortGrp":{"attributes":{"name":"bare_ipg"},"children":[
                    {"infraRsAttEntP":{"attributes":{"tDn":"uni/infra/attentp-bare_aaep"}}}]}},
                {"infraAccBndlGrp":{"attributes":{"name":"host-3_vpc","lagT":"node"},"children":[
                    {"infraRsAttEntP":{"attributes":{"tDn":"uni/infra/attentp-bare_aaep"}}}]}}]}}]}}),
    )
    .await;
    api.post_ok(
        "uni/infra/accportprof-leaf-102/hports-eth1_2-typ-range",
        json!({"infraRsAccBaseGrp":{"attributes":{"tDn":"uni/infra/funcprof/accportgrp-bare_ipg"}}}),
    )
    .await;
}

#[tokio::test]
async fn f0467_invalid_path_when_the_ports_aaep_lacks_the_domain() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    bare_aaep_on_leaf_102_and_the_vpc(&api).await;
    let p102 = "topology/pod-1/paths-102/pathep-[eth1/2]";
    let vpc = "topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]";
    for path in [p102, vpc, P101] {
        api.bind(EPG, path, "vlan-150").await;
    }
    let f = api
        .fault_of(EPG, p102)
        .await
        .expect("leaf 102's AAEP has no weft_phys");
    assert!(
        f["changeSet"]
            .as_str()
            .unwrap()
            .contains("configQual:invalid-path"),
        "{f}"
    );
    assert!(
        f["descr"].as_str().unwrap().starts_with(&format!(
            "Configuration failed for {EPG} node 102 eth1/2 due to Invalid Path Configuration"
        )),
        "{f}"
    );
    let on_vpc = api.faults_of(EPG, vpc).await;
    assert_eq!(
        on_vpc.len(),
        2,
        "the vPC's group is on bare_aaep on both leaves: {on_vpc:?}"
    );
    assert!(
        api.fault_of(EPG, P101).await.is_none(),
        "leaf 101's ports keep weft_aaep"
    );
    api.post_ok(
        "uni/infra/attentp-bare_aaep",
        json!({"infraRsDomP":{"attributes":{"tDn":"uni/phys-weft_phys"}}}),
    )
    .await;
    assert!(
        api.fault_of(EPG, p102).await.is_none(),
        "cleared once the AAEP carries the domain"
    );
    assert!(api.fault_of(EPG, vpc).await.is_none());
}

#[tokio::test]
async fn fv_rs_bd_resolves_in_the_tenant_then_in_common() {
    let api = sim().await;
    api.post_ok("uni", json!({"fvTenant":{"attributes":{"name":"t2"},"children":[{"fvAp":{"attributes":{"name":"ap"},"children":[
        {"fvAEPg":{"attributes":{"name":"e"},"children":[{"fvRsBd":{"attributes":{"tnFvBDName":"bd1"}}}]}}]}}]}}))
        .await;
    let rsbd = |v: Value| v["imdata"][0]["fvRsBd"]["attributes"].clone();
    let get = || api.get("/api/mo/uni/tn-t2/ap-ap/epg-e/rsbd.json");
    let a = rsbd(get().await);
    assert_eq!(
        (a["state"].as_str(), a["tDn"].as_str()),
        (Some("missing-target"), Some("uni/tn-t2/BD-bd1"))
    );
    api.post_ok(
        "uni/tn-common",
        json!({"fvBD":{"attributes":{"name":"bd1"}}}),
    )
    .await;
    let a = rsbd(get().await);
    assert_eq!(
        (a["state"].as_str(), a["tDn"].as_str()),
        (Some("formed"), Some("uni/tn-common/BD-bd1"))
    );
    api.post_ok("uni/tn-t2", json!({"fvBD":{"attributes":{"name":"bd1"}}}))
        .await;
    let a = rsbd(get().await);
    assert_eq!(
        (a["state"].as_str(), a["tDn"].as_str()),
        (Some("formed"), Some("uni/tn-t2/BD-bd1"))
    );
}

/// Faults live where the leaf raises them, with a delegate under the EPG, not under the binding.
#[tokio::test]
async fn f0467_is_placed_in_the_epp_tree_with_a_delegate_under_the_epg() {
    let api = sim().await;
    api.tenant_with_epg(true).await;
    let p102 = "topology/pod-1/paths-102/pathep-[eth1/2]";
    api.bind(EPG, p102, "vlan-250").await;
    let fault = format!("topology/pod-1/node-102/local/svc-policyelem-id-0/uni/epp/fv-[{EPG}]/node-102/stpathatt-[eth1/2]/nwissues/fault-F0467");
    let by_dn = api
        .get(r#"/api/node/class/faultInst.json?query-target-filter=and(eq(faultInst.code,"F0467"),wcard(faultInst.dn,"epp/fv-\[uni/tn-t1/ap-ap1/epg-web\]"))"#)
        .await;
    assert_eq!(by_dn["totalCount"], "1", "{by_dn}");
    let inst = &by_dn["imdata"][0]["faultInst"]["attributes"];
    assert_eq!(inst["dn"], fault.as_str());
    assert!(inst["changeSet"]
        .as_str()
        .unwrap()
        .contains("configQual:invalid-vlan"));
    let delegate = api
        .fault_of(EPG, p102)
        .await
        .expect("delegate under the EPG");
    assert_eq!(delegate["descr"], inst["descr"]);
    assert_eq!(delegate["code"], "F0467");
    let binding = api
        .get(&format!(
            "/api/mo/{EPG}/rspathAtt-[{p102}].json?rsp-subtree-include=faults"
        ))
        .await;
    assert!(
        binding["imdata"][0]["fvRsPathAtt"]
            .get("children")
            .is_none(),
        "nothing under the binding: {binding}"
    );
    api.post_ok(
        EPG,
        json!({"fvRsPathAtt":{"attributes":{"tDn":p102,"encap":"vlan-150"}}}),
    )
    .await;
    let cleared = api.get("/api/node/class/faultInst.json").await;
    assert_eq!(
        cleared["totalCount"], "0",
        "fixed binding, fault and delegate gone: {cleared}"
    );
    assert!(api.fault_of(EPG, p102).await.is_none());
}

#[tokio::test]
async fn overload_injection_answers_html_503_and_counts() {
    let api = sim().await;
    api.sim.set_faults(FaultConfig {
        overload_next: 1,
        ..FaultConfig::default()
    });
    let r = api
        .http
        .get(format!("{}/api/class/fabricNode.json", api.sim.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["content-type"], "text/html");
    api.get("/api/class/fabricNode.json").await;
    assert_eq!(api.sim.count("class_get"), 2);
    assert_eq!(api.sim.count("login"), 1);
}

#[tokio::test]
async fn lower_case_method_gets_nginx_html_in_200() {
    let api = sim().await;
    let (s, v) = api
        .call(
            Method::from_bytes(b"get").unwrap(),
            "/api/class/fabricNode.json",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("400 Bad Request"));
}

/// Writes `request` on a fresh connection and reads until the server closes it.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// curl users type the filter's quotes raw (nginx takes them); reqwest would percent-encode
/// them, so the request goes over a bare socket, pipelined behind a POST whose JSON body is
/// full of quotes that must reach the tree unchanged.
#[tokio::test]
async fn raw_quotes_in_the_query_are_accepted_like_nginx_does() {
    let api = sim().await;
    let cookie = format!("Cookie: APIC-cookie={}", api.token);
    let body = r#"{"fvTenant":{"attributes":{"name":"t-quote","descr":"kept as sent"}}}"#;
    let request = format!(
        "POST /api/mo/uni.json HTTP/1.1\r\nHost: apic\r\n{cookie}\r\nContent-Length: {}\r\n\r\n{body}\
         GET /api/class/fvTenant.json?query-target-filter=eq(fvTenant.name,\"t-quote\") HTTP/1.1\r\n\
         Host: apic\r\n{cookie}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = raw_exchange(api.sim.addr, &request).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    let tenants = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
    let tenants: Value = serde_json::from_str(tenants).expect("JSON body");
    assert_eq!(tenants["totalCount"], "1", "{tenants}");
    let tenant = &tenants["imdata"][0]["fvTenant"]["attributes"];
    assert_eq!(tenant["dn"], "uni/tn-t-quote");
    assert_eq!(tenant["descr"], "kept as sent");
}

/// A client that never finishes its request line (slowloris) is disconnected by the server.
#[tokio::test]
async fn a_half_sent_request_line_is_closed_by_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = SimConfig::new(Topology::example().unwrap());
    config.http.client_request_timeout = std::time::Duration::from_millis(200);
    let sim = spawn(config).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
    tcp.write_all(b"GET /api/class/fvTenant.json HT")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The bound only keeps a regression from hanging the suite; the closing is what is checked.
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tcp.read_to_end(&mut answer),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "connection still open: {closed:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let api = sim().await;
    let base = &api.sim.url;
    let r = api
        .http
        .post(format!(
            "{base}/_sim/mo/topology/pod-1/node-104/sys/lldp/inst/if-[eth1/3].json"
        ))
        .json(&json!({"lldpAdjEp":{"attributes":{"id":"1","sysName":"host-9","portIdV":"eth0"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let v = api
        .get(r#"/api/class/lldpAdjEp.json?query-target-filter=eq(lldpAdjEp.sysName,"host-9")"#)
        .await;
    assert_eq!(v["totalCount"], "1");
    let counts: Value = api
        .http
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["class_get"], 1);
    let r = api
        .http
        .put(format!("{base}/_sim/faults"))
        .json(&json!({"latency_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(api.sim.faults().latency_ms, 1);
    let dump: Value = api
        .http
        .get(format!("{base}/_sim/dump"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(dump["imdata"].as_array().unwrap().len() > 100);
    api.http
        .post(format!("{base}/_sim/expire-tokens"))
        .send()
        .await
        .unwrap();
    let (s, _) = api.call(Method::GET, "/api/mo/uni.json", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    api.http
        .post(format!("{base}/_sim/reset"))
        .send()
        .await
        .unwrap();
    assert!(api.sim.counts().is_empty());
    assert!(api
        .sim
        .get("topology/pod-1/node-104/sys/lldp/inst/if-[eth1/3]/adj-1")
        .is_none());
}

#[tokio::test]
async fn one_post_stays_in_one_context_root_and_uni_is_not_deletable() {
    let api = sim().await;
    let e = api
        .post_err(
            "uni",
            json!({"polUni":{"attributes":{},"children":[
            {"fvTenant":{"attributes":{"name":"a"}}},{"physDomP":{"attributes":{"name":"d"}}}]}}),
        )
        .await;
    assert!(e.1.starts_with("Failed to update multiple items in a single operation - request requires distributed transaction"));
    let (s, v) = api.call(Method::DELETE, "/api/mo/uni.json", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&v), ("1".into(), "uni cannot be deleted.".into()));
    assert_eq!(
        api.get("/api/mo/uni/phys-weft_phys.json").await["totalCount"],
        "1"
    );
}

/// The `apic-sim` binary, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_the_example_topology() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let topology = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/sim/topology.json"
    );
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_apic-sim"))
            .args(["--topology", topology, "--port", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("apic-sim starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .trim()
        .strip_prefix("apic-sim listening on ")
        .expect("address line")
        .to_string();
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{url}/api/aaaLogin.json"))
        .body(r#"{"aaaUser":{"attributes":{"name":"admin","pwd":"password"}}}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["imdata"][0]["aaaLogin"]["attributes"]["token"]
        .as_str()
        .unwrap();
    let leaves: serde_json::Value = http
        .get(format!(
            "{url}/api/node/class/fabricNode.json?query-target-filter=eq(fabricNode.role,\"leaf\")"
        ))
        .header("Cookie", format!("APIC-cookie={token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(leaves["totalCount"], "4");
}

/// Tests rely on a dropped handle freeing its port (failover to a dead controller).
#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let sim = spawn(SimConfig::new(Topology::example().unwrap()))
        .await
        .unwrap();
    let addr = sim.addr;
    tokio::net::TcpStream::connect(addr).await.expect("serving");
    drop(sim);
    // The stop is asynchronous: poll (bounded) until connections are refused.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "still accepting connections on {addr}");
}

#[path = "reference/dataplane.rs"]
mod dataplane;
