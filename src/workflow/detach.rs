//! Detach: take one container interface out of its EPG, the reverse of attach.
//!
//! The steps, in order (each idempotent; the attachment is `detaching` throughout):
//!
//! | step      | does |
//! |-----------|------|
//! | `unwire`  | the agent removes the container's interface |
//! | `segment` | the agent removes the VLAN segment unless another container uses it |
//! | `unbind`  | the attachment's binding references are dropped; a binding left without any is removed from the APIC after the linger |
//! | `release` | the address goes into quarantine (a reservation keeps it) |
//! | `forget`  | the attachment row is deleted; its operation stays readable |

use super::context::Ctx;
use super::jobs::Step;
use super::{attach, StepError};

pub const STEPS: &[Step] = &[
    Step::new("unwire", "detaching"),
    Step::new("segment", "detaching"),
    Step::new("unbind", "detaching"),
    Step::new("release", "detaching"),
    Step::new("forget", "detaching"),
];

pub async fn run(ctx: &Ctx<'_>, step: &str) -> Result<(), StepError> {
    match step {
        "unwire" => attach::unwire(ctx).await,
        "segment" => attach::remove_segment(ctx).await,
        "unbind" => attach::unbind(ctx).await,
        "release" => attach::release(ctx).await,
        "forget" => forget(ctx).await,
        other => Err(StepError::permanent(
            "job log",
            format!("unknown step `{other}`"),
        )),
    }
}

/// Deletes the attachment; nothing references it any more.
async fn forget(ctx: &Ctx<'_>) -> Result<(), StepError> {
    sqlx::query!("DELETE FROM attachments WHERE id = $1", ctx.id)
        .execute(ctx.db())
        .await?;
    Ok(())
}
