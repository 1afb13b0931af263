//! `[gateway] routes_source` and `routes_cache`: fleet mode, where the route files live in
//! ZooKeeper or Consul KV instead of `routes_dir` (docs/fleet.md).

use std::fmt;
use std::time::Duration;

use super::discovery::ConsulAddress;

/// Where a fleet's route files are published.
#[derive(Clone, Debug, PartialEq)]
pub enum RoutesSource {
    /// ZooKeeper: `<path>/routes/<file>`, `<path>/version`, `<path>/members/<id>`.
    ZooKeeper {
        /// Connect string, `host:port,host:port`.
        servers: String,
        /// The fleet's node, without a trailing `/`.
        path: String,
        /// Session timeout asked for (a member node is gone this long after its gateway).
        session_timeout: Duration,
        /// Digest credentials from `auth_env`, read at load.
        auth: Option<ZkAuth>,
    },
    /// Consul KV: the same keys under `prefix`.
    Consul {
        /// The agent.
        address: ConsulAddress,
        /// The fleet's key prefix, without leading or trailing `/`.
        prefix: String,
        /// Variable holding the ACL token, read at every request (a rotated token is used at
        /// once).
        token_env: Option<String>,
        /// CA bundle an `https://` agent's certificate is verified against (default: the
        /// webpki roots).
        tls_ca: Option<std::path::PathBuf>,
    },
}

impl RoutesSource {
    /// `zookeeper` or `consul`.
    pub fn kind(&self) -> &'static str {
        match self {
            RoutesSource::ZooKeeper { .. } => "zookeeper",
            RoutesSource::Consul { .. } => "consul",
        }
    }

    /// Where the fleet lives, for messages: `zookeeper 127.0.0.1:2181/switchyard/edge`.
    pub fn describe(&self) -> String {
        match self {
            RoutesSource::ZooKeeper { servers, path, .. } => format!("zookeeper {servers}{path}"),
            RoutesSource::Consul { address, prefix, .. } => format!("consul {address} {prefix}/"),
        }
    }
}

/// ZooKeeper digest credentials (`user:password`). The password never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAuth {
    /// The user.
    pub user: String,
    /// `user:password`, as the digest scheme takes it.
    pub(crate) credentials: String,
}

impl ZkAuth {
    /// Parse `user:password`.
    pub(crate) fn parse(value: &str) -> Result<ZkAuth, &'static str> {
        match value.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(ZkAuth { user: user.to_owned(), credentials: value.to_owned() })
            }
            _ => Err("does not hold \"user:password\""),
        }
    }

    /// The ACL id ZooKeeper's digest scheme gives this identity:
    /// `user:base64(sha1("user:password"))`.
    pub fn digest_id(&self) -> String {
        use base64::Engine;
        let hash = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, self.credentials.as_bytes());
        format!("{}:{}", self.user, base64::engine::general_purpose::STANDARD.encode(hash.as_ref()))
    }
}

impl fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZkAuth({}:<redacted>)", self.user)
    }
}
