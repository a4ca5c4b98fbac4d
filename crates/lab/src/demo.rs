//! The one-command demo (`scripts/run-local.sh` as root runs `weft-lab demo`): a fabric with
//! three hosts, `weft serve`, two EPGs and four containers attached through the API; then
//! instructions for a person, and everything removed again when it ends.

use std::path::PathBuf;

use serde_json::Value;
use uuid::Uuid;

use crate::api::{Api, EpgPlan};
use crate::lab::{Central, HostPlan, Lab};
use crate::matrix::{self, Endpoint};
use crate::weft::{self, WeftServer};
use crate::{docker, LabError};

/// What the demo runs and where.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub weft_bin: PathBuf,
    pub agent_bin: PathBuf,
    /// An existing, empty (or Weft's) database.
    pub database_url: String,
    /// `weft serve` listens on the management bridge's address at this port.
    pub port: u16,
    /// Names of namespaces, links and containers start with it.
    pub prefix: String,
    /// The management bridge is `198.18.<mgmt_net>.1/24`.
    pub mgmt_net: u8,
}

/// A running demo; dropping it stops `weft` and removes the lab.
pub struct Demo {
    // Field order is drop order: weft stops before the lab goes.
    pub weft: WeftServer,
    pub lab: Lab,
    pub api: Api,
    pub admin_token: String,
    pub epgs: Vec<EpgPlan>,
    /// The attached containers.
    pub endpoints: Vec<Endpoint>,
    /// The attachments' ids, in the order of `endpoints`.
    pub attachments: Vec<Uuid>,
    dir: PathBuf,
}

/// The demo's reconcile interval: short, so a person sees a broken binding heal.
const RECONCILE_SECS: u32 = 10;

/// The demo's hosts: two on plain leaf ports, one on a vPC (cabled to one member).
fn hosts() -> Vec<HostPlan> {
    vec![
        HostPlan::port("demo-1", 101, "eth1/1"),
        HostPlan::port("demo-2", 102, "eth1/1"),
        HostPlan::vpc("demo-3", (101, 102), "host-3_vpc", 102, "eth1/5"),
    ]
}

impl Demo {
    /// Builds the whole demo after removing leftovers of a previous run with this prefix.
    pub async fn start(cfg: &DemoConfig) -> Result<Self, LabError> {
        let dir = std::env::temp_dir().join(format!("weft-lab-{}", cfg.prefix));
        weft::kill_stale(&dir.join("weft.pid"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let mut lab = Lab::new(&cfg.prefix, cfg.mgmt_net).await?;
        weft::migrate(&cfg.weft_bin, &cfg.database_url)?;
        let listen = format!("{}:{}", lab.mgmt_ip, cfg.port);
        let mut env = weft::lab_env(&cfg.database_url, &lab.sim.url);
        env.push(("WEFT_RECONCILE_INTERVAL_SECS", RECONCILE_SECS.to_string()));
        let weft = WeftServer::start(&cfg.weft_bin, &listen, &env, dir.join("weft.log"))?;
        if let Some(pid) = weft.pid() {
            std::fs::write(dir.join("weft.pid"), pid.to_string()).map_err(|source| {
                LabError::Io {
                    what: "weft.pid".into(),
                    source,
                }
            })?;
        }
        weft.wait_ready().await?;
        let admin_token = weft::token(&cfg.weft_bin, &cfg.database_url, "admin", "demo-admin")?;
        let central = Central {
            url: format!("{}/api/v1/agent/events", weft.url),
            token: weft::token(&cfg.weft_bin, &cfg.database_url, "agent", "demo-agents")?,
        };
        for plan in hosts() {
            lab.add_host(plan, cfg.agent_bin.clone(), Some(central.clone()))
                .await?;
        }
        let api = Api::new(&weft.url, &admin_token);
        api.pool("demo", 100, 199).await?;
        let epgs = vec![
            EpgPlan::new("demo", "web", "10.77.0", (2, 127)),
            EpgPlan::new("demo", "db", "10.77.0", (128, 254)),
        ];
        for epg in &epgs {
            api.epg(epg, "demo").await?;
        }
        for host in &lab.hosts {
            api.host(host).await?;
        }
        let mut demo = Demo {
            weft,
            lab,
            api,
            admin_token,
            epgs,
            endpoints: Vec::new(),
            attachments: Vec::new(),
            dir,
        };
        for (name, host, epg) in [("web1", 0, 0), ("web2", 1, 0), ("db1", 0, 1), ("db2", 2, 1)] {
            demo.container(name, host, epg).await?;
        }
        Ok(demo)
    }

    /// Starts container `<prefix>-<name>` and attaches it on host `host` to EPG `epg`.
    pub async fn container(
        &mut self,
        name: &str,
        host: usize,
        epg: usize,
    ) -> Result<Value, LabError> {
        let container = format!("{}-{name}", self.lab.prefix);
        docker::start(&container, &self.lab.prefix)?;
        let (host, epg) = (&self.lab.hosts[host].plan.name, &self.epgs[epg]);
        let id = Uuid::new_v4();
        let a = self.api.attach(id, host, &container, epg, None).await?;
        let ip = a["address"].as_str().unwrap_or_default();
        self.endpoints.push(Endpoint {
            container,
            ip: ip.split('/').next().unwrap_or_default().to_owned(),
            epg: epg.name.clone(),
            host: host.clone(),
        });
        self.attachments.push(id);
        Ok(a)
    }

    /// The ping matrix of the attached containers against the EPG policy.
    pub fn check(&self) -> Result<(), String> {
        matrix::check(&self.endpoints, matrix::same_epg)
    }

    /// What a person can try, with the real names, addresses and token.
    pub fn instructions(&self) -> String {
        let (url, token, sim) = (&self.weft.url, &self.admin_token, &self.lab.sim.url);
        let e = &self.endpoints;
        let web = &self.epgs[0];
        let web2_path = &self.lab.hosts[1].plan.path_dn;
        let fabric = format!("{}-fab", self.lab.prefix);
        let p = &self.lab.prefix;
        format!(
            r#"
  Weft demo is running: apic-sim with a simulated data plane (leaf ports are veths in
  namespace {fabric}, nftables forwards a VLAN only where a deployed binding allows it),
  3 hosts (namespaces {p}-h0..h2, each with its own Open vSwitch and a weft-agent), 2 EPGs
  sharing 10.77.0.0/24 (web hands out .2-.127, db .128-.254), 4 containers attached.

  Weft API:      {url}   (OpenAPI: {url}/api/v1/openapi.json)
  Admin token:   {token}
  apic-sim:      {sim}   (user admin / password; control endpoints under /_sim/)
  Logs:          {dir}

  Try:
    H="Authorization: Bearer {token}"
    curl -s -H "$H" {url}/api/v1/attachments
    curl -s -H "$H" {url}/api/v1/bindings
    docker exec {c0} ping -c 2 {ip1}          # web -> web across leaves: answers
    docker exec {c0} ping -c 2 -W 1 {ip3}     # web -> db: isolated
    ip netns exec {fabric} nft list table bridge weft   # what the fabric forwards

  Attach another container:
    docker run -d --net=none --name {p}-web3 --label weft-lab={p} weft-test/busybox:local sleep 1d
    curl -s -X PUT -H "$H" -H 'content-type: application/json' \
      "{url}/api/v1/attachments/$(cat /proc/sys/kernel/random/uuid)?wait=30" \
      -d '{{"host":"demo-3","target":{{"kind":"docker","container":"{p}-web3"}},"epg":{{"tenant":"demo","app":"ap","epg":"web"}}}}'

  Detach {c1}:  curl -s -X DELETE -H "$H" "{url}/api/v1/attachments/{id1}?wait=30"

  Break a binding behind Weft's back (as someone in the APIC GUI would), see the ping fail,
  and let the reconciler repair it (within {RECONCILE_SECS} s on its timer, or at once):
    curl -gs -X DELETE '{sim}/_sim/mo/{binding}'    # -g: the DN has brackets
    docker exec {c0} ping -c 2 -W 1 {ip1}
    curl -s -X POST -H "$H" {url}/api/v1/reconcile      # the drift report: what it found and did

  Ctrl-C removes everything (namespaces, links, OVS daemons, containers, the database).
"#,
            dir = self.dir.display(),
            c0 = e[0].container,
            c1 = e[1].container,
            ip1 = e[1].ip,
            ip3 = e[3].ip,
            id1 = self.attachments[1],
            binding = web.binding_dn(web2_path),
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.weft.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
