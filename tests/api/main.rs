//! The one integration-test binary of the `weft` package: the app runs in-process on a random
//! port against a fresh Postgres database per test (`#[sqlx::test]`).

mod apic;
mod attachments;
mod audit;
mod auth_matrix;
mod bad_input;
mod binary;
mod concurrency;
mod e2e;
mod e2e_faults;
mod epgs;
mod health;
mod helpers;
mod hosts;
mod openapi;
mod pools;
mod proof;
mod quarantine;
mod reconcile;
mod reservations;
mod tokens;
