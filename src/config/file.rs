//! Serde structs mirroring the TOML files.
