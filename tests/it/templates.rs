//! EdgeLake's `!var` templates as netstrap renders them (EDGELAKE.md §Templates): suffixes,
//! quoted vs unquoted references in policies, `$ENV`, and the errors EdgeLake would have hidden.

use std::collections::HashMap;

use netstrap::policy::id::policy_id;
use netstrap::policy::template::{
    NoVars, Position, Suffix, TemplateError, Vars, expand, from_fn, render_policy_text,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn node_vars() -> HashMap<String, String> {
    [
        ("external_ip", "203.0.113.7"),
        ("ip", "10.244.1.7"),
        ("anylog_server_port", "32148"),
        ("anylog_rest_port", " +32149 "),
        ("node_name", "Operator One"),
        ("ratio", "2"),
        ("tcp_bind", "false"),
        ("rest_bind", "True"),
        ("empty", ""),
        ("port", "abc"),
        ("master_node", "10.0.0.5:32048"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn x(text: &str) -> Result<String, TemplateError> {
    expand(text, &node_vars(), &NoVars)
}

#[test]
fn each_suffix_converts_the_value() {
    let v = node_vars();
    let p = render_policy_text(
        r#"{"a": !anylog_server_port.int, "b": !anylog_rest_port.int, "c": !ratio.float, "d": !tcp_bind.bool,
            "e": !rest_bind.bool, "f": !node_name.name, "g": !anylog_server_port.str, "h": !anylog_server_port,
            "i": !empty.bool}"#,
        &v,
        &NoVars,
    )
    .unwrap();
    assert_eq!(
        p,
        json!({"a": 32148, "b": 32149, "c": 2.0, "d": false, "e": true, "f": "operator_one", "g": "32148",
               "h": "32148", "i": false})
    );
    assert!(p["c"].is_f64() && p["a"].is_u64());
    assert_eq!(
        x("n=!node_name.name port=!anylog_rest_port.int r=!ratio.float b=!tcp_bind.bool").unwrap(),
        "n=operator_one port=32149 r=2.0 b=false"
    );
}

#[test]
fn a_config_policy_keeps_quoted_references_and_substitutes_unquoted_ones() {
    let template = r#"{"config": {"name": "operator-acme-configs", "ip": "!external_ip", "local_ip": "!ip",
        "port": !anylog_server_port.int, "rest_port": "!anylog_rest_port.int", "tcp_bind": !tcp_bind.bool,
        "note": "say \"!ip\" and $HOME", "kept": !!ip, "script": ["run scheduler 1", "set x = !ip"]}}"#;
    let p = render_policy_text(template, &node_vars(), &NoVars).unwrap();
    let c = &p["config"];
    assert_eq!(c["ip"], "!external_ip");
    assert_eq!(c["kept"], "!ip", "an unquoted !!ip is the literal !ip");
    assert_eq!(c["local_ip"], "!ip");
    assert_eq!(c["port"], json!(32148));
    assert_eq!(c["rest_port"], "!anylog_rest_port.int");
    assert_eq!(c["tcp_bind"], json!(false));
    assert_eq!(c["note"], "say \"!ip\" and $HOME");
    assert_eq!(c["script"], json!(["run scheduler 1", "set x = !ip"]));
    let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "ip", "local_ip", "port", "rest_port", "tcp_bind", "note", "kept", "script"]);
}

#[test]
fn the_config_vector_renders_to_the_policy_edgelake_hashed() {
    let vectors: Vec<Value> = serde_json::from_str(include_str!("../data/edgelake_policy_ids.json")).unwrap();
    let v = vectors.iter().find(|v| v["policy"].get("config").is_some()).expect("a config vector");
    let text = serde_json::to_string_pretty(&v["policy"]).unwrap();
    // Every reference in it is quoted: nothing resolves, so no variables are needed.
    let rendered = render_policy_text(&text, &NoVars, &NoVars).unwrap();
    assert_eq!(policy_id(&rendered).unwrap(), v["md5"].as_str().unwrap());
}

#[test]
fn env_references_resolve_and_an_env_value_naming_a_node_variable_resolves_again() {
    let env = [
        ("LEDGER_CONN", "!master_node"),
        ("SERVER_PORT", "32048"),
        ("SITE", "plain $HOME text"),
        ("VIA", "!ip:!anylog_server_port"),
    ];
    assert_eq!(
        expand("master=$LEDGER_CONN port=$SERVER_PORT.int site=$SITE at=$VIA", &node_vars(), &env).unwrap(),
        "master=10.0.0.5:32048 port=32048 site=plain $HOME text at=10.244.1.7:32148"
    );
    let p = render_policy_text(
        r#"{"ledger": $LEDGER_CONN, "port": $SERVER_PORT.int, "q": "$SERVER_PORT"}"#,
        &node_vars(),
        &env,
    )
    .unwrap();
    assert_eq!(p, json!({"ledger": "10.0.0.5:32048", "port": 32048, "q": "$SERVER_PORT"}));

    let env = [("LEDGER_CONN", "!nowhere")];
    let err = expand("x $LEDGER_CONN", &node_vars(), &env).unwrap_err();
    assert!(
        matches!(&err, TemplateError::UnknownVariable { name, via_env: Some(e), .. } if name == "nowhere" && e == "LEDGER_CONN"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`!nowhere` (the value of $LEDGER_CONN)"), "{err}");
}

#[test]
fn unknown_variables_and_unset_env_are_errors_that_say_where() {
    let err = x("run tcp server where\n  external_ip=!external_ip and internal_ip=!pod_ip").unwrap_err();
    assert_eq!(
        err,
        TemplateError::UnknownVariable {
            name: "pod_ip".into(),
            via_env: None,
            at: Position { offset: 64, line: 2, column: 44 }
        }
    );
    assert!(err.to_string().starts_with("line 2, column 44: unknown node variable `!pod_ip`"), "{err}");

    let err = expand("é $NOPE", &NoVars, &from_fn(|_| None)).unwrap_err();
    assert_eq!(
        err,
        TemplateError::UnsetEnv { name: "NOPE".into(), at: Position { offset: 3, line: 1, column: 3 } }
    );
    assert!(err.to_string().contains("`$NOPE` is not set"), "{err}");
}

#[test]
fn a_failed_conversion_names_the_reference_the_value_and_the_suffix() {
    let err = render_policy_text(r#"{"port": !port.int}"#, &node_vars(), &NoVars).unwrap_err();
    match &err {
        TemplateError::Conversion { reference, value, suffix, .. } => {
            assert_eq!((reference.as_str(), value.as_str(), *suffix), ("!port.int", "abc", Suffix::Int));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("`!port.int`") && msg.contains("\"abc\"") && msg.contains(".int"), "{msg}");

    for bad in ["1.5", "", "4_2", "12a", "99999999999999999999"] {
        let vars = [("v", bad)];
        assert!(matches!(expand("!v.int", &vars, &NoVars), Err(TemplateError::Conversion { .. })), "{bad:?}");
    }
    for bad in ["inf", "nan", "1e999", "one"] {
        let vars = [("v", bad)];
        let err = expand("!v.float", &vars, &NoVars).unwrap_err();
        assert!(matches!(err, TemplateError::Conversion { suffix: Suffix::Float, .. }), "{bad:?}: {err:?}");
    }
    assert_eq!(expand("!v.int", &[("v", "-0042")], &NoVars).unwrap(), "-42");
    assert_eq!(expand("!v.float", &[("v", "1e16")], &NoVars).unwrap(), "1e+16");
}

#[test]
fn booleans_follow_edgelake_where_unambiguous_and_refuse_false_looking_true() {
    for (value, want) in [
        ("false", false),
        ("", false),
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("yes", true),
        ("1", true),
        ("on", true),
        ("anything", true),
    ] {
        assert_eq!(expand("!b.bool", &[("b", value)], &NoVars).unwrap(), want.to_string(), "{value:?}");
    }
    for value in
        ["False", "FALSE", "no", "No", "0", "off", "n", "f", " false", "false ", "  ", "null", "Disabled"]
    {
        let err = expand("!b.bool", &[("b", value)], &NoVars).unwrap_err();
        assert!(
            matches!(&err, TemplateError::AmbiguousBool { value: v, .. } if v == value),
            "{value:?}: {err:?}"
        );
        assert!(err.to_string().contains("EdgeLake would read this as true"), "{err}");
    }
}

#[test]
fn sigils_without_a_name_and_unknown_suffixes_are_text() {
    assert_eq!(x("if !ip != 5 then ! $ $. !.int !!ip").unwrap(), "if 10.244.1.7 != 5 then ! $ $. !.int !ip");
    assert_eq!(x("!ip.intx !ip.str.int !ip.").unwrap(), "10.244.1.7.intx 10.244.1.7.int 10.244.1.7.");
    assert_eq!(x("ünïcødé !node_name!ip").unwrap(), "ünïcødé Operator One10.244.1.7");
}

#[test]
fn invalid_json_after_substitution_is_reported_with_context() {
    let err = render_policy_text("{\"a\": 1,\n \"b\": !ip, \"c\": tru}", &node_vars(), &NoVars).unwrap_err();
    match &err {
        TemplateError::Json { line, context, .. } => {
            assert_eq!(*line, 2);
            assert!(context.contains("\"10.244.1.7\", \"c\": tru"), "{context}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("not valid JSON after substitution"), "{err}");
    for bad in ["{\"a\": \"unterminated", "{\"a\": 'single'}", "", "{\"é\": ü}"] {
        assert!(
            matches!(render_policy_text(bad, &NoVars, &NoVars), Err(TemplateError::Json { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn random_text_never_panics_and_errors_point_at_a_reference() {
    const PIECES: &[&str] = &[
        "!",
        "$",
        "!!",
        "\"",
        "\\",
        ".",
        ".int",
        ".bool",
        ".float",
        ".name",
        ".str",
        "ip",
        "x",
        "_",
        "9",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\n",
        "é",
        "日本",
        "\u{1F600}",
        "\u{0}",
        "true",
        "1.5",
        "PORT",
        "'",
    ];
    let vars = from_fn(|name: &str| match name.len() % 4 {
        0 => None,
        1 => Some("32048".to_string()),
        2 => Some("False".to_string()),
        _ => Some("ü \"x\" !ip".to_string()),
    });
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..5000 {
        let len = rng.random_range(0..24);
        let text: String = (0..len).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
        for result in [expand(&text, &vars, &vars).err(), render_policy_text(&text, &vars, &vars).err()] {
            let at = match result {
                Some(TemplateError::UnknownVariable { at, .. })
                | Some(TemplateError::UnsetEnv { at, .. })
                | Some(TemplateError::Conversion { at, .. })
                | Some(TemplateError::AmbiguousBool { at, .. }) => at,
                _ => continue,
            };
            let sigil = text.as_bytes().get(at.offset).copied();
            assert!(sigil == Some(b'!') || sigil == Some(b'$'), "{text:?}: error at {at:?}");
        }
        if !text.contains(['!', '$']) {
            assert_eq!(expand(&text, &vars, &vars).unwrap(), text);
        }
    }
}

#[test]
fn vars_can_come_from_maps_slices_and_closures() {
    let sources: [&dyn Vars; 3] =
        [&node_vars(), &[("ip", "10.244.1.7")], &from_fn(|n: &str| (n == "ip").then(|| "10.244.1.7".into()))];
    for vars in sources {
        assert_eq!(expand("!ip", vars, &NoVars).unwrap(), "10.244.1.7");
    }
}
