//! The fleet's ZooKeeper store: `<path>/routes/*`, `<path>/version`, `<path>/members/<id>`.
//!
//! - **Reading** takes two multi-reads (ZooKeeper 3.6+): the version and the file list, then
//!   the version again with every file. A publish changes `version` in the same transaction
//!   as the files, so when both reads see the same `version` (same `mzxid`), the files are
//!   exactly that version's; otherwise a publish came in between and the read is repeated.
//! - **Watching** is a data watch on `version` (an exists watch while it is missing), raced
//!   against the session leaving the connected state.
//! - **Publishing** is one `multi`: `version` set with its expected node version (or created),
//!   every file created, set or deleted. Two publishers racing cannot both win; the loser sees
//!   `BadVersion`/`NodeExists` and retries (or, with `--if-version`, stops).
//! - **Members** are ephemeral nodes of this gateway's session: gone when the session ends
//!   (a clean stop deletes the node first; a killed gateway's node goes when the session times
//!   out).
//! - **ACLs**: with `auth_env`, the client authenticates with the digest scheme, and the nodes
//!   a publish creates let that identity do everything and anyone read; `members` also lets
//!   anyone create (gateways need not hold the publishers' password). Each such publish sets
//!   these ACLs on `<path>`, `routes`, `members`, `version` and the route files already there
//!   again, so nodes a gateway (or a publisher without `auth_env`) made open are closed by it.
//!
//! One session serves everything; after it expires or the client closes, the next operation
//! opens a new one (and the member node is created again).

use std::time::Duration;

use tokio::sync::Mutex;
use zookeeper_client as zk;

use super::{route_files, PublishError, Published};
use crate::config::{RoutesSource, ZkAuth};

/// The largest multi request ZooKeeper takes by default (`jute.maxbuffer` is 1 MiB minus a
/// little); a set near it is refused before it is sent.
const MAX_SET_BYTES: usize = 1000 * 1024;

/// Consistent-read attempts before giving up (each lost to a concurrent publish).
const READ_ATTEMPTS: usize = 5;

#[derive(Debug)]
pub(crate) struct ZkStore {
    servers: String,
    path: String,
    session_timeout: Duration,
    auth: Option<ZkAuth>,
    /// The session, with the id of the member node created in it (if any).
    client: Mutex<Option<(zk::Client, Option<String>)>>,
}

fn err(what: &str, path: &str, e: impl std::fmt::Display) -> String {
    format!("ZooKeeper {what} {path}: {e}")
}

impl ZkStore {
    pub(crate) fn new(src: &RoutesSource) -> ZkStore {
        let RoutesSource::ZooKeeper { servers, path, session_timeout, auth } = src else {
            unreachable!("a zookeeper source")
        };
        ZkStore {
            servers: servers.clone(),
            path: path.clone(),
            session_timeout: *session_timeout,
            auth: auth.clone(),
            client: Mutex::new(None),
        }
    }

    /// The live session, opened (and authenticated) if there is none.
    async fn client(&self) -> Result<zk::Client, String> {
        let mut slot = self.client.lock().await;
        if let Some((c, _)) = slot.as_ref() {
            if !matches!(
                c.state(),
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
            ) {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let mut connector = zk::Client::connector().with_session_timeout(self.session_timeout);
        if let Some(a) = &self.auth {
            connector = connector.with_auth("digest", a.credentials.as_bytes());
        }
        let connect = connector.with_fail_eagerly().connect(&self.servers);
        let c = match tokio::time::timeout(self.session_timeout + Duration::from_secs(1), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("cannot connect to ZooKeeper {}: {e}", self.servers)),
            Err(_) => return Err(format!("cannot connect to ZooKeeper {}: timed out", self.servers)),
        };
        *slot = Some((c.clone(), None));
        Ok(c)
    }

    fn at(&self, rel: &str) -> String {
        format!("{}/{rel}", self.path)
    }

    pub(crate) async fn read(&self) -> Result<Option<Published>, String> {
        let c = self.client().await?;
        let (version_path, routes_path) = (self.at("version"), self.at("routes"));
        for _ in 0..READ_ATTEMPTS {
            let mut r = c.new_multi_reader();
            r.add_get_data(&version_path).map_err(|e| err("read", &version_path, e))?;
            r.add_get_children(&routes_path).map_err(|e| err("read", &routes_path, e))?;
            let mut first = r.commit().await.map_err(|e| err("read", &self.path, e))?.into_iter();
            let (version, stat) = match first.next() {
                Some(zk::MultiReadResult::Data { data, stat }) => (parse_version(&data)?, stat),
                Some(zk::MultiReadResult::Error { err: zk::Error::NoNode }) => return Ok(None),
                other => return Err(err("read", &version_path, format!("{other:?}"))),
            };
            let children = match first.next() {
                Some(zk::MultiReadResult::Children { children }) => children,
                Some(zk::MultiReadResult::Error { err: zk::Error::NoNode }) => Vec::new(),
                other => return Err(err("read", &routes_path, format!("{other:?}"))),
            };
            let names: Vec<String> = children.into_iter().filter(|n| super::is_route_file_name(n)).collect();
            let mut r = c.new_multi_reader();
            r.add_get_data(&version_path).map_err(|e| err("read", &version_path, e))?;
            for n in &names {
                let p = format!("{routes_path}/{n}");
                r.add_get_data(&p).map_err(|e| err("read", &p, e))?;
            }
            let mut second = r.commit().await.map_err(|e| err("read", &self.path, e))?.into_iter();
            match second.next() {
                Some(zk::MultiReadResult::Data { stat: s, .. }) if s.mzxid == stat.mzxid => {}
                _ => continue, // published (or removed) in between: read again
            }
            let mut files = Vec::with_capacity(names.len());
            for (name, result) in names.into_iter().zip(second) {
                match result {
                    zk::MultiReadResult::Data { data, .. } => {
                        let text = String::from_utf8(data).map_err(|_| {
                            format!("ZooKeeper {routes_path}/{name}: the route file is not UTF-8")
                        })?;
                        files.push((name, text));
                    }
                    other => return Err(err("read", &format!("{routes_path}/{name}"), format!("{other:?}"))),
                }
            }
            return Ok(Some(Published { version, files: route_files(files) }));
        }
        Err(format!("ZooKeeper {}: the set changed during {READ_ATTEMPTS} reads in a row", self.path))
    }

    pub(crate) async fn wait(&self, known: Option<u64>) -> Result<(), String> {
        let c = self.client().await?;
        let path = self.at("version");
        let late = || format!("ZooKeeper {path}: no answer within {:?}", super::OP_TIMEOUT);
        let get = tokio::time::timeout(super::OP_TIMEOUT, c.get_and_watch_data(&path));
        let watch = match get.await.map_err(|_| late())? {
            Ok((data, _, w)) => {
                if parse_version(&data).ok() != known {
                    return Ok(());
                }
                w
            }
            Err(zk::Error::NoNode) => {
                let stat = tokio::time::timeout(super::OP_TIMEOUT, c.check_and_watch_stat(&path));
                match stat.await.map_err(|_| late())?.map_err(|e| err("watch", &path, e))? {
                    (Some(_), _) => return Ok(()),
                    (None, _) if known.is_some() => return Ok(()),
                    (None, w) => w,
                }
            }
            Err(e) => return Err(err("watch", &path, e)),
        };
        let mut state = c.state_watcher();
        tokio::select! {
            _ = watch.changed() => Ok(()),
            s = async {
                loop {
                    let s = state.changed().await;
                    if !matches!(s, zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly) {
                        return s;
                    }
                }
            } => Err(format!("ZooKeeper {}: session {s}", self.servers)),
            // Watches are re-registered by the client after a reconnect; this is a second fence.
            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
        }
    }

    /// The ACLs of nodes a publish creates (`members`: `extra` too for anyone).
    fn acls(&self, anyone: zk::Permission) -> Vec<zk::Acl> {
        match &self.auth {
            Some(a) => vec![
                zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", &a.digest_id())),
                zk::Acl::new(anyone, zk::AuthId::anyone()),
            ],
            None => vec![zk::Acl::new(zk::Permission::ALL, zk::AuthId::anyone())],
        }
    }

    pub(crate) async fn publish(
        &self,
        files: &[(String, String)],
        if_version: Option<u64>,
    ) -> Result<u64, PublishError> {
        let size: usize = files.iter().map(|(n, t)| n.len() + t.len() + self.path.len() + 16).sum();
        if size > MAX_SET_BYTES {
            return Err(PublishError::Failed(format!(
                "the set is {size} bytes; ZooKeeper takes at most {MAX_SET_BYTES} in one transaction (jute.maxbuffer)"
            )));
        }
        let c = self.client().await.map_err(PublishError::Failed)?;
        let fail = |what: &str, p: &str, e: zk::Error| PublishError::Failed(err(what, p, e));
        let read_acls = self.acls(zk::Permission::READ);
        let members_acls = self.acls(zk::Permission::READ | zk::Permission::CREATE);
        let read_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&read_acls));
        let members_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&members_acls));
        for (p, opts) in [
            (self.path.clone(), &read_opts),
            (self.at("routes"), &read_opts),
            (self.at("members"), &members_opts),
        ] {
            // A read first: it is answered by the server we are connected to, where a create
            // (even one that finds the node) goes through the leader and a quorum.
            if c.check_stat(&p).await.map_err(|e| fail("read", &p, e))?.is_some() {
                continue;
            }
            match c.mkdir(&p, opts).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(fail("create", &p, e)),
            }
        }
        let version_path = self.at("version");
        let routes = self.at("routes");
        if self.auth.is_some() {
            // Nodes made before (by a gateway that started first, or by hand) may be open to
            // anyone: every publish with an identity puts the fleet's ACLs back.
            let nodes = [
                (&self.path, &read_acls),
                (&routes, &read_acls),
                (&self.at("members"), &members_acls),
                (&version_path, &read_acls),
            ];
            for (p, acls) in nodes {
                match c.set_acl(p, acls, None).await {
                    Ok(_) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(fail("set the ACL of", p, e)),
                }
            }
            // And the route files already there (a set published before `auth_env` was).
            for name in c.list_children(&routes).await.map_err(|e| fail("list", &routes, e))? {
                let p = format!("{routes}/{name}");
                match c.set_acl(&p, &read_acls, None).await {
                    Ok(_) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(fail("set the ACL of", &p, e)),
                }
            }
        }
        // Without --if-version a lost race is retried; a few rounds settle any real contention.
        for _ in 0..5 {
            let (current, node_version) = match c.get_data(&version_path).await {
                Ok((data, stat)) => {
                    (Some(parse_version(&data).map_err(PublishError::Failed)?), Some(stat.version))
                }
                Err(zk::Error::NoNode) => (None, None),
                Err(e) => return Err(fail("read", &version_path, e)),
            };
            if let Some(want) = if_version {
                if current.unwrap_or(0) != want {
                    return Err(PublishError::Mismatch(current));
                }
            }
            let next = current.unwrap_or(0) + 1;
            let existing = match c.list_children(&routes).await {
                Ok(ch) => ch,
                Err(e) => return Err(fail("list", &routes, e)),
            };
            let mut w = c.new_multi_writer();
            let data = next.to_string();
            let add = match node_version {
                Some(v) => w.add_set_data(&version_path, data.as_bytes(), Some(v)),
                None => w.add_create(&version_path, data.as_bytes(), &read_opts),
            };
            add.map_err(|e| fail("write", &version_path, e))?;
            for name in existing.iter().filter(|n| !files.iter().any(|(f, _)| f == *n)) {
                let p = format!("{routes}/{name}");
                w.add_delete(&p, None).map_err(|e| fail("delete", &p, e))?;
            }
            for (name, text) in files {
                let p = format!("{routes}/{name}");
                let add = if existing.contains(name) {
                    w.add_set_data(&p, text.as_bytes(), None)
                } else {
                    w.add_create(&p, text.as_bytes(), &read_opts)
                };
                add.map_err(|e| fail("write", &p, e))?;
            }
            match w.commit().await {
                Ok(_) => return Ok(next),
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode,
                    ..
                }) => {
                    if if_version.is_some() {
                        let now =
                            c.get_data(&version_path).await.ok().and_then(|(d, _)| parse_version(&d).ok());
                        return Err(PublishError::Mismatch(now));
                    }
                }
                Err(e) => return Err(PublishError::Failed(err("publish to", &self.path, e))),
            }
        }
        Err(PublishError::Failed(format!(
            "ZooKeeper {}: other publishers kept winning; try again",
            self.path
        )))
    }

    pub(crate) async fn members(&self) -> Result<Vec<super::Member>, String> {
        let c = self.client().await?;
        let path = self.at("members");
        let names = match c.list_children(&path).await {
            Ok(n) => n,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(err("list", &path, e)),
        };
        let mut r = c.new_multi_reader();
        for n in &names {
            r.add_get_data(&format!("{path}/{n}")).map_err(|e| err("read", &path, e))?;
        }
        let results = r.commit().await.map_err(|e| err("read", &path, e))?;
        Ok(results
            .into_iter()
            .filter_map(|r| match r {
                zk::MultiReadResult::Data { data, .. } => serde_json::from_slice(&data).ok(),
                _ => None, // gone in between, or not a member record
            })
            .collect())
    }

    pub(crate) async fn register(&self, id: &str, data: &[u8]) -> Result<(), String> {
        let c = self.client().await?;
        let path = format!("{}/{id}", self.at("members"));
        let created = self
            .client
            .lock()
            .await
            .as_ref()
            .is_some_and(|(s, m)| s.session_id() == c.session_id() && m.is_some());
        if created {
            return match c.set_data(&path, data, None).await {
                Ok(_) => Ok(()),
                Err(e) => Err(err("write", &path, e)),
            };
        }
        let acls = match &self.auth {
            Some(_) => self.acls(zk::Permission::READ),
            None => vec![zk::Acl::new(zk::Permission::ALL, zk::AuthId::anyone())],
        };
        let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::new(&acls));
        let parent = self.at("members");
        // The parent is the publisher's to create (with its ACL); before any publish, make it.
        // (Asking for an existing node is not enough: ZooKeeper checks the parent's ACL before
        // it looks, so a gateway without the publishers' identity gets `NoAuth`.)
        if c.check_stat(&parent).await.map_err(|e| err("read", &parent, e))?.is_none() {
            match c.mkdir(&parent, &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(err("create", &parent, e)),
            }
        }
        match c.create(&path, data, &opts).await {
            Ok(_) => {}
            Err(zk::Error::NodeExists) => self.take_over(&c, &path, data, &opts).await?,
            Err(e) => return Err(err("create", &path, e)),
        }
        if let Some((s, m)) = self.client.lock().await.as_mut() {
            if s.session_id() == c.session_id() {
                *m = Some(id.to_owned());
            }
        }
        Ok(())
    }

    /// `path` exists: keep it if this session owns it, or replace a node an earlier session of
    /// this gateway left (after a ZooKeeper outage the server expires that session later, and
    /// the node with it, so writing into it would leave the gateway unlisted).
    async fn take_over(
        &self,
        c: &zk::Client,
        path: &str,
        data: &[u8],
        opts: &zk::CreateOptions<'_>,
    ) -> Result<(), String> {
        let Some(stat) = c.check_stat(path).await.map_err(|e| err("read", path, e))? else {
            return c.create(path, data, opts).await.map(drop).map_err(|e| err("create", path, e));
        };
        if stat.ephemeral_owner == c.session_id().0 {
            return c.set_data(path, data, None).await.map(drop).map_err(|e| err("write", path, e));
        }
        match c.delete(path, Some(stat.version)).await {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => {
                return Err(format!(
                    "{path} is held by an earlier session (it goes when that session expires): {}",
                    err("delete", path, e)
                ))
            }
        }
        c.create(path, data, opts).await.map(drop).map_err(|e| err("create", path, e))
    }

    /// Whether this session's member node is still there; a node that went (deleted by
    /// another tool, or a race with an expiring earlier session) is created again.
    pub(crate) async fn check_registered(&self, id: &str) -> Result<(), String> {
        let c = match self.client.lock().await.as_ref() {
            Some((c, Some(_))) => c.clone(),
            _ => return Ok(()),
        };
        let path = format!("{}/{id}", self.at("members"));
        let owned = match c.check_stat(&path).await {
            Ok(stat) => stat.is_some_and(|s| s.ephemeral_owner == c.session_id().0),
            Err(e) => return Err(err("read", &path, e)),
        };
        if owned {
            return Ok(());
        }
        if let Some((s, m)) = self.client.lock().await.as_mut() {
            if s.session_id() == c.session_id() {
                *m = None;
            }
        }
        Err(format!("{path} is gone; creating it again"))
    }

    /// Whether the member node must be created (no session yet, or a new one).
    pub(crate) async fn needs_register(&self) -> bool {
        !self.client.lock().await.as_ref().is_some_and(|(c, m)| {
            m.is_some()
                && !matches!(
                    c.state(),
                    zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
                )
        })
    }

    pub(crate) async fn close(&self, id: &str) {
        let taken = self.client.lock().await.take();
        if let Some((c, Some(_))) = &taken {
            let _ = c.delete(&format!("{}/{id}", self.at("members")), None).await;
        }
        // Dropping the last handle closes the session.
        drop(taken);
    }
}

fn parse_version(data: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("the published `version` {:?} is not a number", String::from_utf8_lossy(data)))
}
