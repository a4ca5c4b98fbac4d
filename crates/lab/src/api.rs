//! Weft's REST API as the lab uses it: pools, EPGs, hosts, attachments.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::lab::{LabHost, UPLINK};
use crate::LabError;

/// A client of one `weft` base URL with one bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    token: String,
    http: reqwest::Client,
}

/// An EPG of the lab: tenant/app/name, managed (Weft creates it on the APIC with its BD).
///
/// The lab's EPGs share one /24 (each on a bridge domain of its own, so Weft allows it) and
/// hand out disjoint parts of it (`hosts`, the rest reserved): a ping between two EPGs is
/// then an ARP on the same subnet that only the fabric and the host switch can stop, not a
/// packet without a route.
#[derive(Debug, Clone)]
pub struct EpgPlan {
    pub tenant: String,
    pub app: String,
    pub name: String,
    pub bridge_domain: String,
    /// The shared subnet's first three octets, e.g. `10.77.0`.
    pub net: String,
    /// The last octets this EPG hands out (first, last), within 2..=254.
    pub hosts: (u8, u8),
}

impl EpgPlan {
    /// `{tenant, app, epg}` as attachments name it.
    pub fn reference(&self) -> Value {
        json!({"tenant": self.tenant, "app": self.app, "epg": self.name})
    }

    /// A lab EPG `tenant/ap/name` on bridge domain `bd-<name>`.
    pub fn new(tenant: &str, name: &str, net: &str, hosts: (u8, u8)) -> Self {
        EpgPlan {
            tenant: tenant.into(),
            app: "ap".into(),
            name: name.into(),
            bridge_domain: format!("bd-{name}"),
            net: net.into(),
            hosts,
        }
    }

    /// The APIC DN of the EPG.
    pub fn dn(&self) -> String {
        format!("uni/tn-{}/ap-{}/epg-{}", self.tenant, self.app, self.name)
    }

    /// The DN of its static binding on `path`.
    pub fn binding_dn(&self, path: &str) -> String {
        format!("{}/rspathAtt-[{path}]", self.dn())
    }

    /// The API path of the EPG.
    pub fn path(&self) -> String {
        format!("/api/v1/epgs/{}/{}/{}", self.tenant, self.app, self.name)
    }
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The same token against another replica.
    pub fn at(&self, base: &str) -> Self {
        Api::new(base, &self.token)
    }

    /// One request; any status is returned with its JSON body (`null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), LabError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = || format!("{method} {path}");
        let r = req.send().await.map_err(|source| LabError::Http {
            what: what(),
            source,
        })?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|source| LabError::Http {
            what: what(),
            source,
        })?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A request that must succeed (2xx); returns the body.
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, LabError> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        Err(LabError::Api {
            what: format!("{method} {path}"),
            status,
            body: value.to_string(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, LabError> {
        self.ok(Method::GET, path, None).await
    }

    /// VLAN pool `name` with one range.
    pub async fn pool(&self, name: &str, first: u16, last: u16) -> Result<(), LabError> {
        let body = json!({"ranges": [{"first": first, "last": last}]});
        self.ok(
            Method::PUT,
            &format!("/api/v1/vlan-pools/{name}"),
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// The EPG in `pool`, regular (tagged) mode on the sim's physical domain `weft_phys`.
    pub async fn epg(&self, epg: &EpgPlan, pool: &str) -> Result<Value, LabError> {
        let (net, (first, last)) = (&epg.net, epg.hosts);
        let mut reserved = Vec::new();
        if first > 2 {
            reserved
                .push(json!({"first": format!("{net}.2"), "last": format!("{net}.{}", first - 1)}));
        }
        if last < 254 {
            reserved.push(
                json!({"first": format!("{net}.{}", last + 1), "last": format!("{net}.254")}),
            );
        }
        let body = json!({
            "bridge_domain": epg.bridge_domain, "physical_domain": "weft_phys",
            "vlan_pool": pool, "mode": "regular", "immediacy": "immediate", "managed": true,
            "subnets": [{"cidr": format!("{net}.0/24"), "gateway": format!("{net}.1"),
                         "reserved": reserved}]
        });
        self.ok(Method::PUT, &epg.path(), Some(&body)).await
    }

    /// Registers a lab host: its agent, token, OVS backend and uplink path.
    pub async fn host(&self, host: &LabHost) -> Result<(), LabError> {
        let body = json!({
            "agent_url": host.agent_url, "agent_token": host.agent_token, "backend": "ovs",
            "uplinks": [{"interface": UPLINK, "path_dn": host.plan.path_dn}]
        });
        let path = format!("/api/v1/hosts/{}", host.plan.name);
        self.ok(Method::PUT, &path, Some(&body)).await.map(drop)
    }

    /// Attaches Docker container `container` on `host` to `epg` (with `address` when given)
    /// and waits for the outcome; returns the attachment.
    pub async fn attach(
        &self,
        id: Uuid,
        host: &str,
        container: &str,
        epg: &EpgPlan,
        address: Option<&str>,
    ) -> Result<Value, LabError> {
        let mut body = json!({"host": host, "target": {"kind": "docker", "container": container},
                              "epg": epg.reference()});
        if let Some(a) = address {
            body["address"] = json!(a);
        }
        let a = self
            .ok(
                Method::PUT,
                &format!("/api/v1/attachments/{id}?wait=60"),
                Some(&body),
            )
            .await?;
        if a["state"] != "attached" {
            return Err(LabError::Api {
                what: format!("attach {container} to {}", epg.name),
                status: 200,
                body: a.to_string(),
            });
        }
        Ok(a)
    }

    /// Detaches and waits for the outcome.
    pub async fn detach(&self, id: Uuid) -> Result<(), LabError> {
        self.ok(
            Method::DELETE,
            &format!("/api/v1/attachments/{id}?wait=60"),
            None,
        )
        .await
        .map(drop)
    }
}
