//! End-to-end tests: the real binaries as child processes, PostgreSQL from the harness, real
//! HTTP. One test binary for the crate keeps link times down.

mod backend_binary;
