//! Domain types live in `weft-domain`, shared with the APIC client; re-exported here so the
//! service keeps its `crate::domain::...` paths.

pub use weft_domain::*;
