//! Placeholder until the component's benchmark lands.
fn main() {}
