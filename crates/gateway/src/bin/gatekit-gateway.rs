//! The gatekit gateway (see `gatekit_gateway::cli`).

fn main() -> std::process::ExitCode {
    gatekit_gateway::cli::main()
}
