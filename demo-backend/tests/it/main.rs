//! demo-backend's integration tests: the real API over HTTP against PostgreSQL from the harness.
//! One test binary for the crate keeps link times down.

mod api_reads;
mod api_writes;
mod oauth;
mod seed;
mod support;
