//! Removes what the harness created when the test process exits.
//!
//! Rust runs no destructors for statics, and the test runner ends the process with `exit`, so the
//! harness registers a C `atexit` hook instead: it stops and removes the container, or, on an
//! existing server, drops the databases this process created. Ctrl-C is covered by
//! testcontainers' watchdog; a `kill -9` leaves a labelled container for `.ci/run` to sweep.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::server::REMOVAL_TIMEOUT;

#[derive(Default)]
struct Cleanup {
    /// Tells the container's thread to remove it, and hears when it has.
    container: Option<(Sender<()>, Receiver<()>)>,
    /// Set when the tests use an existing server: the databases to drop there.
    external_server: Option<PgConnectOptions>,
    databases: Vec<String>,
}

static CLEANUP: Mutex<Option<Cleanup>> = Mutex::new(None);

pub(crate) fn on_exit_stop_container(stop: Sender<()>, stopped: Receiver<()>) {
    with_cleanup(|cleanup| cleanup.container = Some((stop, stopped)));
}

pub(crate) fn on_exit_drop_databases(server: PgConnectOptions) {
    with_cleanup(|cleanup| cleanup.external_server = Some(server));
}

pub(crate) fn remember_database(name: &str) {
    with_cleanup(|cleanup| cleanup.databases.push(name.to_owned()));
}

fn with_cleanup(change: impl FnOnce(&mut Cleanup)) {
    let mut guard = CLEANUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.is_none() {
        register_exit_hook();
    }
    change(guard.get_or_insert_with(Cleanup::default));
}

#[allow(unsafe_code)]
fn register_exit_hook() {
    extern "C" fn run_cleanup() {
        let cleanup = CLEANUP
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(cleanup) = cleanup {
            cleanup.run();
        }
    }
    // SAFETY: `atexit` only stores the function pointer. `run_cleanup` ignores every error rather
    // than panicking, and a panic could not unwind out of an `extern "C" fn` anyway (it aborts).
    unsafe {
        libc::atexit(run_cleanup);
    }
}

impl Cleanup {
    fn run(self) {
        if let Some((stop, stopped)) = self.container {
            if stop.send(()).is_ok() {
                let _ = stopped.recv_timeout(REMOVAL_TIMEOUT);
            }
            return;
        }
        if let Some(server) = self.external_server {
            drop_databases(server, &self.databases);
        }
    }
}

fn drop_databases(server: PgConnectOptions, databases: &[String]) {
    // On a thread of its own: at exit the main thread's thread-locals (tokio's among them) may
    // already be gone.
    let databases = databases.to_vec();
    let worker = std::thread::spawn(move || drop_databases_now(server, &databases));
    let _ = worker.join();
}

fn drop_databases_now(server: PgConnectOptions, databases: &[String]) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let Ok(mut admin) = server.disable_statement_logging().connect().await else {
            return;
        };
        // Newest first: test databases before the templates they were copied from.
        for name in databases.iter().rev() {
            let _ = sqlx::query(&format!(
                r#"ALTER DATABASE "{name}" WITH IS_TEMPLATE false"#
            ))
            .execute(&mut admin)
            .await;
            let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                .execute(&mut admin)
                .await;
        }
        let _ = admin.close().await;
    });
}
