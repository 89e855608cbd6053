//! Signals become commands in the runtime's queue. Its own test binary: it signals itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_gateway::control::{ControlPlane, SignalHandler};
use gatekit_gateway::status::Command;
use std::time::{Duration, Instant};

fn next_command(control: &ControlPlane) -> Option<Command> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(req) = control.try_recv() {
            return Some(req.command().clone());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn hup_reloads_term_and_int_stop() {
    let control = ControlPlane::new();
    let handler = SignalHandler::install(control.handle()).unwrap();
    let pid = std::process::id().to_string();
    let kill = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill("-HUP");
    assert_eq!(next_command(&control), Some(Command::Reload));
    kill("-TERM");
    assert_eq!(next_command(&control), Some(Command::Stop));
    handler.stop();
    assert!(control.try_recv().is_none());
}
