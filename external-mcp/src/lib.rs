//! external-mcp: the product-level MCP server, run by the user's own MCP host.
//!
//! It speaks only to demo-backend's public REST API, with the user's own token, and never touches
//! the database or depends on the demo-backend crate (see ARCHITECTURE.md): [`api`] is its own
//! small typed client of the OpenAPI contract. Over stdio it serves the one user whose token it
//! was given ([`credentials`]); over Streamable HTTP ([`http`]) every request brings its caller's
//! token, or an OAuth access token issued for this server, which [`oauth`] validates and exchanges
//! for an API token. [`server`] decides which tools a caller sees; [`tools`], [`resources`], [`prompts`] and
//! [`completion`] implement them; [`bounded`] keeps every result small and pageable.

pub mod api;
pub mod bounded;
pub mod completion;
pub mod config;
pub mod credentials;
pub mod error;
pub mod http;
pub mod links;
pub mod oauth;
pub mod prompts;
pub mod resources;
pub mod server;
pub mod stdio;
pub mod tools;

pub use config::{Config, Launch, Settings};
pub use error::Error;
pub use server::{CallerSource, ExternalServer, Shared};

/// Runs the configured transport until the host goes away (stdio) or a shutdown signal (HTTP).
pub async fn run(launch: Launch) -> anyhow::Result<()> {
    match launch {
        Launch::Stdio { settings, token } => {
            let shared = Shared::new(settings)?;
            stdio::serve(shared, token).await
        }
        Launch::Http { settings, http } => {
            let shared = Shared::new(settings)?;
            let listener = tokio::net::TcpListener::bind(http.listen)
                .await
                .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", http.listen))?;
            tracing::info!(address = %listener.local_addr()?, endpoint = http::MCP_PATH, "serving MCP over HTTP");
            http::serve(listener, shared, http, shutdown_signal()).await?;
            Ok(())
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
