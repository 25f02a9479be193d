//! The compiled policy: everything the data path consults per request, built once per config.

/// Placeholder.
pub struct Policy;
