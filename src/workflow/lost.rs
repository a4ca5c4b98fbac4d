//! The `lost` path: a container that is gone (destroyed, its namespace deleted) keeps its
//! attachment `lost` for the grace period, then a detach releases it, unless the container
//! comes back first. Taken by agents' `destroyed` events and by the reconciler when an agent
//! reports an attachment's target missing.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::jobs::{self, Kind};

/// Makes an `attached` attachment without a job `lost` and queues its detach after `grace`,
/// inside the caller's transaction (which should hold the attachment's row). True when it was
/// marked; the container is recorded as gone either way.
pub async fn mark_lost(
    tx: &mut PgConnection,
    id: Uuid,
    grace: Duration,
    request_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let state = sqlx::query_scalar!("SELECT state FROM attachments WHERE id = $1", id)
        .fetch_optional(&mut *tx)
        .await?;
    let marked = state.as_deref() == Some("attached") && jobs::live(tx, id).await?.is_none();
    if marked {
        let job = jobs::enqueue(tx, Kind::Detach, id, request_id, grace).await?;
        sqlx::query!(
            "UPDATE attachments SET state = 'lost', lost_at = now(), operation_id = $2 WHERE id = $1",
            id,
            job
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "UPDATE attachments SET container_status = 'gone', updated_at = now() WHERE id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    Ok(marked)
}
