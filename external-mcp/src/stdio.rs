//! The stdio transport: one user, whose token comes from the configuration.
//!
//! Only protocol goes to stdout (logs go to stderr). At start the token is checked against
//! `GET /api/v1/me` in the background; a missing or rejected token is logged and the server
//! still starts, so every tool can answer with a clear "your token was rejected by <url>: ..."
//! instead of the host seeing a server that died. The server ends cleanly when the host closes
//! stdin.

use std::sync::Arc;

use rmcp::ServiceExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::TokenSource;
use crate::credentials::StdioCredentials;
use crate::server::{CallerSource, ExternalServer, Shared};

/// Serves over the process's stdin and stdout until the host closes stdin.
pub async fn serve(shared: Arc<Shared>, token: TokenSource) -> anyhow::Result<()> {
    serve_on(shared, token, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves over any byte stream pair (stdio, or an in-process pipe in tests).
pub async fn serve_on<R, W>(
    shared: Arc<Shared>,
    token: TokenSource,
    input: R,
    output: W,
) -> anyhow::Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let credentials = Arc::new(StdioCredentials::new(token));
    // In the background: a slow API must not delay the host's handshake.
    tokio::spawn(check_token_at_start(shared.clone(), credentials.clone()));
    let server = ExternalServer::new(shared, CallerSource::Stdio(credentials));
    let running = server.serve((input, output)).await?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "the MCP host closed the connection");
    Ok(())
}

/// Logs whether the token works; never fails, so the host always gets a server to talk to.
async fn check_token_at_start(shared: Arc<Shared>, credentials: Arc<StdioCredentials>) {
    let token = match credentials.current() {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!("{}", error.for_tool("use the API"));
            return;
        }
    };
    let never_cancelled = tokio_util::sync::CancellationToken::new();
    match shared
        .identities
        .validate(&shared.api, &token, &never_cancelled)
        .await
    {
        Ok(identity) => tracing::info!(
            organization = %identity.organization_slug,
            user = %identity.user_email,
            scopes = %identity.scopes.join(","),
            "the API token works"
        ),
        Err(error) => tracing::warn!("{}", error.for_tool("use the API")),
    }
}
