//! Fault-injecting drive wrapper for tests (being written).
