//! Configuration paths: addresses, MTU and link state through the `ip` command, and network
//! namespaces. None of this is on the data path.

use crate::IoError;
use std::net::IpAddr;
use std::process::Command;

/// Runs `ip` with `args` and returns what it printed; a non-zero exit is an
/// [`IoError::Command`] carrying its standard error.
pub fn ip(args: &[&str]) -> Result<String, IoError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| IoError::Command {
            args: joined.clone(),
            stderr: format!("cannot run ip: {e}"),
        })?;
    if !out.status.success() {
        return Err(IoError::Command {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sets the MTU of interface `dev`.
pub fn set_mtu(dev: &str, mtu: u32) -> Result<(), IoError> {
    ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()]).map(drop)
}

/// Adds `addr/prefix` to interface `dev`.
pub fn add_address(dev: &str, addr: IpAddr, prefix: u8) -> Result<(), IoError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(IoError::Invalid {
            field: "prefix",
            reason: format!("{prefix} is longer than {max} for {addr}"),
        });
    }
    ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", dev]).map(drop)
}

/// Brings interface `dev` up.
pub fn set_up(dev: &str) -> Result<(), IoError> {
    ip(&["link", "set", "dev", dev, "up"]).map(drop)
}

/// Moves the calling thread (only it) into the named network namespace (one made by
/// `ip netns add`, found under `/var/run/netns`). Sockets and TUN devices the thread opens
/// afterwards belong to that namespace; ones it opened before stay where they were.
pub fn enter_netns(name: &str) -> Result<(), IoError> {
    if name.is_empty() || name.contains('/') {
        return Err(IoError::Invalid {
            field: "netns",
            reason: format!("{name:?} is not a namespace name"),
        });
    }
    let path = format!("/var/run/netns/{name}");
    let f =
        std::fs::File::open(&path).map_err(|e| IoError::os("open network namespace", &path, e))?;
    crate::sys::setns_net(std::os::fd::AsFd::as_fd(&f))
        .map_err(|e| IoError::os("enter network namespace", &path, e))
}

/// A network namespace that is deleted when this value is dropped (for tests and labs).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates namespace `name` (`ip netns add`) with its loopback up.
    pub fn create(name: &str) -> Result<Self, IoError> {
        ip(&["netns", "add", name])?;
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Runs `ip` inside the namespace (`ip -n NAME ...`).
    pub fn ip(&self, args: &[&str]) -> Result<String, IoError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
    /// Runs a command inside the namespace (`ip netns exec NAME ...`) and returns its output;
    /// a non-zero exit is an error carrying its standard error.
    pub fn exec(&self, cmd: &[&str]) -> Result<String, IoError> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(cmd);
        ip(&all)
    }
    /// Moves the calling thread into the namespace (see [`enter_netns`]).
    pub fn enter(&self) -> Result<(), IoError> {
        enter_netns(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
