//! `shardgate`: parse flags, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use tracing_subscriber::prelude::*;
    let cli = shardgate::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = cli.log_format == shardgate::cli::LogFormat::Json;
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json.then_some(shardgate_router::log::JsonStderr))
        .with(shardgate_router::log::RecentLog)
        .init();
    match shardgate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
