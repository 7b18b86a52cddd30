//! Unit and property tests of the pure core (no store, no files).
