//! The sweeper: removes from the APIC the bindings whose last reference left more than the
//! linger ago, those of one EPG in one request (as the bind step adds them). They are taken
//! under their row locks (`SKIP LOCKED`, so replicas share the work and an attach taking a
//! binding again waits or wins, inserting it anew if it lost), removed on the APIC, then
//! deleted; an APIC error leaves them for the next round, with the fault recorded. A binding
//! that someone else's object replaced on the APIC is left alone there and forgotten here.

use std::sync::Arc;
use std::time::Duration;

use weft_apic::{EpgKey, PathDn};

use super::Engine;

/// How often the sweeper looks for bindings to remove.
const EVERY: Duration = Duration::from_secs(1);

pub async fn run(engine: Arc<Engine>) {
    loop {
        tokio::time::sleep(EVERY).await;
        loop {
            match sweep_one(&engine).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "removing a lingering binding failed");
                    break;
                }
            }
        }
    }
}

/// Removes the bindings of one EPG that are past their linger, in one APIC request; false
/// when there were none. The oldest such binding picks the EPG; the others of that EPG are
/// taken along unless another replica holds them.
async fn sweep_one(engine: &Engine) -> anyhow::Result<bool> {
    let mut tx = engine.poll_db.begin().await?;
    let first = sqlx::query_scalar!(
        "SELECT epg_id FROM bindings WHERE ref_count = 0 AND release_after <= now()
         ORDER BY release_after LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(epg_id) = first else {
        return Ok(false);
    };
    let rows = sqlx::query!(
        "SELECT b.id, b.path_dn, e.tenant, e.app, e.name FROM bindings b JOIN epgs e ON e.id = b.epg_id
         WHERE b.epg_id = $1 AND b.ref_count = 0 AND b.release_after <= now()
         ORDER BY b.path_dn FOR UPDATE OF b SKIP LOCKED",
        epg_id
    )
    .fetch_all(&mut *tx)
    .await?;
    let Some(any) = rows.first() else {
        return Ok(false);
    };
    let epg = EpgKey::new(&any.tenant, &any.app, &any.name)?;
    let paths = rows
        .iter()
        .map(|r| PathDn::parse(&r.path_dn))
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    if let Some(apic) = &engine.apic {
        match apic.client.delete_bindings(&epg, &paths).await {
            // Never touched: someone else's binding now holds the path; ours is gone.
            Ok(foreign) => {
                for path in foreign {
                    tracing::warn!(epg = %epg, path = %path, "a binding on the path is not Weft's; left alone, forgotten here");
                }
            }
            Err(e) => {
                drop(tx);
                sqlx::query!(
                    "UPDATE bindings SET last_fault = $2, release_after = now() + interval '5 seconds'
                     WHERE id = ANY($1) AND ref_count = 0",
                    &ids,
                    e.to_string(),
                )
                .execute(&engine.db)
                .await?;
                return Err(e.into());
            }
        }
    }
    sqlx::query!("DELETE FROM bindings WHERE id = ANY($1)", &ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(epg = %epg, bindings = ids.len(), "bindings removed after their last attachment left");
    Ok(true)
}
