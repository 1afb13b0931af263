//! The hasher of the router's string-keyed maps: rustc-hash's `FxHasher`, unkeyed.
//!
//! Every key in the router's maps comes from the route files, and a request can only *probe* the
//! maps, never insert, so a client cannot lengthen a probe sequence: the flooding attack that
//! SipHash's random keys defend against does not apply. What matters on the request path is the
//! cost of hashing short strings (host names, path segments), which Fx does in a few
//! nanoseconds.

/// A `HashMap` with rustc-hash's hasher.
pub(super) type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;
