//! SQL for each aggregate, as free functions over a connection or transaction so handlers
//! compose them inside one transaction.

pub mod audit;
pub mod epgs;
pub mod hosts;
pub mod pools;
pub mod subnets;

/// Outcome of deleting a named row that other rows may still use.
pub enum Deleted {
    Missing,
    /// Not deleted: this many rows still use it.
    InUse(i64),
    Done,
}
