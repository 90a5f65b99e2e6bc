//! The broker plane against real MQTT clients: rumqttc in-process and mosquitto's command-line
//! clients as processes, over real sockets on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use netstrap::metrics::Metrics;
use netstrap::planes::Shutdown;
use netstrap::planes::broker::{
    BrokerError, BrokerOptions, PingError, mqtt_ping, serve_embedded, serve_embedded_on, serve_relay,
};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

/// A port nothing listens on (bound, noted, released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind :0");
    l.local_addr().expect("local addr")
}

struct Broker {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), BrokerError>>,
}

/// An embedded broker on a listener bound here, so clients can connect at once.
async fn broker(credentials: Option<(&str, &str)>) -> Broker {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
    let opts = BrokerOptions { listen: addr, credentials, ..Default::default() };
    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve_embedded_on(listener, opts, metrics.clone(), shutdown.clone()));
    Broker { addr, metrics, shutdown, task }
}

/// An embedded broker binding a port itself, once it answers MQTT CONNECTs — the readiness
/// latch's own loop.
async fn broker_on_free_port() -> Broker {
    let addr = free_addr();
    let opts = BrokerOptions { listen: addr, ..Default::default() };
    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve_embedded(opts, metrics.clone(), shutdown.clone()));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match mqtt_ping(addr, Duration::from_millis(500), None).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("broker never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // The released port could have been taken by a parallel test's broker in the meantime.
    let counted = metrics.encode().contains("netstrap_connections_total{plane=\"broker\"} 1");
    assert!(counted && !task.is_finished(), "{addr} answered, but not from this test's broker");
    Broker { addr, metrics, shutdown, task }
}

/// A rumqttc client whose event loop runs on a task, forwarding incoming packets (and the
/// first connection error) to `events`.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: JoinHandle<()>,
}

fn client(id: &str, addr: SocketAddr, configure: impl FnOnce(&mut MqttOptions)) -> Client {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    configure(&mut opts);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    Client { client, events, task }
}

impl Client {
    /// The next packet `pick` accepts, skipping others; panics on a connection error.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
        let wait = async {
            loop {
                match self.events.recv().await {
                    Some(Ok(p)) => {
                        if let Some(t) = pick(p) {
                            return t;
                        }
                    }
                    Some(Err(e)) => panic!("connection failed while waiting for {what}: {e}"),
                    None => panic!("event loop ended while waiting for {what}"),
                }
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }

    async fn connected(&mut self) {
        let code = self.expect("CONNACK", |p| match p {
            Packet::ConnAck(a) => Some(a.code),
            _ => None,
        });
        assert_eq!(code.await, ConnectReturnCode::Success);
    }

    async fn subscribed(&mut self, topic: &str, qos: QoS) {
        self.client.subscribe(topic, qos).await.expect("queue SUBSCRIBE");
        self.expect("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
    }

    async fn publication(&mut self) -> Publish {
        self.expect("PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_at_every_qos_and_retained_messages_reach_subscribers() {
    let b = broker(None).await;
    let mut sub = client("sub", b.addr, |_| {});
    sub.connected().await;
    let cases = [
        ("sensors/q0", QoS::AtMostOnce, "zero"),
        ("sensors/q1", QoS::AtLeastOnce, "one"),
        ("sensors/q2", QoS::ExactlyOnce, "two"),
    ];
    // One subscription per QoS: rumqttd delivers at the subscription's QoS, not the minimum of
    // both (MQTT-3.8.4-6; bytebeamio/rumqtt#707), so matching them tests each QoS flow end to end.
    for (topic, qos, _) in cases {
        sub.subscribed(topic, qos).await;
    }

    let mut publisher = client("pub", b.addr, |_| {});
    publisher.connected().await;
    for (topic, qos, payload) in cases {
        publisher.client.publish(topic, qos, false, payload).await.expect("queue PUBLISH");
        let got = sub.publication().await;
        assert_eq!((got.topic.as_str(), got.qos, &got.payload[..]), (topic, qos, payload.as_bytes()));
        // The publisher's side of the flow completes too (and no ack is left over for below).
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                publisher.expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(())).await
            }
            QoS::ExactlyOnce => {
                publisher.expect("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(())).await
            }
        }
    }

    // A retained message, acknowledged before anyone subscribes, reaches a later subscriber.
    publisher.client.publish("state/door", QoS::AtLeastOnce, true, "open").await.expect("queue PUBLISH");
    publisher.expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(())).await;
    let mut late = client("late", b.addr, |_| {});
    late.connected().await;
    late.client.subscribe("state/door", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    let got = late.publication().await;
    assert_eq!((got.topic.as_str(), &got.payload[..], got.retain), ("state/door", &b"open"[..], true));

    assert_eq!(b.metrics.broker_messages.get(), 4, "PUBLISH packets counted by the broker plane");
    assert_eq!(b.metrics.broker_clients.get(), 3, "sub, pub and late are connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_is_published_when_a_client_vanishes_without_disconnect() {
    let b = broker(None).await;
    let mut watcher = client("watcher", b.addr, |_| {});
    watcher.connected().await;
    watcher.subscribed("wills/#", QoS::AtLeastOnce).await;

    let mut doomed = client("doomed", b.addr, |o| {
        o.set_keep_alive(Duration::from_secs(1));
        o.set_last_will(LastWill::new("wills/doomed", "gone", QoS::AtLeastOnce, false));
    });
    doomed.connected().await;
    // Dropping the event loop closes the socket with no DISCONNECT, as a crash would.
    doomed.task.abort();

    let will = watcher.publication().await;
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("wills/doomed", &b"gone"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_exchange_a_message() {
    for tool in ["mosquitto_sub", "mosquitto_pub"] {
        if let Err(e) = std::process::Command::new(tool).arg("--help").output() {
            panic!(
                "{tool} not runnable ({e}): install mosquitto-clients (apt-get install -y mosquitto-clients); CI has it"
            );
        }
    }
    let b = broker(None).await;
    let port = b.addr.port().to_string();
    // stdbuf: mosquitto_sub's stdio is block-buffered into a pipe; its lines are needed as they come.
    let mut sub = tokio::process::Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1", "-p", &port, "-t", "t", "-C", "1", "-W", "5"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mosquitto_sub");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    // `-d` prints the protocol exchange: publish only once the subscription is acknowledged.
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read mosquitto_sub") {
            let suback = line.contains("received SUBACK");
            seen.push(line);
            if suback {
                return;
            }
        }
        panic!("mosquitto_sub ended before SUBACK: {seen:?}");
    })
    .await
    .expect("mosquitto_sub got no SUBACK");

    let publish = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "hello", "-q", "1"])
        .output()
        .await
        .expect("run mosquitto_pub");
    assert!(publish.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&publish.stderr));

    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read mosquitto_sub") {
            rest.push(line);
        }
    })
    .await
    .expect("mosquitto_sub did not exit");
    let status = sub.wait().await.expect("mosquitto_sub status");
    assert!(status.success(), "mosquitto_sub failed: {rest:?}");
    assert!(rest.iter().any(|l| l == "hello"), "mosquitto_sub printed {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_credentials_connect() {
    let b = broker(Some(("edge", "s3cret"))).await;
    let mut good = client("good", b.addr, |o| {
        o.set_credentials("edge", "s3cret");
    });
    good.connected().await;

    for (id, creds) in [("wrong", Some(("edge", "guess"))), ("anonymous", None)] {
        let mut bad = client(id, b.addr, |o| {
            if let Some((u, p)) = creds {
                o.set_credentials(u, p);
            }
        });
        let first = tokio::time::timeout(WAIT, bad.events.recv()).await.expect("an answer");
        assert!(matches!(first, Some(Err(_))), "{id}: expected a refused connection, got {first:?}");
    }

    mqtt_ping(b.addr, WAIT, Some(("edge".into(), "s3cret".into())))
        .await
        .expect("the right password is accepted");
    let refused = mqtt_ping(b.addr, WAIT, Some(("edge".into(), "guess".into()))).await.unwrap_err();
    // The broker says why (rumqttd patch 7), and the readiness reason carries it.
    assert!(matches!(refused, PingError::Refused { code: 4, .. }), "{refused:?}");
    let refused = refused.to_string();
    assert!(refused.contains("CONNACK code 4 (bad username or password)"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_an_error_naming_the_address() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let opts = BrokerOptions { listen: addr, ..Default::default() };
    let result = tokio::time::timeout(WAIT, serve_embedded(opts, Arc::new(Metrics::new()), Shutdown::new()))
        .await
        .expect("serve_embedded returns at once");
    let message = result.expect_err("the port is taken").to_string();
    assert!(message.contains(&addr.to_string()) && message.contains("in use"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_ping_tells_a_broker_from_no_broker_and_from_other_servers() {
    let b = broker(None).await;
    mqtt_ping(b.addr, WAIT, None).await.expect("the broker answers");

    let nothing = mqtt_ping(free_addr(), WAIT, None).await.unwrap_err();
    assert!(matches!(nothing, PingError::NoBroker { .. }), "{nothing:?}");
    assert!(nothing.to_string().contains("no broker at"), "{nothing}");

    // A server that answers, but not in MQTT (say, the REST port by mistake).
    let http = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let http_addr = http.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let garbage = mqtt_ping(http_addr, WAIT, None).await.unwrap_err();
    assert!(matches!(garbage, PingError::NotMqtt { .. }), "{garbage:?}");
    assert!(garbage.to_string().contains("not an MQTT broker"), "{garbage}");

    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let mut held = Vec::new();
    let hold = tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mute = mqtt_ping(silent_addr, Duration::from_millis(300), None).await.unwrap_err().to_string();
    assert!(mute.contains("no CONNACK") && mute.contains("300ms"), "{mute}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_carries_mqtt_to_the_nodes_broker() {
    let b = broker(None).await;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let relay_addr = listener.local_addr().expect("addr");
    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::new();
    let relay = tokio::spawn(serve_relay(listener, b.addr, metrics.clone(), shutdown.clone()));

    let mut c = client("via-relay", relay_addr, |_| {});
    c.connected().await;
    c.subscribed("relay/t", QoS::AtLeastOnce).await;
    c.client.publish("relay/t", QoS::AtLeastOnce, false, "through").await.expect("queue PUBLISH");
    let got = c.publication().await;
    assert_eq!(&got.payload[..], b"through");
    assert!(metrics.encode().contains("netstrap_connections_active{plane=\"broker\"} 1"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), relay).await.expect("relay stops").expect("relay task");
    let ended = tokio::time::timeout(Duration::from_secs(1), c.events.recv()).await.expect("client cut off");
    assert!(matches!(ended, Some(Err(_))), "client connection should end with the relay: {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_port_and_the_clients_within_a_second() {
    let b = broker_on_free_port().await;
    let mut c = client("stays", b.addr, |_| {});
    c.connected().await;

    b.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(1), b.task).await.expect("serve_embedded returns");
    assert!(result.expect("task").is_ok());
    let ended = tokio::time::timeout(Duration::from_secs(1), c.events.recv()).await.expect("client cut off");
    assert!(matches!(ended, Some(Err(_))), "client connection should end: {ended:?}");
    assert!(tokio::net::TcpStream::connect(b.addr).await.is_err(), "port still accepts after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_cleanly_do_not_knock_out_the_next_one() {
    // Each probe sends DISCONNECT and closes; the next one reuses its router slot. rumqttd
    // alone can take the second Disconnect it derives from the socket close for the new client.
    let b = broker(None).await;
    let probes: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..100 {
                    mqtt_ping(b.addr, WAIT, None).await?;
                }
                Ok::<(), PingError>(())
            })
        })
        .collect();
    for p in probes {
        p.await.expect("probe task").expect("every client connects");
    }
}

/// Whether the server closes `s` (EOF or reset) within the broker's 5 s CONNECT timeout plus
/// a margin, reading and discarding.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(8), wait).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_only_their_connection() {
    let b = broker(None).await;
    let mut sub = client("watcher", b.addr, |_| {});
    sub.connected().await;
    sub.subscribed("t/#", QoS::AtLeastOnce).await;
    let bad: [&[u8]; 5] = [
        // Remaining length with five continuation bytes (the limit is four).
        b"\x10\xff\xff\xff\xff\xff",
        // CONNECT for protocol "HTTP".
        b"\x10\x0e\x00\x04HTTP\x04\x02\x00\x3c\x00\x02id",
        // PUBLISH before CONNECT.
        b"\x30\x07\x00\x03t/a\x68\x69",
        // An HTTP request on the MQTT port: reads as a PUBACK announcing 69 bytes that never
        // come; the CONNECT timeout ends it.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // A CONNECT announcing 200 MB (over the payload limit).
        b"\x10\x80\x80\x80\x60",
    ];
    for packet in bad {
        let mut s = tokio::net::TcpStream::connect(b.addr).await.unwrap();
        s.write_all(packet).await.unwrap();
        assert!(closed_by_server(&mut s).await, "{packet:?} left the connection open");
    }
    let mut publisher = client("publisher", b.addr, |_| {});
    publisher.connected().await;
    publisher.client.publish("t/ok", QoS::AtLeastOnce, false, "still here").await.unwrap();
    let p = sub.publication().await;
    assert_eq!(&p.payload[..], b"still here", "the well-behaved client is unaffected");
    assert!(!b.task.is_finished(), "the broker is alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_and_refused_client_ids_reconnect_later() {
    // rumqttd panics (poisoning its router) when a client id refused over its own limit
    // reconnects; netstrap's limit sits below it, so that path is never taken.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = BrokerOptions { listen: addr, max_connections: 8, ..Default::default() };
    let metrics = Arc::new(Metrics::new());
    let task = tokio::spawn(serve_embedded_on(listener, opts, metrics.clone(), Shutdown::new()));
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut c = client(&format!("c{i}"), addr, |_| {});
        c.connected().await;
        clients.push(c);
    }
    for round in 0..3 {
        // Over the limit: closed before CONNACK, whatever the id.
        let mut extra = client(&format!("extra{round}"), addr, |_| {});
        let refused = tokio::time::timeout(WAIT, extra.events.recv()).await.expect("an answer");
        assert!(matches!(refused, Some(Err(_))), "over the limit: {refused:?}");
        extra.task.abort();
    }
    // Free slots; the refused ids (and the old ones) connect now.
    for c in clients.drain(..4) {
        c.client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(WAIT, c.task).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in ["extra0", "extra1", "c0", "c1"] {
        let mut c = client(id, addr, |_| {});
        c.connected().await;
        clients.push(c);
    }
    let last = clients.last_mut().unwrap();
    last.subscribed("limit/t", QoS::AtLeastOnce).await;
    last.client.publish("limit/t", QoS::AtLeastOnce, false, "ok").await.unwrap();
    assert_eq!(&last.publication().await.payload[..], b"ok");
    assert!(!task.is_finished(), "the broker survived");
}
