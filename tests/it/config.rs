//! Configuration: EdgeLake defaults by node type, precedence, and the message for each
//! class of bad value.

use std::time::Duration;

use netstrap::config::{
    BrokerMode, ConfigError, Layers, NodeType, Origin, Plane, Settings, TcpMode, parse_toml,
};

fn env(pairs: &[(&str, &str)]) -> Layers {
    Layers::new().push(Origin::Env, pairs.iter().map(|(k, v)| (*k, v.to_string())))
}

fn parse(pairs: &[(&str, &str)]) -> Settings {
    Settings::parse(&env(pairs)).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(pairs: &[(&str, &str)]) -> Vec<ConfigError> {
    match Settings::parse(&env(pairs)) {
        Ok(_) => panic!("{pairs:?} was accepted"),
        Err(e) => e.0,
    }
}

fn port(p: &Option<netstrap::provenance::Found<u16>>) -> Option<u16> {
    p.as_ref().map(|f| f.value)
}

#[test]
fn edgelake_ports_by_node_type() {
    for (ty, tcp, rest) in [
        ("master", 32048, 32049),
        ("operator", 32148, 32149),
        ("publisher", 32248, 32249),
        ("query", 32348, 32349),
        ("generic", 32548, 32549),
        ("master-operator", 32548, 32549),
        ("master-publisher", 32548, 32549),
    ] {
        let s = parse(&[("NODE_TYPE", ty)]);
        assert_eq!(port(&s.tcp.listen.port), Some(tcp), "{ty}");
        assert_eq!(port(&s.rest.listen.port), Some(rest), "{ty}");
        assert_eq!(s.broker.listen.port, None, "{ty}: no broker unless ANYLOG_BROKER_PORT is set");
        assert_eq!(s.broker.mode.value, BrokerMode::Off);
        assert!(
            s.tcp.listen.port.as_ref().unwrap().why.source.contains(ty),
            "provenance names the node type"
        );
    }
}

#[test]
fn edgelake_defaults_for_everything_else() {
    let s = parse(&[]);
    assert_eq!(s.node_type.value, NodeType::Generic);
    assert_eq!(s.company_name, "New Company");
    assert_eq!(s.location, "0.0, 0.0");
    assert_eq!((s.country.as_str(), s.state.as_str(), s.city.as_str()), ("Unknown", "Unknown", "Unknown"));
    assert!(!s.tcp.listen.bind.value && !s.rest.listen.bind.value && !s.broker.listen.bind.value);
    assert_eq!(
        (s.tcp.listen.threads.value, s.rest.listen.threads.value, s.broker.listen.threads.value),
        (6, 6, 6)
    );
    assert_eq!(s.rest.timeout.value, Duration::from_secs(30));
    assert_eq!(s.ledger_conn.value, "127.0.0.1:32048");
    assert_eq!(s.tcp.mode.value, TcpMode::Native);
    assert!(!s.enable_dns);
}

#[test]
fn bool_spellings_edgelake_accepts() {
    for t in ["true", "True", "TRUE"] {
        assert!(parse(&[("TCP_BIND", t)]).tcp.listen.bind.value, "{t}");
    }
    for f in ["false", "False", "FALSE"] {
        assert!(!parse(&[("REST_BIND", f)]).rest.listen.bind.value, "{f}");
    }
}

#[test]
fn negative_rest_timeout_means_no_limit() {
    assert_eq!(parse(&[("REST_TIMEOUT", "-5")]).rest.timeout.value, Duration::ZERO);
    assert_eq!(parse(&[("REST_TIMEOUT", "0")]).rest.timeout.value, Duration::ZERO);
    assert_eq!(parse(&[("REST_TIMEOUT", "12")]).rest.timeout.value, Duration::from_secs(12));
}

#[test]
fn a_plane_relays_to_its_upstream_only_in_relay_mode() {
    let ups = [
        ("ANYLOG_BROKER_PORT", "32150"),
        ("NETSTRAP_TCP_UPSTREAM", "127.0.0.1:9"),
        ("NETSTRAP_REST_UPSTREAM", "127.0.0.1:8"),
        ("NETSTRAP_BROKER_UPSTREAM", "127.0.0.1:1883"),
    ];
    let relayed = parse(&ups);
    let upstreams = Plane::ALL.map(|p| relayed.upstream(p).map(|a| a.port()));
    assert_eq!(upstreams, [Some(9), Some(8), Some(1883)], "an upstream makes tcp and broker relay");
    let served =
        parse(&[&ups[..], &[("NETSTRAP_TCP_MODE", "native"), ("NETSTRAP_BROKER_MODE", "embedded")]].concat());
    let upstreams = Plane::ALL.map(|p| served.upstream(p).map(|a| a.port()));
    assert_eq!(upstreams, [None, Some(8), None], "the rest plane proxies whatever its mode");
    let listening = Plane::ALL.map(|p| port(&served.listen(p).port));
    assert_eq!(listening, [Some(32548), Some(32549), Some(32150)]);
}

#[test]
fn broker_mode_follows_broker_port_and_upstream() {
    let s = parse(&[("ANYLOG_BROKER_PORT", "32150")]);
    assert_eq!(s.broker.mode.value, BrokerMode::Embedded);
    let s = parse(&[("ANYLOG_BROKER_PORT", "32150"), ("NETSTRAP_BROKER_UPSTREAM", "127.0.0.1:1883")]);
    assert_eq!(s.broker.mode.value, BrokerMode::Relay);
    let s = parse(&[("NETSTRAP_TCP_UPSTREAM", "127.0.0.1:32048"), ("ANYLOG_SERVER_PORT", "40000")]);
    assert_eq!(s.tcp.mode.value, TcpMode::Relay);
}

#[test]
fn precedence_flags_over_env_over_file() {
    let file = parse_toml("anylog_rest_port = 1111\nANYLOG_SERVER_PORT = 2222\nCOMPANY_NAME = \"File Co\"\n")
        .unwrap();
    let layers = Layers::new()
        .push(Origin::Flag, [("ANYLOG_REST_PORT", "3333")])
        .push(Origin::Env, [("ANYLOG_REST_PORT", "4444"), ("ANYLOG_SERVER_PORT", "5555")])
        .push(Origin::File("netstrap.toml".into()), file);
    let s = Settings::parse(&layers).unwrap();
    assert_eq!(port(&s.rest.listen.port), Some(3333), "flag beats env and file");
    assert_eq!(port(&s.tcp.listen.port), Some(5555), "env beats file");
    assert_eq!(s.company_name, "File Co", "file beats default");
    assert_eq!(s.rest.listen.port.unwrap().why.source, "flag ANYLOG_REST_PORT");
    assert_eq!(s.tcp.listen.port.unwrap().why.source, "env ANYLOG_SERVER_PORT");
}

#[test]
fn empty_values_count_as_unset() {
    let layers = Layers::new()
        .push(Origin::Env, [("NODE_TYPE", "")])
        .push(Origin::File("f.toml".into()), [("NODE_TYPE", "operator")]);
    assert_eq!(Settings::parse(&layers).unwrap().node_type.value, NodeType::Operator);
}

fn message(pairs: &[(&str, &str)]) -> String {
    errors(pairs).iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn each_bad_value_names_variable_value_and_what_is_accepted() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[("ANYLOG_REST_PORT", "70000")], &["ANYLOG_REST_PORT", "\"70000\"", "out of range", "1-65535"]),
        (&[("ANYLOG_SERVER_PORT", "http")], &["ANYLOG_SERVER_PORT", "not a number"]),
        (&[("TCP_BIND", "maybe")], &["TCP_BIND", "\"maybe\"", "true or false"]),
        (&[("TCP_BIND", "yes")], &["TCP_BIND", "true or false"]),
        (&[("NODE_TYPE", "leader")], &["NODE_TYPE", "\"leader\"", "master, operator, query"]),
        (&[("LOCAL_IP", "10.0.0.300")], &["LOCAL_IP", "not an IP address", "IPv4 or IPv6"]),
        (&[("POD_IPS", "10.1.2.3,fe80::zz")], &["POD_IPS", "fe80::zz"]),
        (&[("NETSTRAP_CIDR", "10.0.0.0/33")], &["NETSTRAP_CIDR", "not a CIDR"]),
        (&[("TCP_THREADS", "0")], &["TCP_THREADS", "1 to 1024"]),
        (&[("REST_TIMEOUT", "soon")], &["REST_TIMEOUT", "whole seconds"]),
        (&[("NETSTRAP_EXTERNAL_SOURCES", "explicit,ipinfo")], &["unknown source `ipinfo`"]),
        (&[("NETSTRAP_TCP_MODE", "relay")], &["relay needs an upstream", "NETSTRAP_TCP_UPSTREAM"]),
        (&[("ANYLOG_SERVER_PORT", "32549")], &["ANYLOG_REST_PORT", "same port as ANYLOG_SERVER_PORT"]),
        (&[("NETSTRAP_LOG", "info,netstrap=loud")], &["NETSTRAP_LOG", "not a log filter", "target=level"]),
    ];
    for (input, expected) in cases {
        let msg = message(input);
        for want in *expected {
            assert!(msg.contains(want), "{input:?}: message {msg:?} lacks {want:?}");
        }
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    assert_eq!(errors(&[("TCP_BIND", "maybe"), ("ANYLOG_REST_PORT", "0"), ("NODE_TYPE", "x")]).len(), 3);
}

#[test]
fn typos_in_file_or_flags_are_caught_with_a_suggestion() {
    let layers = Layers::new().push(Origin::File("n.toml".into()), [("TCP_BIDN", "true")]);
    let msg = Settings::parse(&layers).unwrap_err().to_string();
    assert!(msg.contains("TCP_BIDN") && msg.contains("did you mean TCP_BIND?"), "{msg}");
    // The environment holds unrelated variables; they are not errors.
    assert!(Settings::parse(&env(&[("PATH", "/bin"), ("TCP_BIDN", "x")])).is_ok());
}

#[test]
fn every_netstrap_setting_is_accepted_in_a_configuration_file() {
    let file = parse_toml(
        "NETSTRAP_LEDGER = \"file:///data/blockchain.json\"\nNETSTRAP_CLUSTER_ID = \"abc\"\n\
         NETSTRAP_STATE_DIR = \"/data/netstrap\"\nNETSTRAP_WATCH_INTERVAL = 10\nNETSTRAP_VERIFY = \"gate\"\n",
    )
    .unwrap();
    let layers = Layers::new().push(Origin::File("netstrap.toml".into()), file);
    let s = Settings::parse(&layers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.ledger.to_string(), "file:///data/blockchain.json");
    assert_eq!(s.watch_interval, std::time::Duration::from_secs(10));
}

#[test]
fn nested_toml_tables_are_refused_with_a_hint() {
    let err = parse_toml("[tcp]\nbind = true\n").unwrap_err();
    assert!(err.contains("flat keys"), "{err}");
}

#[test]
fn service_name_comes_from_netstrap_or_anylog_docs_variable() {
    let s = parse(&[("KUBERNETES_SERVICE_IP", "edgelake-operator")]);
    assert_eq!(s.service.unwrap().value, "edgelake-operator");
    let s = parse(&[("KUBERNETES_SERVICE_IP", "a"), ("NETSTRAP_SERVICE", "b")]);
    assert_eq!(s.service.unwrap().value, "b", "NETSTRAP_SERVICE wins");
}

/// `Settings` as text without provenance (`why: Provenance { .. }`): what a value is, not where
/// it came from.
fn values_only(s: &Settings) -> String {
    let text = format!("{s:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("why: Provenance {") {
        out.push_str(&rest[..i]);
        let mut depth = 0;
        let mut end = i;
        for (j, c) in rest[i..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The default each variable documents (config/variables.rs, the README's table) is the one
/// parsing uses: setting a variable to its documented default changes nothing. Defaults that
/// describe rather than state a value ("unset", "discovered", "by type: …") are skipped.
#[test]
fn each_documented_default_is_the_default_parsing_uses() {
    use netstrap::config::variables::{EDGELAKE, NETSTRAP};
    let base = values_only(&parse(&[]));
    let descriptive = ["unset", "discovered", "detected", "by type", "<", "the "];
    // Defaults that say where the value comes from or what it depends on, not a value.
    let derived = [
        "POD_NAMESPACE",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "NETSTRAP_NAMESPACE",
        "NETSTRAP_CLUSTER_DOMAIN",
        "NETSTRAP_KUBECONFIG",
        "NETSTRAP_NAMESERVER",
        "NETSTRAP_TCP_MODE",
        "NETSTRAP_READY_UPSTREAM",
        "NETSTRAP_TCP_PORT",
        "NETSTRAP_REST_PORT",
        "NETSTRAP_BROKER_PORT",
        "NETSTRAP_BROKER_MODE",
        "NETSTRAP_TCP_EXTERNAL_PORT",
        "NETSTRAP_REST_EXTERNAL_PORT",
        "NETSTRAP_BROKER_EXTERNAL_PORT",
        "NETSTRAP_SHUTDOWN_DELAY",
        "NETSTRAP_TLS_PLANES",
        "NETSTRAP_LOG",
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for v in EDGELAKE.iter().chain(NETSTRAP) {
        if descriptive.iter().any(|d| v.default.starts_with(d)) || derived.contains(&v.name) {
            continue;
        }
        checked += 1;
        match Settings::parse(&env(&[(v.name, v.default)])) {
            Err(e) => wrong.push(format!("{}={:?} is refused: {e}", v.name, v.default)),
            Ok(set) if values_only(&set) != base => {
                wrong.push(format!("{}={:?} changes the settings", v.name, v.default))
            }
            Ok(_) => {}
        }
    }
    assert!(wrong.is_empty(), "documented defaults that are not the defaults:\n{}", wrong.join("\n"));
    assert!(checked >= 35, "only {checked} defaults are values");
}
