//! Wire types and typed client of the weft-agent API.
