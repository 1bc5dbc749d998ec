//! `internal-mcp`: parses the command line, starts logging (to stderr, payload targets capped), and runs the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    internal_mcp::logging::init();
    let cli = internal_mcp::cli::Cli::parse();
    match internal_mcp::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("internal-mcp: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
