//! `internal-host`: parses the command line, starts logging (to stderr), and runs the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = internal_host::cli::Cli::parse();
    match internal_host::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("internal-host: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
