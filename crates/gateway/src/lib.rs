//! The gatekit gateway: config model, pipeline assembly, control plane and the in-memory lab.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod control;
pub mod filter;
pub mod lab;
pub mod pipeline;
pub mod routing;
pub mod runtime;
pub mod status;
