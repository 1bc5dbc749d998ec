//! Logging to stderr, with the payload-carrying targets held at INFO whatever `RUST_LOG` says.
//!
//! rmcp logs whole requests and results at DEBUG and TRACE (confirmation tokens and tenant rows
//! included), and sqlx logs statement text at DEBUG. Those events never reach the log: the cap is
//! a filter on the output layer, applied after `RUST_LOG`'s, so no directive can lift it.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

/// Targets (and their children) that may log request or result payloads below INFO.
pub const PAYLOAD_TARGETS: [&str; 2] = ["rmcp", "sqlx"];

/// Whether an event or span may be logged at all: anything but a payload target below INFO.
pub fn allowed(metadata: &Metadata<'_>) -> bool {
    let payload_target = PAYLOAD_TARGETS.iter().any(|target| {
        metadata.target() == *target
            || metadata
                .target()
                .strip_prefix(target)
                .is_some_and(|rest| rest.starts_with("::"))
    });
    !(payload_target && *metadata.level() > Level::INFO)
}

/// What is logged when `RUST_LOG` is not set. rmcp is held at WARN: the transport is stateless,
/// so rmcp starts and ends a service for every request and says so in three INFO lines.
pub const DEFAULT_FILTER: &str = "info,rmcp=warn";

/// Installs the global subscriber: `RUST_LOG` (default [`DEFAULT_FILTER`]), capped by
/// [`allowed`], to stderr.
pub fn init() {
    let env_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(env_filter)
                .with_filter(FilterFn::new(allowed)),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a subscriber like [`init`]'s, with `filter` in place of `RUST_LOG`, writes of the
    /// events `log` emits.
    fn logged_with(filter: &str, log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .with_writer(move || writer.clone())
                .with_filter(EnvFilter::new(filter))
                .with_filter(FilterFn::new(allowed)),
        );
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn payload_targets_stay_quiet_below_info_even_at_rust_log_trace() {
        let logged = logged_with("trace,rmcp::service=trace,sqlx::query=trace", || {
            tracing::debug!(target: "rmcp::service", "received request imc_secret_token");
            tracing::trace!(target: "rmcp::transport::streamable_http_server::tower", "message row-of-globex");
            tracing::debug!(target: "sqlx::query", "SELECT secret");
            tracing::info!(target: "rmcp::service", "service started");
            tracing::debug!(target: "internal_mcp::server", "our own debug line");
            tracing::debug!(target: "rmcpx", "a neighbour's debug line");
        });
        assert!(!logged.contains("imc_secret_token"), "{logged}");
        assert!(!logged.contains("row-of-globex"), "{logged}");
        assert!(!logged.contains("SELECT secret"), "{logged}");
        assert!(logged.contains("service started"), "{logged}");
        assert!(logged.contains("our own debug line"), "{logged}");
        assert!(logged.contains("a neighbour's debug line"), "{logged}");
    }

    #[test]
    fn by_default_rmcps_per_request_lines_stay_out_and_ours_and_its_warnings_stay_in() {
        let logged = logged_with(DEFAULT_FILTER, || {
            tracing::info!(target: "rmcp::service", "Service initialized as server");
            tracing::warn!(target: "rmcp::service", "a transport warning");
            tracing::info!(target: "internal_mcp::cli", "internal-mcp is serving");
        });
        assert!(!logged.contains("Service initialized"), "{logged}");
        assert!(logged.contains("a transport warning"), "{logged}");
        assert!(logged.contains("internal-mcp is serving"), "{logged}");
    }
}
