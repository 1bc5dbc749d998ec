//! End-to-end tests: the real binaries as child processes, PostgreSQL from the harness, real
//! HTTP. One test binary for the crate keeps link times down.

mod architecture;
mod assistant_browser;
mod backend_binary;
mod browser_sign_in;
mod external_path;
mod internal_path;
mod oauth_python;
