//! A real cluster DNS for tests: an authoritative hickory-server for `cluster.local`, built
//! in code and served in-process on 127.0.0.1 (UDP and TCP on the same port), as CoreDNS
//! serves it in a pod. Records can be replaced while it runs, it can be stopped and started
//! again on the same address ("DNS down, then back"), and it records every query it gets, so
//! a test can prove which names a resolver actually asked for.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

const ZONE: &str = "cluster.local.";
const TTL: u32 = 5;

/// An in-process authoritative server for `cluster.local`.
pub struct ClusterDns {
    /// Where it listens, UDP and TCP.
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    queries: Arc<Mutex<Vec<String>>>,
    server: Option<Server<Recording>>,
}

impl ClusterDns {
    /// Serve `records` (`("op.edge.svc.cluster.local", ip)`, A or AAAA by the address
    /// family; several entries for one name give several records) on 127.0.0.1, a free port.
    pub async fn start(records: &[(&str, IpAddr)]) -> ClusterDns {
        let origin = Name::from_str(ZONE).expect("zone name");
        let mut zone = InMemoryZoneHandler::new(
            origin.clone(),
            BTreeMap::from([soa(&origin)]),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .expect("zone with an SOA");
        for (name, ip) in records {
            assert!(zone.upsert_mut(address_record(name, *ip), 1), "cannot add {name} {ip}");
        }
        let mut dns = ClusterDns {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            zone: Arc::new(zone),
            queries: Arc::default(),
            server: None,
        };
        dns.listen().await;
        dns
    }

    /// Replace the addresses of `name` (all its A and AAAA records) with `ips`; an empty
    /// list removes the name, so it answers NXDOMAIN.
    pub async fn set(&self, name: &str, ips: &[IpAddr]) {
        let owner = fqdn(name);
        {
            let mut records = self.zone.records_mut().await;
            for t in [RecordType::A, RecordType::AAAA] {
                records.remove(&RrKey::new(LowerName::new(&owner), t));
            }
        }
        for ip in ips {
            assert!(self.zone.upsert(address_record(name, *ip), 1).await, "cannot add {name} {ip}");
        }
    }

    /// Every query received so far, as `"<name> <type>"` (`"op.edge.svc.cluster.local. A"`).
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// Take the server down: both sockets are closed when this returns.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // The listener tasks end on cancel; an error here only means a task failed earlier.
            let _ = server.shutdown_gracefully().await;
        }
    }

    /// Serve again, on the same address, with the records it had.
    pub async fn resume(&mut self) {
        if self.server.is_none() {
            self.listen().await;
        }
    }

    async fn listen(&mut self) {
        let (udp, tcp) = bind_pair(self.addr).await;
        self.addr = udp.local_addr().expect("udp local addr");
        let mut catalog = Catalog::new();
        let zone: Arc<dyn ZoneHandler> = self.zone.clone();
        catalog.upsert(LowerName::from_str(ZONE).expect("zone name"), vec![zone]);
        let mut server = Server::new(Recording { catalog, queries: self.queries.clone() });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        self.server = Some(server);
    }
}

/// UDP and TCP on one port. With port 0 the kernel picks the UDP port and TCP may find it
/// taken, so try a few times.
async fn bind_pair(addr: SocketAddr) -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await.expect("bind udp");
        let port = udp.local_addr().expect("udp local addr").port();
        if let Ok(tcp) = TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            return (udp, tcp);
        }
        assert_eq!(addr.port(), 0, "TCP port {} is taken", addr.port());
    }
    panic!("no port free for both UDP and TCP on {}", addr.ip());
}

fn fqdn(name: &str) -> Name {
    let absolute = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let n = Name::from_str(&absolute).unwrap_or_else(|e| panic!("bad test name {name}: {e}"));
    assert!(Name::from_str(ZONE).expect("zone").zone_of(&n), "{name} is not in {ZONE}");
    n
}

fn address_record(name: &str, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(fqdn(name), TTL, rdata)
}

fn soa(origin: &Name) -> (RrKey, RecordSet) {
    let ns = Name::from_str("ns.dns.cluster.local.").expect("ns name");
    let mbox = Name::from_str("hostmaster.cluster.local.").expect("mbox");
    // The last field is the negative-answer TTL, as CoreDNS's kubernetes plugin sets it.
    let record =
        Record::from_rdata(origin.clone(), TTL, RData::SOA(SOA::new(ns, mbox, 1, 7200, 1800, 86400, TTL)));
    let mut set = RecordSet::new(origin.clone(), RecordType::SOA, 1);
    set.insert(record, 1);
    (RrKey::new(LowerName::new(origin), RecordType::SOA), set)
}

/// The catalog, recording each query before answering it.
struct Recording {
    catalog: Catalog,
    queries: Arc<Mutex<Vec<String>>>,
}

// `RequestHandler` is an `async_trait`; this is the signature the macro would generate
// (async-trait is not a dependency of this crate).
impl RequestHandler for Recording {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        if let Ok(info) = request.request_info()
            && let Ok(mut q) = self.queries.lock()
        {
            q.push(format!("{} {}", info.query.name(), info.query.query_type()));
        }
        self.catalog.handle_request::<R, T>(request, response_handle)
    }
}
