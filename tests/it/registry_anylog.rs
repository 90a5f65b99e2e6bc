//! The `anylog://` registry client against a fake EdgeLake node that answers the way EdgeLake
//! 1.4 does: errors in the reason phrase, broken chunked bodies, `Connection: close`, strict
//! quoting and User-Agent rules, the operator cluster and uniqueness rules.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use netstrap::policy::id::{cluster_id, policy_id};
use netstrap::registry::anylog::{AnylogClient, AnylogError, DeleteOutcome};
use serde_json::{Value, json};
use support::fake_edgelake::{FakeEdgeLake, raw};

const MASTER: &str = "edgelake-master.edge.svc.cluster.local:32048";

fn client(fake: &FakeEdgeLake) -> AnylogClient {
    AnylogClient::new(&fake.rest_addr(), MASTER, Duration::from_secs(5))
}

fn cluster(company: &str, name: &str) -> Value {
    json!({"cluster": {"company": company, "name": name}})
}

fn operator(name: &str, cluster: &str, port: u16) -> Value {
    json!({"operator": {
        "name": name, "company": "Acme Co", "hostname": "op", "ip": "op.edge.svc.cluster.local",
        "local_ip": "op.edge.svc.cluster.local", "port": port, "rest_port": port + 1,
        "cluster": cluster, "loc": "0.0, 0.0", "country": "Unknown", "state": "Unknown", "city": "Unknown"
    }})
}

/// A cluster stored on the node; its id.
async fn with_cluster(c: &AnylogClient) -> String {
    c.insert(&cluster("Acme Co", "c1")).await.expect("cluster stored");
    cluster_id("Acme Co", "c1")
}

#[tokio::test]
async fn insert_then_get_returns_the_policy_with_the_fields_edgelake_adds() {
    let fake = FakeEdgeLake::start().await;
    let c = client(&fake);
    let cid = with_cluster(&c).await;
    let op = operator("op-1", &cid, 32148);
    c.insert(&op).await.unwrap();

    let found = c.get("operator", "Acme Co", "op-1").await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let stored = &found[0]["operator"];
    assert_eq!(stored["id"], policy_id(&op).unwrap().as_str(), "EdgeLake's id");
    assert_eq!(stored["ledger"], "local");
    let date = stored["date"].as_str().unwrap();
    assert!(date.ends_with('Z') && date.len() == "2026-11-24T08:10:11.123456Z".len(), "{date}");
    let member = stored["member"].as_i64().unwrap();
    assert!((1..=255).contains(&member));
    assert_eq!(stored["port"], 32148);

    assert_eq!(c.get_cluster_id(Some("Acme Co"), "c1").await.unwrap(), Some(cid.clone()));
    assert_eq!(c.get_cluster_id(None, "C1").await.unwrap(), Some(cid), "case-insensitive");
    assert_eq!(c.get_cluster_id(None, "c2").await.unwrap(), None);
    assert!(c.get("operator", "Acme Co", "op-2").await.unwrap().is_empty());

    // Every request carried the AnyLog User-Agent and a command header.
    for r in fake.requests() {
        assert_eq!(r.header("user-agent"), Some("AnyLog/1.23"));
        assert!(r.header("command").is_some());
    }
}

#[tokio::test]
async fn an_operator_without_an_existing_cluster_is_refused_with_err_87() {
    let fake = FakeEdgeLake::start().await;
    let c = client(&fake);
    let err = c.insert(&operator("op-1", &cluster_id("Acme Co", "nope"), 32148)).await.unwrap_err();
    let AnylogError::Refused { status: 400, err_code: Some(87), ref err_text, .. } = err else {
        panic!("expected err 87 from the reason phrase, got {err:?}")
    };
    assert_eq!(err_text, "Wrong policy structure");
    assert!(err.to_string().contains("cluster"), "says what to fix: {err}");
    assert!(fake.policies().is_empty());
}

#[tokio::test]
async fn a_second_operator_with_the_same_name_is_refused_with_err_180() {
    let fake = FakeEdgeLake::start().await;
    let c = client(&fake);
    let cid = with_cluster(&c).await;
    c.insert(&operator("op-1", &cid, 32148)).await.unwrap();
    let err = c.insert(&operator("op-1", &cid, 40000)).await.unwrap_err();
    assert!(matches!(err, AnylogError::Refused { err_code: Some(180), .. }), "{err:?}");
    assert!(err.to_string().contains("delete the old policy first"), "{err}");

    let err = c.insert(&operator("op-2", &cid, 32148)).await.unwrap_err();
    assert!(matches!(err, AnylogError::Refused { err_code: Some(149), .. }), "same ip+port: {err:?}");
    assert_eq!(c.get("operator", "Acme Co", "op-1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn delete_answered_with_err_3_is_unconfirmed_and_the_policy_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("blockchain.json");
    let fake = FakeEdgeLake::with_ledger(&ledger).await;
    let c = client(&fake);
    let cid = with_cluster(&c).await;
    let op = operator("op-1", &cid, 32148);
    c.insert(&op).await.unwrap();
    let id = policy_id(&op).unwrap();

    assert_eq!(c.delete(&id).await.unwrap(), DeleteOutcome::Unconfirmed);
    assert!(c.get("operator", "Acme Co", "op-1").await.unwrap().is_empty(), "read back: gone");

    let err = c.delete(&id).await.unwrap_err();
    assert!(matches!(err, AnylogError::Refused { err_code: Some(113), .. }), "unknown id: {err:?}");

    // EdgeLake's ledger file: cluster, operator, tombstone.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with(r#"{"operator": {"name": "op-1", "company": "Acme Co", "#), "{}", lines[1]);
    assert_eq!(lines[2], format!(r#"{{"deleted": {{"id": "{id}", "ledger": "local"}}}}"#));
}

#[tokio::test]
async fn a_company_with_a_space_is_matched_through_double_quotes() {
    let fake = FakeEdgeLake::start().await;
    let c = client(&fake);
    let cid = with_cluster(&c).await;
    c.insert(&operator("op-1", &cid, 32148)).await.unwrap();
    assert_eq!(c.get("operator", "acme co", "OP-1").await.unwrap().len(), 1, "case-insensitive too");
    let command = fake.requests().last().unwrap().header("command").unwrap().to_string();
    assert_eq!(command, r#"blockchain get operator where company="acme co" and name="OP-1""#);

    let err = c.get("operator", "Acme \"Co\"", "op-1").await.unwrap_err();
    assert!(matches!(err, AnylogError::InvalidPolicy(_)), "{err:?}");
}

#[tokio::test]
async fn concurrent_inserts_each_store_their_own_policy() {
    let fake = FakeEdgeLake::start().await;
    let c = client(&fake);
    let names: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let (c, p) = (c.clone(), cluster("Acme Co", n));
            tokio::spawn(async move { c.insert(&p).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut stored: Vec<String> =
        fake.policies().iter().map(|p| p["cluster"]["name"].as_str().unwrap().to_string()).collect();
    stored.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(stored, want, "each insert stored its own policy, none twice");

    // One variable per request, named in the command and assigned in the body.
    let mut vars: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| {
            let cmd = r.header("command").unwrap();
            let var = cmd.split("policy=!").nth(1).unwrap().split(' ').next().unwrap().to_string();
            assert!(r.body.starts_with(&format!("<{var}={{")), "{cmd} / {}", r.body);
            assert!(cmd.ends_with(&format!("and local=true and master={MASTER}")), "{cmd}");
            var
        })
        .collect();
    vars.sort();
    vars.dedup();
    assert_eq!(vars.len(), names.len());
}

#[tokio::test]
async fn a_policy_value_with_a_closing_bracket_is_refused_before_sending() {
    let fake = FakeEdgeLake::start().await;
    let c = client(&fake);
    let mut p = cluster("Acme Co", "c1");
    p["cluster"]["note"] = json!(["ok", "a > b"]);
    let err = c.insert(&p).await.unwrap_err();
    let AnylogError::InvalidPolicy(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("cluster.note[1]") && msg.contains("'>'"), "names the field: {msg}");
    assert!(fake.requests().is_empty(), "nothing sent");
}

#[tokio::test]
async fn a_node_that_is_down_is_unreachable_naming_its_address_then_back() {
    let fake = FakeEdgeLake::start().await;
    let c = client(&fake);
    fake.set_down(true).await;
    let err = c.get("operator", "Acme Co", "op-1").await.unwrap_err();
    let AnylogError::Unreachable { addr, .. } = &err else { panic!("{err:?}") };
    assert_eq!(addr, &fake.rest_addr());
    assert!(err.to_string().contains(&fake.rest_addr()), "{err}");

    fake.set_down(false).await;
    assert!(c.get("operator", "Acme Co", "op-1").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_name_resolves_through_dns() {
    let fake = FakeEdgeLake::start().await;
    let c = AnylogClient::new(&format!("localhost:{}", fake.addr().port()), MASTER, Duration::from_secs(5));
    assert!(c.get("operator", "Acme Co", "op-1").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_node_slower_than_the_timeout_is_a_timeout() {
    let fake = FakeEdgeLake::start().await;
    fake.slow(Duration::from_secs(30));
    let c = AnylogClient::new(&fake.rest_addr(), MASTER, Duration::from_millis(200));
    let started = Instant::now();
    let err = c.get("operator", "Acme Co", "op-1").await.unwrap_err();
    assert!(matches!(err, AnylogError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_fake_refuses_requests_without_the_anylog_user_agent() {
    let fake = FakeEdgeLake::start().await;
    let body = r#"<p={"cluster": {"company": "Acme", "name": "c1"}}>"#;
    let insert = format!(
        "POST / HTTP/1.1\r\nHost: x\r\ncommand: blockchain insert where policy=!p and local=true and \
         master=m:1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = raw(fake.addr(), &insert).await;
    assert!(reply.starts_with("HTTP/1.1 400 {"), "{reply}");
    assert!(fake.policies().is_empty());
    let with_agent = insert.replace("Host: x\r\n", "Host: x\r\nUser-Agent: AnyLog/1.23\r\n");
    let reply = raw(fake.addr(), &with_agent).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("Content-Length: 0\r\n") && reply.contains("Connection: close\r\n"), "{reply}");
    assert_eq!(fake.policies().len(), 1);

    // kubelet's probe gets the health answer.
    let reply = raw(fake.addr(), "GET /health HTTP/1.1\r\nUser-Agent: kube-probe/1.33\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.contains(r#""status": "healthy""#), "{reply}");
}

#[tokio::test]
async fn the_fake_matches_nothing_for_single_quotes_and_refuses_unquoted_spaces() {
    let fake = FakeEdgeLake::start().await;
    fake.seed(&cluster("Acme Co", "c1")).unwrap();
    let get = |cond: &str| {
        format!(
            "GET / HTTP/1.1\r\nUser-Agent: AnyLog/1.23\r\ncommand: blockchain get cluster where {cond}\r\n\r\n"
        )
    };
    let body = |reply: &str| reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string();

    let reply = raw(fake.addr(), &get(r#"company="Acme Co""#)).await;
    assert!(body(&reply).starts_with(r#"[{"cluster": {"company": "Acme Co""#), "{reply}");
    let reply = raw(fake.addr(), &get("company='Acme Co'")).await;
    assert_eq!(body(&reply), "[]", "{reply}");
    let reply = raw(fake.addr(), &get("company=Acme Co")).await;
    assert!(reply.starts_with("HTTP/1.1 400 {") && reply.contains(r#""err_code": 2"#), "{reply}");
}

#[tokio::test]
async fn the_fake_error_body_breaks_a_conforming_client() {
    let fake = FakeEdgeLake::start().await;
    let stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/")
        .header("user-agent", "AnyLog/1.23")
        .header("command", "blockchain delete policy where id=0123 and local=true and master=m:1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["connection"], "close");
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().expect("error in the reason phrase");
    let err: Value = serde_json::from_slice(reason.as_bytes()).unwrap();
    assert_eq!(err["err_code"], 113);
    assert!(resp.into_body().collect().await.is_err(), "the chunked body is not chunk-framed");
}

/// Issue 16: EdgeLake decodes headers as ISO-8859-1, so a look-up with UTF-8 in the `command`
/// header never matched what the policy body stored, and netstrap inserted again and again.
/// A company and name in any script are now looked up as stored: declaring twice leaves one
/// policy and the second declare changes nothing. A backslash, which EdgeLake matches only
/// doubled, too.
#[tokio::test]
async fn non_ascii_company_and_names_declare_once() {
    use netstrap::registry::Registry;
    use netstrap::registry::declare::{Declared, declare};
    let fake = FakeEdgeLake::start().await;
    let registry = Registry::Anylog(client(&fake));
    for (company, name) in [
        ("Société Générale", "Zürich-1"),
        ("東京電力", "節點-1"),
        ("Rocket 🚀", "n\u{a0}1"),
        (r"A\B", r"back\slash"),
    ] {
        let policy = json!({"query": {"name": name, "company": company, "ip": "q.edge", "port": 32348}});
        let first = declare(&registry, &policy).await.unwrap();
        assert!(matches!(first, Declared::Inserted { .. }), "{company}/{name}: {first:?}");
        let again = declare(&registry, &policy).await.unwrap();
        assert_eq!(again, Declared::Unchanged { id: first.id().unwrap().to_string() }, "{company}/{name}");
        let stored: Vec<Value> = fake.policies().into_iter().filter(|p| p["query"]["name"] == name).collect();
        assert_eq!(stored.len(), 1, "{company}/{name}: {stored:?}");
        assert_eq!(stored[0]["query"]["company"], company, "stored as written");
    }
    // ASCII look-ups keep the command header.
    let c = client(&fake);
    assert!(c.get("query", "Acme", "q-1").await.unwrap().is_empty());
    assert!(fake.requests().last().unwrap().header("command").is_some());
}
