//! The gatekit gateway.
//!
//! - no arguments: the built-in two-site demo, in memory (no root, no network);
//! - `-c site.toml`: the gateway on real TUN/TAP devices and sockets (root);
//! - `-c site.toml --check`: validate the config and its firewall rules, then exit.

fn main() -> std::process::ExitCode {
    gatekit::gateway::cli::main()
}
