//! Placeholder until the comparison benchmark lands.
fn main() {}
