//! The sweeper: removes from the APIC the bindings whose last reference left more than the
//! linger ago. Each binding is taken under its row lock (`SKIP LOCKED`, so replicas share the
//! work and an attach taking the binding again waits or wins), removed on the APIC, then
//! deleted; an APIC error leaves it for the next round, with the fault recorded.

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

/// Removes one binding past its linger; false when there was none.
async fn sweep_one(engine: &Engine) -> anyhow::Result<bool> {
    let mut tx = engine.poll_db.begin().await?;
    let row = sqlx::query!(
        "SELECT b.id, b.path_dn, e.tenant, e.app, e.name FROM bindings b JOIN epgs e ON e.id = b.epg_id
         WHERE b.ref_count = 0 AND b.release_after <= now()
         ORDER BY b.release_after LIMIT 1 FOR UPDATE OF b SKIP LOCKED"
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let epg = EpgKey::new(&row.tenant, &row.app, &row.name)?;
    let path = PathDn::parse(&row.path_dn)?;
    if let Some(apic) = &engine.apic {
        if let Err(e) = apic.client.delete_binding(&epg, &path).await {
            drop(tx);
            sqlx::query!(
                "UPDATE bindings SET last_fault = $2, release_after = now() + interval '5 seconds'
                 WHERE id = $1 AND ref_count = 0",
                row.id,
                e.to_string(),
            )
            .execute(&engine.db)
            .await?;
            return Err(e.into());
        }
    }
    sqlx::query!("DELETE FROM bindings WHERE id = $1", row.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(epg = %epg, path = %path, "binding removed after its last attachment left");
    Ok(true)
}
