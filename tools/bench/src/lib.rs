//! Benchmark tooling for flagsync: a deterministic generator of realistic
//! 33-column HR CSV files (`hrgen`), its "next day" variant, and the shared
//! CSV helpers the binaries use.

pub mod csvio;
pub mod data;
pub mod gen;
pub mod rng;
