//! `gatekitctl`: ask a running gatekit gateway what it is doing, and tell it what to do.
//!
//! ```text
//! gatekitctl [-s SOCKET] [--json] status|sas|routes|advertised|macs|conntrack|counters|rules
//! gatekitctl [-s SOCKET] reload|stop
//! gatekitctl [-s SOCKET] capture start PORT FILE
//! gatekitctl [-s SOCKET] capture stop PORT
//! ```
//!
//! The socket is the gateway's `gateway.ctl` (default: `$GATEKIT_CTL`, else
//! `/run/gatekit/gatekit.sock`). Exit status: 0 done, 1 the gateway refused, 2 bad arguments,
//! 3 the gateway could not be reached.

use clap::{Parser, Subcommand};
use gatekit_gateway::control::ctl::{self, Action, View};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "gatekitctl", about = "Control a running gatekit gateway")]
struct Args {
    /// The gateway's control socket (default: $GATEKIT_CTL, else /run/gatekit/gatekit.sock).
    #[arg(short, long, value_name = "SOCKET")]
    socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Overview: name, uptime, configuration generation, table sizes and interfaces.
    Status,
    /// IPsec security associations.
    Sas,
    /// The routing table (RIB; `*` marks selected routes, `-` disabled ones).
    Routes,
    /// What the gateway advertises to the mesh (prefix, source, metric, tag).
    Advertised,
    /// The MAC tables of the bridge domains.
    Macs,
    /// Tracked connections.
    Conntrack,
    /// Interface counters and drops by reason.
    Counters,
    /// Firewall rules with their hit counters.
    Rules,
    /// Re-read the configuration file and apply it (as SIGHUP does).
    Reload,
    /// Stop the gateway gracefully (as SIGTERM does).
    Stop,
    /// pcap capture of a port.
    #[command(subcommand)]
    Capture(CaptureCmd),
}

#[derive(Subcommand)]
enum CaptureCmd {
    /// Start writing what crosses PORT to FILE (which must not exist yet).
    Start {
        /// The port (interface or tunnel name).
        port: String,
        /// The pcap file to create.
        file: PathBuf,
    },
    /// Stop capturing PORT.
    Stop {
        /// The port.
        port: String,
    },
}

fn main() {
    let args = Args::parse();
    let action = match args.command {
        Cmd::Status => Action::Show(View::Status),
        Cmd::Sas => Action::Show(View::Sas),
        Cmd::Routes => Action::Show(View::Routes),
        Cmd::Advertised => Action::Show(View::Advertised),
        Cmd::Macs => Action::Show(View::Macs),
        Cmd::Conntrack => Action::Show(View::Conntrack),
        Cmd::Counters => Action::Show(View::Counters),
        Cmd::Rules => Action::Show(View::Rules),
        Cmd::Reload => Action::Reload,
        Cmd::Stop => Action::Stop,
        Cmd::Capture(CaptureCmd::Start { port, file }) => Action::CaptureStart { port, file },
        Cmd::Capture(CaptureCmd::Stop { port }) => Action::CaptureStop { port },
    };
    let socket = args.socket.unwrap_or_else(ctl::default_socket);
    if let Err(e) = ctl::run(&socket, &action, args.json, &mut std::io::stdout().lock()) {
        eprintln!("gatekitctl: {e}");
        std::process::exit(e.exit_code());
    }
}
