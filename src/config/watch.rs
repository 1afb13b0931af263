//! Watches `routes_dir` (and `certs_dir`) and asks for a debounced reload.
