//! The gateway's command line, shared by the `gatekit-gateway` binary and the `gateway`
//! example.
//!
//! - no arguments: the built-in two-site demo, in memory (no root, no network);
//! - `-c site.toml`: the gateway on real TUN/TAP devices and sockets (root);
//! - `-c site.toml --check`: validate the config and its firewall rules, then exit.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Demo and run modes.
#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "The gatekit gateway: IPsec, firewall, routing, bridging"
)]
struct Args {
    /// Site configuration (TOML). Without it, the built-in in-memory demo runs.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Validate the configuration (and its firewall rules) and exit.
    #[arg(long, requires = "config")]
    check: bool,
    /// Where the demo writes its pcap files (default: the system's temporary directory).
    #[arg(long)]
    pcap_dir: Option<PathBuf>,
    /// Log filter (overrides the config's `gateway.log` and RUST_LOG), e.g. `info` or
    /// `gatekit_gateway=debug,info`.
    #[arg(long)]
    log: Option<String>,
}

/// Parses the command line and runs; the process's exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();

    match (&args.config, args.check) {
        (None, _) => {
            let dir = args
                .pcap_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("gatekit-demo"));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                eprintln!("error: {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
            match crate::lab::demo::run(&mut std::io::stdout(), Some(&dir)) {
                Ok(o) if o.all_ok() => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(path), true) => match crate::runtime::check(path) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        (Some(path), false) => {
            let opts = crate::runtime::RunOptions {
                config: path.clone(),
            };
            match crate::runtime::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
