//! The validated runtime model: plain types with parsed durations, addresses and compiled
//! regexes, re-exported from `config` (nothing here knows the file format).

pub(super) mod discovery;
pub(super) mod fleet;
pub(super) mod gateway;
pub(super) mod route;
pub(super) mod upstream;
