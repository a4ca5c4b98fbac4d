//! End to end against a hostile APIC: apic-sim answers a fifth of all requests with its
//! overload page (nginx's HTML 503) and kills every session token after every 25 requests it
//! receives (tokens die throughout the batch however fast it runs), while a batch of
//! containers is attached and detached through the real workflow and a real weft-agent (the
//! host of `e2e.rs`). Every attach must end `attached` and every detach must finish.

use std::time::Duration;

use sqlx::PgPool;

use crate::e2e::{agent_bin, assert_converged, attach, detach, register, weft_on, Host};
use crate::helpers::apic_settings;

#[sqlx::test(migrations = "./migrations")]
async fn every_attach_and_detach_completes_while_the_apic_sheds_load_and_expires_tokens(
    db: PgPool,
) {
    let Some(bin) = agent_bin("e2e hostile APIC") else {
        return;
    };
    let mut config = apic_sim::SimConfig::new(apic_sim::Topology::example().unwrap());
    // Tokens also time out on their own after three seconds of idleness. Logins are not
    // throttled here: tokens die far more often than a real APIC's two logins a second allow.
    config.token_lifetime = Duration::from_secs(3);
    config.faults.login_rate_per_sec = None;
    let sim = apic_sim::spawn(config).await.unwrap();
    // The client as deployed (four attempts per request), with short waits between them.
    let mut apic = apic_settings(&sim.url, "password");
    apic.client.retry.max_attempts = 4;
    apic.client.retry.max_delay = Duration::from_millis(100);
    let app = weft_on(db.clone(), &sim, apic).await;
    let mut host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;

    sim.reset_counts();
    sim.set_faults(apic_sim::FaultConfig {
        overload_rate: 0.2,
        ..sim.faults()
    });
    let expiry = {
        let state = sim.state.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                let seen: u64 = state.counts().values().sum();
                if seen >= last + 25 {
                    state.expire_tokens();
                    last = seen;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    const N: usize = 20;
    let targets: Vec<(uuid::Uuid, String)> = (0..N)
        .map(|_| (uuid::Uuid::new_v4(), host.container()))
        .collect();
    let attached =
        futures::future::join_all(targets.iter().map(|(id, ns)| attach(&app, *id, ns))).await;
    for a in &attached {
        assert_eq!(a["state"], "attached", "{a}");
    }
    assert!(
        sim.count("login") > 2,
        "tokens died during the batch and were replaced: {:?}",
        sim.counts()
    );
    futures::future::join_all(targets.iter().map(|(id, _)| detach(&app, *id))).await;
    // The binding's removal after the linger goes through the same faults.
    let live = assert_converged(&db, &sim, &[("host-1", &host)]).await;
    expiry.abort();
    assert_eq!(live, 0);
}
