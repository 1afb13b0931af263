//! A real DNS server on loopback, in-process (hickory-server over UDP), whose answers the test
//! changes at will: records per (name, type) with a TTL, or a forced SERVFAIL / NXDOMAIN for a
//! name. A name with no records at all is NXDOMAIN; a name that has records of another type
//! answers NODATA (NOERROR, empty), both with an SOA for the negative TTL (RFC 2308).
//!
//! The server's UDP socket is bound once and kept for the server's life: stopping it (a dead
//! resolver) stops reading it rather than closing it, so the port is never released and a
//! restart serves the very same socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Forced {
    ServFail,
    NxDomain,
}

#[derive(Debug, Default)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<Record>>,
    forced: HashMap<String, Forced>,
    queries: usize,
    /// How long every answer is held back (a slow resolver).
    delay: std::time::Duration,
}

#[derive(Debug, Clone, Default)]
struct Handler(Arc<Mutex<Zone>>);

fn key(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(request.header(), ResponseCode::FormErr);
            return response.send_response(msg).await.unwrap_or_else(|_| header.into());
        };
        let name = key(&info.query.name().to_string());
        let qtype = info.query.query_type();
        let (forced, answers, exists, delay) = {
            let mut z = self.0.lock().unwrap();
            z.queries += 1;
            let answers = z.records.get(&(name.clone(), qtype)).cloned().unwrap_or_default();
            let exists = z.records.iter().any(|((n, _), v)| *n == name && !v.is_empty());
            (z.forced.get(&name).copied(), answers, exists, z.delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let soa = Record::from_rdata(
            Name::from_ascii("test.").unwrap(),
            1,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.test.").unwrap(),
                Name::from_ascii("admin.test.").unwrap(),
                1,
                60,
                60,
                60,
                1,
            )),
        );
        if forced == Some(Forced::ServFail) {
            let msg = builder.error_msg(request.header(), ResponseCode::ServFail);
            return response.send_response(msg).await.unwrap_or_else(|_| header.into());
        }
        let negative = forced == Some(Forced::NxDomain) || answers.is_empty();
        if forced == Some(Forced::NxDomain) || (answers.is_empty() && !exists) {
            header.set_response_code(ResponseCode::NXDomain);
        }
        let soa_section: Vec<&Record> = if negative { vec![&soa] } else { vec![] };
        let answer_section: Vec<&Record> = if negative { vec![] } else { answers.iter().collect() };
        let msg = builder.build(header, answer_section, [], soa_section, []);
        response.send_response(msg).await.unwrap_or_else(|_| header.into())
    }
}

/// The server.
#[derive(Debug)]
pub struct DnsServer {
    pub addr: SocketAddr,
    /// The server's socket; the serving task reads a duplicate of it.
    socket: std::net::UdpSocket,
    zone: Handler,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Handler::default();
        let s = DnsServer { addr, socket, zone, task: Mutex::new(None) };
        s.serve();
        s
    }

    /// Serve the socket (through a duplicate of its descriptor, closed when the task ends).
    fn serve(&self) {
        let dup = self.socket.try_clone().unwrap();
        dup.set_nonblocking(true).unwrap();
        let socket = UdpSocket::from_std(dup).unwrap();
        let zone = self.zone.clone();
        let task = tokio::spawn(async move {
            let mut server = ServerFuture::new(zone);
            server.register_socket(socket);
            let _ = server.block_until_done().await;
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn abort(&self) -> Option<tokio::task::JoinHandle<()>> {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = &task {
            t.abort();
        }
        task
    }

    /// Stop answering (a dead resolver): queries are no longer read, so none is answered. The
    /// socket stays bound (the port is kept for [`restart`](Self::restart)); as the resolver
    /// sends from an unconnected socket, which gets no ICMP errors, a closed port would look
    /// the same to it: every query times out.
    pub async fn stop(&self) {
        if let Some(t) = self.abort() {
            let _ = t.await;
        }
    }

    /// Answer again, on the same socket.
    pub async fn restart(&self) {
        self.stop().await;
        self.serve();
    }

    /// Queries answered so far.
    /// Hold back every answer by `d` (a slow but working resolver).
    pub fn set_delay(&self, d: std::time::Duration) {
        self.zone.0.lock().unwrap().delay = d;
    }

    pub fn queries(&self) -> usize {
        self.zone.0.lock().unwrap().queries
    }

    fn put(&self, name: &str, t: RecordType, records: Vec<Record>) {
        let mut z = self.zone.0.lock().unwrap();
        z.records.insert((key(name), t), records);
    }

    /// Set the A and AAAA records of `name` (each IP goes to the family it belongs to).
    pub fn set_ips(&self, name: &str, ips: &[&str], ttl: u32) {
        let n = Name::from_ascii(key(name)).unwrap();
        let (mut a, mut aaaa) = (Vec::new(), Vec::new());
        for ip in ips {
            match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => a.push(Record::from_rdata(n.clone(), ttl, RData::A(A(v4)))),
                IpAddr::V6(v6) => aaaa.push(Record::from_rdata(n.clone(), ttl, RData::AAAA(AAAA(v6)))),
            }
        }
        self.put(name, RecordType::A, a);
        self.put(name, RecordType::AAAA, aaaa);
    }

    /// Set the SRV records of `name`: (priority, weight, port, target).
    pub fn set_srv(&self, name: &str, srv: &[(u16, u16, u16, &str)], ttl: u32) {
        let n = Name::from_ascii(key(name)).unwrap();
        let records = srv
            .iter()
            .map(|(p, w, port, target)| {
                Record::from_rdata(
                    n.clone(),
                    ttl,
                    RData::SRV(SRV::new(*p, *w, *port, Name::from_ascii(key(target)).unwrap())),
                )
            })
            .collect();
        self.put(name, RecordType::SRV, records);
    }

    /// Answer every query for `name` with SERVFAIL / NXDOMAIN, or (None) normally again.
    pub fn force(&self, name: &str, f: Option<Forced>) {
        let mut z = self.zone.0.lock().unwrap();
        match f {
            Some(f) => z.forced.insert(key(name), f),
            None => z.forced.remove(&key(name)),
        };
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.abort();
    }
}
