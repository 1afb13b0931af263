//! Where an upstream's endpoints come from: a static list, DNS, ZooKeeper or Consul.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A static endpoint: `host:port` plus weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StaticEndpoint {
    /// `host:port` (an IP literal or a name resolved when connecting).
    pub address: String,
    /// Relative weight, at least 1.
    pub weight: u32,
}

/// `endpoints = [...]` or `discovery = {...}`.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscoveryConfig {
    /// `endpoints = [...]`.
    Static(Vec<StaticEndpoint>),
    /// `discovery = { type = "dns", ... }`.
    Dns {
        /// Name to resolve.
        name: String,
        /// Port for `record = "a"`.
        port: u16,
        /// A/AAAA or SRV.
        record: DnsRecord,
        /// Upper bound on the re-resolution interval (default 30 s).
        refresh: Duration,
        /// Resolver override.
        resolver: Option<SocketAddr>,
    },
    /// `discovery = { type = "zookeeper", ... }`.
    ZooKeeper {
        /// Connect string.
        servers: String,
        /// Parent node whose children are the members.
        path: String,
        /// Member data format.
        format: ZkFormat,
        /// Serverset `additionalEndpoints` key.
        endpoint_name: Option<String>,
        /// Session timeout (default 10 s).
        session_timeout: Duration,
    },
    /// `discovery = { type = "consul", ... }`.
    Consul {
        /// Agent address, e.g. `http://127.0.0.1:8500` or `https://consul.internal:8501`.
        address: ConsulAddress,
        /// Service name.
        service: String,
        /// `tag` filter.
        tag: Option<String>,
        /// `dc`.
        datacenter: Option<String>,
        /// `passing` (default true).
        passing_only: bool,
        /// Name of the env var holding the ACL token.
        token_env: Option<String>,
        /// Blocking-query `wait` (default 5 m).
        wait: Duration,
        /// `tls_ca`: the PEM bundle that verifies an `https://` agent; default the webpki
        /// roots. Only with an `https://` address.
        tls_ca: Option<PathBuf>,
        /// `tls_insecure_skip_verify` (warned at load). Only with an `https://` address.
        tls_insecure_skip_verify: bool,
    },
}

impl DiscoveryConfig {
    /// The `type` shown in `/upstreams` and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoveryConfig::Static(_) => "static",
            DiscoveryConfig::Dns { .. } => "dns",
            DiscoveryConfig::ZooKeeper { .. } => "zookeeper",
            DiscoveryConfig::Consul { .. } => "consul",
        }
    }
}

/// A Consul agent's address: `http://` or `https://`, a host and a port, and nothing else
/// (no path, query or user info). Only [`ConsulAddress::parse`] makes one, and validation calls
/// it, so `switchyard check` and the running gateway accept exactly the same addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsulAddress {
    // Not private: `parse`, the one constructor, sits with the other address checks in
    // `validate`.
    pub(in crate::config) https: bool,
    /// As written: a name, an IPv4 address, or an IPv6 address in brackets.
    pub(in crate::config) host: String,
    pub(in crate::config) port: u16,
}

impl ConsulAddress {
    /// Whether the agent is spoken to over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for ConsulAddress {
    /// `scheme://host:port`, the prefix of every request URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// DNS record kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsRecord {
    /// A + AAAA.
    A,
    /// SRV.
    Srv,
}

/// ZooKeeper member format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZkFormat {
    /// Try curator, serverset, hostport per node.
    Auto,
    /// Curator x-discovery JSON.
    Curator,
    /// Finagle serverset JSON.
    Serverset,
    /// `host:port` in data or child name.
    HostPort,
}
