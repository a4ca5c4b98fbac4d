//! The proof in packets (issue 11): apic-sim with its data plane (leaf ports as veths,
//! nftables forwarding a VLAN only where a deployed binding puts it in the same EPG), three
//! simulated hosts on two leaves (namespaces cabled into leaf ports, each with a private
//! userspace Open vSwitch and a real weft-agent on the OVS backend; the third host sits on a
//! vPC and, as this kernel cannot bond, is cabled to one member port), two `weft serve`
//! processes, three EPGs and real Docker containers `--net=none` attached through the API.
//! After every step of the scripted sequence the full ping matrix between the containers must
//! equal the EPG policy; it is printed when it does not. Repairs are asked of the reconciler
//! with `POST /api/v1/reconcile` (deterministic: no timer races the "broken" matrices), and
//! its timer and leader takeover are proven last, in step 6.
//!
//! The EPGs share one /24 on separate bridge domains and hand out disjoint addresses, so a
//! ping between EPGs is an ARP on the same subnet that only the switches can stop.
//!
//! Needs root, Docker with the offline image, Open vSwitch, nftables and the agent binary;
//! otherwise it prints SKIPPED.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use weft_lab::api::{Api, EpgPlan};
use weft_lab::demo::{Demo, DemoConfig};
use weft_lab::lab::Central;
use weft_lab::matrix::{self, Endpoint};
use weft_lab::weft::{self, WeftServer};
use weft_lab::{docker, HostPlan, Lab};

use crate::binary::{database_url, free_port};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The agent binary when everything the lab needs is here; otherwise None, said loudly.
fn lab_ready(test: &str) -> Option<PathBuf> {
    let bin = crate::e2e::agent_bin(test)?;
    match apic_sim::testbed::unavailable().or_else(docker::unavailable) {
        Some(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            None
        }
        None => Some(bin.into()),
    }
}

/// A prefix and a management network of this process's own.
fn names(tag: &str) -> (String, u8) {
    let pid = std::process::id();
    (
        format!("{tag}{}", pid % 100_000),
        Lab::free_mgmt_net((pid % 200) as u8),
    )
}

/// Runs a blocking check (pings, docker) off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Asserts the matrix of `eps` against `expect`, naming the step.
async fn matrix_is(
    step: &str,
    eps: &[Endpoint],
    expect: impl Fn(&Endpoint, &Endpoint) -> bool + Send + Sync + 'static,
) {
    let eps = eps.to_vec();
    if let Err(m) = blocking(move || matrix::check(&eps, expect)).await {
        panic!("after {step}: {m}");
    }
    eprintln!("proof: {step}: ping matrix equals the policy");
}

/// Polls `cond` every 100 ms for up to `secs` seconds.
async fn eventually<F: Future<Output = bool>>(secs: u64, mut cond: impl FnMut() -> F) -> bool {
    for _ in 0..secs * 10 {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The forwarding state of the fabric (`nft list table`), to see what a leaf port accepts.
fn fabric_table(lab: &Lab) -> String {
    let ns = lab.sim.data_plane().unwrap().netns().to_owned();
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns, "nft", "list", "table", "bridge", "weft",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a reconcile pass now on the replica `api` talks to; returns its report.
async fn reconcile(api: &Api) -> Value {
    api.ok(Method::POST, "/api/v1/reconcile", None)
        .await
        .unwrap()
}

/// The report's item about `object`, when there is one.
fn item<'a>(report: &'a Value, object: &str) -> Option<&'a Value> {
    report["items"]
        .as_array()?
        .iter()
        .find(|i| i["object"] == object)
}

/// Asserts that the report has an item about `object` with `outcome`; returns it.
fn has_item<'a>(report: &'a Value, object: &str, outcome: &str) -> &'a Value {
    match item(report, object) {
        Some(i) if i["outcome"] == outcome => i,
        _ => panic!("no {outcome} item for {object} in {report:#}"),
    }
}

/// The replicas' log directory: removed when the test passes, kept (and named) when it fails.
struct Logs(PathBuf);

impl Logs {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-proof-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Logs(dir)
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("weft logs: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

struct Proof {
    // Drop order: replicas, then the lab.
    a: WeftServer,
    b: WeftServer,
    lab: Lab,
    api: Api,
    epgs: Vec<EpgPlan>,
    eps: Vec<Endpoint>,
    ids: Vec<Uuid>,
    /// (host index, EPG index) of each container, in the order of `eps`.
    placed: Vec<(usize, usize)>,
}

impl Proof {
    fn container(&self, i: usize) -> String {
        format!("{}-c{i}", self.lab.prefix)
    }

    /// Starts containers `range` (host i % 3, EPG (i / 3) % 3) and attaches them all at
    /// once, alternating between the replicas.
    async fn attach_new(&mut self, range: std::ops::Range<usize>) {
        let names: Vec<String> = range.clone().map(|i| self.container(i)).collect();
        let prefix = self.lab.prefix.clone();
        blocking(move || {
            std::thread::scope(|s| {
                for n in &names {
                    let prefix = &prefix;
                    s.spawn(move || docker::start(n, prefix).unwrap());
                }
            })
        })
        .await;
        let b = self.api.at(&self.b.url);
        let jobs = range.clone().map(|i| {
            let (host, epg) = (i % 3, (i / 3) % 3);
            let api = if i % 2 == 0 { &self.api } else { &b };
            let (host_name, epg_plan, name) = (
                self.lab.hosts[host].plan.name.clone(),
                self.epgs[epg].clone(),
                self.container(i),
            );
            async move {
                let id = Uuid::new_v4();
                let a = api
                    .attach(id, &host_name, &name, &epg_plan, None)
                    .await
                    .unwrap();
                (i, id, a, host_name, epg_plan.name)
            }
        });
        for (i, id, a, host, epg) in futures::future::join_all(jobs).await {
            self.push(i, id, &a, host, epg);
        }
    }

    fn push(&mut self, i: usize, id: Uuid, a: &Value, host: String, epg: String) {
        let ip = a["address"].as_str().unwrap().split('/').next().unwrap();
        self.eps.push(Endpoint {
            container: self.container(i),
            ip: ip.to_owned(),
            epg,
            host,
        });
        self.ids.push(id);
        self.placed.push((i % 3, (i / 3) % 3));
    }

    fn index(&self, container: usize) -> usize {
        let name = self.container(container);
        self.eps.iter().position(|e| e.container == name).unwrap()
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn the_ping_matrix_equals_the_epg_policy_through_every_step(db: PgPool) {
    let Some(agent) = lab_ready("proof") else {
        return;
    };
    let url = database_url(&db);
    let (prefix, net) = names("wpf");
    let mut lab = Lab::new(&prefix, net).await.unwrap();
    let mut env = weft::lab_env(&url, &lab.sim.url);
    // No reconcile timer until step 6: until then every repair comes from a pass the test
    // asks for, so a matrix a step breaks is seen broken (a timer pass, or the one a replica
    // runs when it takes the leader role over, would otherwise race the check).
    env.push(("WEFT_RECONCILE_INTERVAL_SECS", "86400".into()));
    let logs = Logs::new(&prefix);
    let replica = |n: &str| {
        WeftServer::start(
            WEFT.as_ref(),
            &format!("{}:{}", lab.mgmt_ip, free_port()),
            &env,
            logs.0.join(format!("weft-{n}.log")),
        )
        .unwrap()
    };
    let (a, b) = (replica("a"), replica("b"));
    a.wait_ready().await.unwrap();
    b.wait_ready().await.unwrap();
    let admin = weft::token(WEFT.as_ref(), &url, "admin", "proof-admin").unwrap();
    let central = Central {
        url: format!("{}/api/v1/agent/events", a.url),
        token: weft::token(WEFT.as_ref(), &url, "agent", "proof-agents").unwrap(),
    };
    for plan in [
        HostPlan::port("lab-1", 101, "eth1/1"),
        HostPlan::port("lab-2", 102, "eth1/1"),
        HostPlan::vpc("lab-3", (101, 102), "host-3_vpc", 101, "eth1/5"),
    ] {
        lab.add_host(plan, agent.clone(), Some(central.clone()))
            .await
            .unwrap();
    }
    let api = Api::new(&a.url, &admin);
    api.pool("lab", 100, 199).await.unwrap();
    let epgs = vec![
        EpgPlan::new("proof", "red", "10.88.0", (2, 80)),
        EpgPlan::new("proof", "green", "10.88.0", (81, 160)),
        EpgPlan::new("proof", "blue", "10.88.0", (161, 254)),
    ];
    for epg in &epgs {
        api.epg(epg, "lab").await.unwrap();
    }
    for host in &lab.hosts {
        api.host(host).await.unwrap();
    }
    let mut p = Proof {
        a,
        b,
        lab,
        api,
        epgs,
        eps: Vec::new(),
        ids: Vec::new(),
        placed: Vec::new(),
    };

    // 1. Twelve containers, every EPG on every host, red twice on each.
    p.attach_new(0..12).await;
    matrix_is("1 initial attaches", &p.eps, matrix::same_epg).await;

    // 2. Green's only container on lab-2 (c4) detached: its binding goes (after the
    // linger) and leaf 102 drops green's VLAN on that port; attached again: back.
    let green = p.api.get(&p.epgs[1].path()).await.unwrap();
    let green_vlan = green["vlan"].as_u64().unwrap();
    let lab2_path = p.lab.hosts[1].plan.path_dn.clone();
    let green_binding = p.epgs[1].binding_dn(&lab2_path);
    assert!(p.lab.sim.get(&green_binding).is_some());
    let allowed = format!("\"f102-1-1\" . {green_vlan}");
    assert!(fabric_table(&p.lab).contains(&allowed));
    let c4 = p.index(4);
    p.api.detach(p.ids[c4]).await.unwrap();
    let (ep4, _, _) = (p.eps.remove(c4), p.ids.remove(c4), p.placed.remove(c4));
    let sim = &p.lab.sim;
    assert!(
        eventually(10, || async { sim.get(&green_binding).is_none() }).await,
        "green's binding on lab-2 outlived the linger"
    );
    let table = fabric_table(&p.lab);
    assert!(
        !table.contains(&allowed),
        "leaf 102 still accepts green's VLAN:\n{table}"
    );
    matrix_is(
        "2 detach of the last green on lab-2",
        &p.eps,
        matrix::same_epg,
    )
    .await;
    let id = Uuid::new_v4();
    let a4 = p
        .api
        .attach(id, "lab-2", &ep4.container, &p.epgs[1], None)
        .await
        .unwrap();
    p.push(4, id, &a4, "lab-2".into(), "green".into());
    assert!(p.lab.sim.get(&green_binding).is_some());
    matrix_is("2 re-attach", &p.eps, matrix::same_epg).await;

    // 3. Red's binding on lab-3's vPC deleted out of band: red on lab-3 is cut off from red
    // elsewhere (not from each other: same host switch), the rest is untouched; a reconcile
    // pass re-creates it.
    let lab3_path = p.lab.hosts[2].plan.path_dn.clone();
    let red_binding = p.epgs[0].binding_dn(&lab3_path);
    assert!(p.lab.sim.remove(&red_binding));
    let cut = |e: &Endpoint| e.epg == "red" && e.host == "lab-3";
    matrix_is(
        "3 red's vPC binding deleted out of band",
        &p.eps,
        move |x, y| matrix::same_epg(x, y) && cut(x) == cut(y),
    )
    .await;
    let report = reconcile(&p.api).await;
    has_item(&report, &red_binding, "repaired");
    assert!(p.lab.sim.get(&red_binding).is_some(), "re-created");
    matrix_is("3 reconciled", &p.eps, matrix::same_epg).await;

    // 4. A foreign binding (no Weft annotation, another tenant's EPG) takes blue's VLAN on
    // leaf 102 while Weft's blue binding there is gone: the reconciler reports the conflict
    // and touches neither; once the foreign binding is removed, it repairs Weft's.
    let blue = p.api.get(&p.epgs[2].path()).await.unwrap();
    let encap = blue["encap"].as_str().unwrap().to_owned();
    let blue_binding = p.epgs[2].binding_dn(&lab2_path);
    let foreign_epg = "uni/tn-other/ap-ap/epg-x";
    p.lab
        .sim
        .inject(
            "uni",
            &json!({"fvTenant":{"attributes":{"name":"other"},"children":[
                {"fvBD":{"attributes":{"name":"bd"}}},
                {"fvAp":{"attributes":{"name":"ap"},"children":[{"fvAEPg":{"attributes":{"name":"x"},"children":[
                    {"fvRsBd":{"attributes":{"tnFvBDName":"bd"}}},
                    {"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}}]}}]}}]}}),
        )
        .unwrap();
    assert!(p.lab.sim.remove(&blue_binding));
    let foreign_path = "topology/pod-1/paths-102/pathep-[eth1/3]";
    let foreign = format!("{foreign_epg}/rspathAtt-[{foreign_path}]");
    p.lab
        .sim
        .inject(
            foreign_epg,
            &json!({"fvRsPathAtt":{"attributes":{"tDn": foreign_path, "encap": encap}}}),
        )
        .unwrap();
    let before = p.lab.sim.get(&foreign).unwrap();
    let report = reconcile(&p.api).await;
    let conflict = has_item(&report, &blue_binding, "conflict");
    assert!(
        conflict["reason"].as_str().unwrap().contains(&foreign),
        "{conflict}"
    );
    assert_eq!(
        p.lab.sim.get(&foreign),
        Some(before),
        "foreign binding touched"
    );
    assert!(
        p.lab.sim.get(&blue_binding).is_none(),
        "posted over a conflict"
    );
    let cut = |e: &Endpoint| e.epg == "blue" && e.host == "lab-2";
    matrix_is(
        "4 foreign binding holds blue's VLAN",
        &p.eps,
        move |x, y| matrix::same_epg(x, y) && cut(x) == cut(y),
    )
    .await;
    assert!(p.lab.sim.remove(&foreign));
    let report = reconcile(&p.api).await;
    has_item(&report, &blue_binding, "repaired");
    matrix_is(
        "4 foreign binding removed, reconciled",
        &p.eps,
        matrix::same_epg,
    )
    .await;

    // 5. A continuous ping (10/s) between two red containers no step touches (c9 on lab-1,
    // c10 on lab-2) loses nothing while every agent and every replica restarts in turn.
    let (from, to) = (p.index(9), p.index(10));
    let pinger = apic_sim::testbed::Pinger::process(docker::pid(&p.eps[from].container).unwrap());
    let target = p.eps[to].ip.clone();
    const PINGS: u32 = 250;
    let stream = std::thread::spawn(move || pinger.stream(&target, PINGS, 100));
    for h in 0..p.lab.hosts.len() {
        p.lab.hosts[h].restart_agent().await.unwrap();
    }
    for r in [&mut p.a, &mut p.b] {
        r.stop();
        r.start_again().await.unwrap();
    }
    assert!(
        !stream.is_finished(),
        "the restarts outlasted the {PINGS} pings: raise PINGS"
    );
    let received = blocking(move || stream.join().unwrap()).await;
    assert_eq!(
        received, PINGS,
        "pings lost while agents and replicas restarted"
    );
    eprintln!("proof: 5 {PINGS} pings, none lost, across 3 agent and 2 replica restarts");
    matrix_is("5 agent and replica restarts", &p.eps, matrix::same_epg).await;

    // A restarted container (new namespace) and one recreated under the same name are
    // re-wired by their agent with the same address and MAC.
    let (c7, c8) = (p.container(7), p.container(8));
    let before: Vec<_> = [&c7, &c8].map(|c| docker::eth0(c).unwrap()).into();
    let prefix = p.lab.prefix.clone();
    let (r7, r8) = (c7.clone(), c8.clone());
    blocking(move || {
        docker::restart(&r7).unwrap();
        docker::remove(&r8).unwrap();
        docker::start(&r8, &prefix).unwrap();
    })
    .await;
    let rewired = eventually(20, || async {
        [&c7, &c8]
            .iter()
            .zip(&before)
            .all(|(c, b)| docker::eth0(c).ok().as_ref() == Some(b))
    })
    .await;
    assert!(rewired, "not re-wired with {before:?}");
    matrix_is(
        "5 container restarted and recreated",
        &p.eps,
        matrix::same_epg,
    )
    .await;
    let i8 = p.index(8);
    let state = format!("/api/v1/attachments/{}", p.ids[i8]);
    let api = &p.api;
    assert!(
        eventually(20, || async {
            api.get(&state).await.unwrap()["state"] == "attached"
        })
        .await,
        "the recreated container's attachment is attached again (lost, then rewired)"
    );

    // 7. c0's OVS port deleted behind lab-1's agent's back: c0 is cut off, then a reconcile
    // pass has the agent wire it again.
    let c0 = p.index(0);
    let port = p.lab.hosts[0]
        .vsctl(&[
            "--bare",
            "--columns=name",
            "find",
            "port",
            &format!("external_ids:weft-attachment={}", p.ids[c0]),
        ])
        .unwrap();
    let port = port.trim().to_owned();
    assert!(!port.is_empty(), "c0 has an OVS port");
    p.lab.hosts[0]
        .vsctl(&["del-port", "br-weft", &port])
        .unwrap();
    let gone = p.eps[c0].container.clone();
    matrix_is("7 c0's OVS port deleted", &p.eps, move |x, y| {
        matrix::same_epg(x, y) && x.container != gone && y.container != gone
    })
    .await;
    let report = reconcile(&p.api).await;
    has_item(&report, &p.ids[c0].to_string(), "repaired");
    matrix_is("7 reconciled", &p.eps, matrix::same_epg).await;

    // 6 (last: it turns the reconcile timer on). Both replicas restart with a 2 s interval;
    // the leader is killed with SIGKILL while attaches are in flight and a binding has just
    // been deleted out of band: the other replica finishes the attaches, takes the leader
    // role and its timer repairs the binding.
    for r in [&mut p.a, &mut p.b] {
        r.stop();
        r.set_env("WEFT_RECONCILE_INTERVAL_SECS", "2");
        r.start_again().await.unwrap();
    }
    let b_api = p.api.at(&p.b.url);
    let id_of = |r: Value| r["replica"].as_str().unwrap().to_owned();
    let (a_id, b_id) = (
        id_of(reconcile(&p.api).await),
        id_of(reconcile(&b_api).await),
    );
    let mut leader = None;
    for _ in 0..100 {
        let last = p.api.get("/api/v1/reconcile/last").await.unwrap();
        if last["trigger"] == "timer" {
            leader = Some(id_of(last));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = leader.expect("a timer pass within 10 s");
    let (survivor, survivor_id) = if leader == a_id {
        (b_api.clone(), b_id.clone())
    } else {
        (p.api.clone(), a_id)
    };
    let names: Vec<String> = (12..15).map(|i| p.container(i)).collect();
    let prefix = p.lab.prefix.clone();
    blocking(move || {
        names
            .iter()
            .for_each(|n| docker::start(n, &prefix).unwrap())
    })
    .await;
    let mut pending = Vec::new();
    for i in 12..15 {
        let (host, epg) = (i % 3, (i / 3) % 3);
        let id = Uuid::new_v4();
        let body = json!({"host": p.lab.hosts[host].plan.name,
                          "target": {"kind": "docker", "container": p.container(i)},
                          "epg": p.epgs[epg].reference()});
        let api = if i % 2 == 0 { &p.api } else { &b_api };
        api.ok(
            Method::PUT,
            &format!("/api/v1/attachments/{id}"),
            Some(&body),
        )
        .await
        .unwrap();
        pending.push((i, id));
    }
    (if leader == b_id { &mut p.b } else { &mut p.a }).kill9();
    let lab1_path = p.lab.hosts[0].plan.path_dn.clone();
    let green_binding = p.epgs[1].binding_dn(&lab1_path);
    assert!(p.lab.sim.remove(&green_binding));
    for (i, id) in pending {
        let path = format!("/api/v1/attachments/{id}");
        let api = &survivor;
        assert!(
            eventually(30, || async {
                api.get(&path).await.unwrap()["state"] == "attached"
            })
            .await,
            "attachment of c{i} did not converge on the surviving replica"
        );
        let a = survivor.get(&path).await.unwrap();
        let (host, epg) = (
            p.lab.hosts[i % 3].plan.name.clone(),
            p.epgs[(i / 3) % 3].name.clone(),
        );
        p.push(i, id, &a, host, epg);
    }
    let sim = &p.lab.sim;
    assert!(
        eventually(15, || async { sim.get(&green_binding).is_some() }).await,
        "the surviving replica's timer did not repair {green_binding}"
    );
    let last = survivor.get("/api/v1/reconcile/last").await.unwrap();
    assert_eq!(
        (last["trigger"].as_str(), last["replica"].as_str()),
        (Some("timer"), Some(survivor_id.as_str())),
        "the survivor leads"
    );
    matrix_is("6 leader killed during attaches", &p.eps, matrix::same_epg).await;
}
#[sqlx::test(migrations = "./migrations")]
async fn the_demo_attaches_its_containers_and_leaves_nothing_behind(db: PgPool) {
    let Some(agent) = lab_ready("demo") else {
        return;
    };
    let (prefix, mgmt_net) = names("wdm");
    let config = DemoConfig {
        weft_bin: WEFT.into(),
        agent_bin: agent,
        database_url: database_url(&db),
        port: free_port(),
        prefix: prefix.clone(),
        mgmt_net,
    };
    let demo = Demo::start(&config).await.unwrap();
    let list = demo.api.get("/api/v1/attachments").await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{list}");
    assert!(items.iter().all(|a| a["state"] == "attached"), "{list}");
    let text = demo.instructions();
    assert!(text.contains(&demo.admin_token) && text.contains(&demo.weft.url));
    let eps = demo.endpoints.clone();
    if let Err(m) = blocking(move || matrix::check(&eps, matrix::same_epg)).await {
        panic!("demo: {m}");
    }
    // Every process the demo started lives in one of its namespaces, except weft.
    let pids: Vec<String> = (0..3)
        .flat_map(|h| {
            let out = std::process::Command::new("ip")
                .args(["netns", "pids", &format!("{prefix}-h{h}")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(pids.len() >= 9, "3 OVS pairs and 3 agents: {pids:?}");
    let weft_url = demo.weft.url.clone();
    assert!(!Lab::leftovers(&prefix).is_empty());
    drop(demo);
    assert_eq!(Lab::leftovers(&prefix), Vec::<String>::new(), "left behind");
    let alive: Vec<&String> = pids
        .iter()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    assert!(
        reqwest::get(format!("{weft_url}/healthz")).await.is_err(),
        "weft still answers"
    );
}
