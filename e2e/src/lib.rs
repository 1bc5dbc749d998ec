//! End-to-end tests live in `tests/`: they build and start the real binaries as child processes,
//! against PostgreSQL from the test harness. Nothing in the workspace depends on this crate.
