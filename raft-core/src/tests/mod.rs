//! In-crate tests that need the protocol's internals.
