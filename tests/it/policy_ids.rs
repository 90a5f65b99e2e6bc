//! Policy ids as EdgeLake computes them (EDGELAKE.md §Policy id): every vector in
//! tests/data/edgelake_policy_ids.json (CPython 3.11 output and ids a live node stored), plus
//! the Python repr rules they rest on. Expected values were produced with CPython 3.11.

use netstrap::policy::id::{
    PolicyIdError, cluster_id, policy_id, python_float_repr, python_repr, with_registry_fields,
};
use serde_json::{Value, json};

fn vectors() -> Vec<Value> {
    let text = include_str!("../data/edgelake_policy_ids.json");
    serde_json::from_str(text).expect("vectors file is JSON")
}

#[test]
fn every_vector_reproduces_pythons_repr_and_edgelakes_id() {
    let vectors = vectors();
    assert!(vectors.len() >= 7, "the vectors file lost entries");
    for (i, v) in vectors.iter().enumerate() {
        let policy = &v["policy"];
        if let Some(repr) = v["python_repr"].as_str() {
            assert_eq!(python_repr(policy), repr, "vector {i}: python repr");
        }
        if let Some(hashed) = v["hashed_string"].as_str() {
            // Named-field types: the vector gives the exact hashed string.
            let inner = &policy["cluster"];
            let (company, name) = (inner["company"].as_str().unwrap(), inner["name"].as_str().unwrap());
            assert_eq!(hashed, format!("cluster:company:{company}:name:{name}:"), "vector {i}");
            assert_eq!(cluster_id(company, name), v["md5"].as_str().unwrap(), "vector {i}: cluster_id");
        }
        assert_eq!(policy_id(policy).unwrap(), v["md5"].as_str().unwrap(), "vector {i}: id");
    }
}

#[test]
fn a_policy_stored_by_a_live_node_hashes_back_to_its_id_once_member_is_removed() {
    let v =
        vectors().into_iter().find(|v| v.get("stored_line").is_some()).expect("a vector with a stored line");
    let mut stored: Value = serde_json::from_str(v["stored_line"].as_str().unwrap()).unwrap();
    let id = stored["operator"]["id"].as_str().unwrap().to_string();
    assert_eq!(id, v["md5"].as_str().unwrap());
    // id, date and ledger are never hashed; member was added after the id was computed.
    assert_ne!(policy_id(&stored).unwrap(), id, "member is hashed when present");
    stored["operator"].as_object_mut().unwrap().shift_remove("member");
    assert_eq!(policy_id(&stored).unwrap(), id);
}

#[test]
fn date_ledger_and_id_anywhere_in_the_body_do_not_change_the_id_or_the_field_order() {
    let base = json!({"master": {"name": "m", "company": "c", "ip": "10.0.0.1", "port": 32048}});
    let noisy = json!({"master": {"id": "0123", "name": "m", "date": "2026-01-01T00:00:00.000000Z",
        "company": "c", "ledger": "global", "ip": "10.0.0.1", "port": 32048}});
    assert_eq!(policy_id(&noisy).unwrap(), policy_id(&base).unwrap());
}

#[test]
fn key_order_is_part_of_the_id() {
    let original = vectors()[0]["policy"].clone();
    let body = original["master"].as_object().unwrap();
    let reversed: serde_json::Map<String, Value> =
        body.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
    let reordered = json!({ "master": reversed });
    assert_eq!(original, reordered, "same content (serde_json equality ignores order)");
    // From CPython: md5(str({'master': dict(reversed(items))})).
    assert_eq!(policy_id(&reordered).unwrap(), "7031ab525f3a3d7470fc8d224098b2fe");
    assert_ne!(policy_id(&reordered).unwrap(), policy_id(&original).unwrap());
}

#[test]
fn cluster_ids_hash_named_fields_in_edgelakes_order_and_ignore_the_rest() {
    let cluster = json!({"cluster": {"name": "acme-cluster-1", "status": "active", "company": "Acme Co",
        "id": "x", "date": "d", "ledger": "global"}});
    assert_eq!(policy_id(&cluster).unwrap(), "b846d592791ec5d7675dcf206584f71b");
    assert_eq!(cluster_id("Acme Co", "acme-cluster-1"), "b846d592791ec5d7675dcf206584f71b");
    // parent and table join the hashed string; table as Python's str() of the list:
    // cluster:company:Acme Co:name:c2:parent:abc:table:[{'dbms': 'd', 'name': 't'}]:
    let child = json!({"cluster": {"table": [{"dbms": "d", "name": "t"}], "parent": "abc",
        "company": "Acme Co", "name": "c2"}});
    assert_eq!(policy_id(&child).unwrap(), "8a8754a13c6807d82ef500cb92af48b6");
}

#[test]
fn table_ids_hash_company_name_and_dbms() {
    // EdgeLake's hash_fields for tables (from its source; no live vector): table:company:Acme:name:t1:dbms:d:
    let table =
        json!({"table": {"name": "t1", "dbms": "d", "company": "Acme", "create": "CREATE TABLE ..."}});
    assert_eq!(policy_id(&table).unwrap(), "4e494fb763f1c54326215f5b04fd5ee2");
}

#[test]
fn shapes_that_are_not_a_policy_are_refused_with_the_expected_shape() {
    for (bad, says) in [
        (json!([{"master": {}}]), "an array"),
        (json!("master"), "a string"),
        (json!({}), "an empty object"),
        (json!({"master": {}, "operator": {}}), "2 keys (master, operator)"),
    ] {
        let err = policy_id(&bad).unwrap_err();
        assert!(matches!(err, PolicyIdError::NotOnePolicy { .. }), "{bad}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("exactly one key") && msg.contains(says), "{msg}");
    }
    let err = policy_id(&json!({"master": ["name", "m"]})).unwrap_err();
    assert_eq!(err, PolicyIdError::BodyNotObject { policy_type: "master".into(), found: "an array".into() });
    assert!(err.to_string().contains("\"master\" must be a JSON object"), "{err}");
}

#[test]
fn registry_fields_follow_the_body_in_edgelakes_order() {
    let p = json!({"query": {"ledger": "local", "name": "q", "date": "old", "id": "old", "port": 32348}});
    let stored = with_registry_fields(&p, "abc", "2026-01-01T00:00:00.000000Z").unwrap();
    let keys: Vec<&str> = stored["query"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "port", "id", "date", "ledger"]);
    assert_eq!(stored["query"]["id"], "abc");
    assert_eq!(stored["query"]["ledger"], "local");
    assert!(with_registry_fields(&json!([]), "a", "b").is_err());
}

#[test]
fn floats_print_as_cpython_repr() {
    for (bits, want) in FLOATS {
        let f = f64::from_bits(*bits);
        assert_eq!(python_float_repr(f), *want, "bits {bits:#018x}");
        // And inside a policy, through serde_json's number.
        if let Some(n) = serde_json::Number::from_f64(f) {
            assert_eq!(python_repr(&Value::Number(n)), *want, "bits {bits:#018x} as JSON");
        }
    }
    assert_eq!(python_float_repr(f64::NAN), "nan");
    assert_eq!(python_float_repr(f64::NEG_INFINITY), "-inf");
}

#[test]
fn json_numbers_print_as_python_reads_them() {
    let v: Value =
        serde_json::from_str("[1, -7, 1.0, 1e2, 2.5E-7, 18446744073709551615, -9223372036854775808]")
            .unwrap();
    assert_eq!(python_repr(&v), "[1, -7, 1.0, 100.0, 2.5e-07, 18446744073709551615, -9223372036854775808]");
}

#[test]
fn strings_print_as_cpython_repr() {
    for (s, want) in STRINGS {
        assert_eq!(python_repr(&Value::String((*s).into())), *want, "{s:?}");
    }
    // The same strings as one policy: md5(str({'generic': {'k0': ..., 'k1': ...}})) from CPython.
    let body: serde_json::Map<String, Value> =
        STRINGS.iter().enumerate().map(|(i, (s, _))| (format!("k{i}"), Value::String((*s).into()))).collect();
    assert_eq!(policy_id(&json!({ "generic": body })).unwrap(), "5b8a2715db457d0a2975ef20400df509");
}

#[test]
fn containers_and_literals_print_as_python() {
    let v = json!({"a": [true, false, null, [], {}], "it's": {"x": [1, "y"]}});
    assert_eq!(python_repr(&v), "{'a': [True, False, None, [], {}], \"it's\": {'x': [1, 'y']}}");
}

/// (f64 bits, CPython 3.11 repr): chosen edge cases, random bit patterns and random decimals.
const FLOATS: &[(u64, &str)] = &[
    (0x3fb999999999999a, "0.1"),
    (0x3ff0000000000000, "1.0"),
    (0x4341c37937e08000, "1e+16"),
    (0x3eef75104d551d69, "1.5e-05"),
    (0x437b69b4ba630f35, "1.2345678901234568e+17"),
    (0x8000000000000000, "-0.0"),
    (0x0000000000000000, "0.0"),
    (0x3f1a36e2eb1c432d, "0.0001"),
    (0x3ee4f8b588e368f1, "1e-05"),
    (0x4341c37937e07fff, "9999999999999998.0"),
    (0x430c6bf526340000, "1000000000000000.0"),
    (0x4376345785d8a000, "1e+17"),
    (0x0000000000000001, "5e-324"),
    (0x7fefffffffffffff, "1.7976931348623157e+308"),
    (0x0010000000000000, "2.2250738585072014e-308"),
    (0x3fd3333333333334, "0.30000000000000004"),
    (0x4059000000000000, "100.0"),
    (0x4480f0cf064dd592, "1e+22"),
    (0x44b52d02c7e14af6, "1e+23"),
    (0xc004000000000000, "-2.5"),
    (0x4042e28f5c28f5c3, "37.77"),
    (0xc05e9a3d70a3d70a, "-122.41"),
    (0x3fd5555555555555, "0.3333333333333333"),
    (0x4340000000000000, "9007199254740992.0"),
    (0x43e0000000000000, "9.223372036854776e+18"),
    (0x7e41eb2d66005835, "1.5e+300"),
    (0x40c81cd6c8b43958, "12345.678"),
    (0x3f202e4b6ce5dc68, "0.00012345"),
    (0xbe7ad7f29abcaf48, "-1e-07"),
    (0xf2a74de452e6b438, "-1.989032661366619e+244"),
    (0x6513270e269e0d37, "7.761117632285041e+178"),
    (0x0c5c7fd0a6a3a450, "3.980498358697587e-249"),
    (0xd23f0824128b2f33, "-1.5432835417340557e+88"),
    (0x1818e811892f902b, "1.3647584518757569e-192"),
    (0x9531985d5d9dc9f8, "-1.3701135617873088e-206"),
    (0xe8e25d940ed90475, "-1.7160537630466207e+197"),
    (0x36f675cc81e74ef5, "6.294675241195386e-44"),
    (0x1600a35a099950d8, "1.0613447212142254e-202"),
    (0x6b0d549b6f03675a, "4.708325160387546e+207"),
    (0x3d9c172411e20b8f, "6.387016158513563e-12"),
    (0x8d116ece1738f7d9, "-9.973130378568733e-246"),
    (0x0f21ddb66cad4a26, "8.779753225680271e-236"),
    (0x90c192cfd3ac94af, "-5.795503248498993e-228"),
    (0xf28c105d1fb17c23, "-5.988180159386011e+243"),
    (0xa170b33839263059, "-1.306052388527796e-147"),
    (0x953f48f1a09f76b5, "-2.436117699484841e-206"),
    (0x0fd630f1f29d0da9, "2.233386999150174e-232"),
    (0x95e60af593bd04cf, "-3.51527970626667e-203"),
    (0x0cb1e29c658cda14, "1.5987381841032883e-247"),
    (0x3898d190f9ebdacc, "4.6678633181812096e-36"),
    (0x8e81973e0becd7b0, "-8.441872792105456e-239"),
    (0x2217beaddbc496cb, "1.9015657400796622e-144"),
    (0x6b4cb2424a23d596, "7.370437700706684e+208"),
    (0x8a6a63ec24ede6a4, "-1.7163996725272777e-258"),
    (0x922766581e27a1c0, "-3.2367190832119987e-221"),
    (0x8f6d05584ef8aa38, "-2.2818334634712625e-234"),
    (0xae97ba94d0eda82f, "-3.0536383926309363e-84"),
    (0x1a61dbe22e44158b, "1.3449551894627777e-181"),
    (0x923a736994e3bf91, "-7.317495976062606e-221"),
    (0x301850c5a38fd547, "5.249822308814304e-77"),
    (0x18f135d25f557203, "1.5450754142984396e-188"),
    (0xb64ce4228c38fb29, "-3.953625698224792e-47"),
    (0x907a70c31012f037, "-2.72491267476498e-229"),
    (0x9e7769b10f4205b4, "-6.505141861548772e-162"),
    (0x7f15052434b9b5df, "1.441484839555994e+304"),
    (0x881ed162ae2eb154, "-1.4583679262758548e-269"),
    (0xc6f877186d76b07e, "-7.939416668807721e+33"),
    (0x7731af10506bf2ef, "1.4255183989699612e+266"),
    (0xec66a78795e761d1, "-1.525315701232403e+214"),
    (0xbfedf645934be678, "-0.9363124730000001"),
    (0x3f0ede30649ee459, "5.88758963e-05"),
    (0x41a1be767908e0ca, "148847420.51734"),
    (0x408772332e8ef500, "750.2749911469"),
    (0x3f2c901d5dcdaa5d, "0.00021791800000000002"),
    (0x4355326c3ea85600, "2.386566e+16"),
    (0xc14819b1f03b14a9, "-3158883.876803"),
    (0xc3a99442424b4d30, "-9.215855e+17"),
    (0x4092260f6a1470d0, "1161.5150531"),
    (0x4256bc416640d333, "390590732547.3"),
    (0x3f0f21a249e8ed9a, "5.93784e-05"),
    (0x433f98b3b63eac98, "8893621902159000.0"),
    (0x435d28c4ca756000, "3.28304e+16"),
    (0x40792fbea3766aaa, "402.9840426088"),
    (0x3e9d13463b11a7c5, "4.332555888e-07"),
    (0x3fb68fab3c8dcd10, "0.08812971332899999"),
    (0x3ec29bf5472fc670, "2.218390869662e-06"),
    (0xbf77159c7d47c475, "-0.005635844504"),
    (0x411d18db09691a76, "476726.75919"),
    (0x3f15da69a5dd528e, "8.336324523601e-05"),
];

/// (text, CPython 3.11 repr): escapes, quotes, printable and non-printable code points of every plane.
const STRINGS: &[(&str, &str)] = &[
    ("", "''"),
    ("plain", "'plain'"),
    ("O'Brien", "\"O'Brien\""),
    ("say \"hi\"", "'say \"hi\"'"),
    ("both ' and \"", "'both \\' and \"'"),
    ("back\\slash", "'back\\\\slash'"),
    ("tab\u{9}here\u{a}new\u{d}ret", "'tab\\there\\nnew\\rret'"),
    ("\u{0}\u{1}\u{1f}\u{7f}", "'\\x00\\x01\\x1f\\x7f'"),
    ("\u{80}\u{9f}\u{a0}\u{ad}\u{e9}", "'\\x80\\x9f\\xa0\\xad\u{e9}'"),
    ("\u{200b}\u{2028}\u{2029}\u{3000}\u{feff}\u{ffff}", "'\\u200b\\u2028\\u2029\\u3000\\ufeff\\uffff'"),
    ("\u{1f600} emoji \u{e0001} tag \u{10ffff}", "'\u{1f600} emoji \\U000e0001 tag \\U0010ffff'"),
    (
        "\u{dc}n\u{ef}c\u{f8}d\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{5e2}\u{5d1}\u{5e8}\u{5d9}\u{5ea}",
        "'\u{dc}n\u{ef}c\u{f8}d\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{5e2}\u{5d1}\u{5e8}\u{5d9}\u{5ea}'",
    ),
    ("\u{378}\u{590}", "'\\u0378\\u0590'"),
    (
        "\u{e7569}\u{5e8b}\u{3030}\u{15715}\u{50a31}=\u{7bdf}\u{64012}\u{3bd}\u{ea27}\u{154}\u{23f45}\u{cd01}\u{8a5d}\u{2}\u{c03c}\u{65a0}\u{164}\u{68f}\u{59b}\u{5af8}\u{d6a56}\u{3ba6}\u{8a229}",
        "'\\U000e7569\u{5e8b}\u{3030}\\U00015715\\U00050a31=\u{7bdf}\\U00064012\u{3bd}\\uea27\u{154}\u{23f45}\u{cd01}\u{8a5d}\\x02\u{c03c}\u{65a0}\u{164}\u{68f}\u{59b}\u{5af8}\\U000d6a56\u{3ba6}\\U0008a229'",
    ),
    (
        "\u{4dd}\u{64e}\u{369}\u{543}\u{6adf1}\u{7f0}\u{f7aab}\u{5d9b9}\u{74eea}\u{5123b}\u{f70c5}\u{141}\u{13d0}\u{c881}\u{7db}\u{40b7}\u{12f}\u{2368}\u{721}\u{bcd16}\u{21a}\u{10b3b9}\u{11f6}\u{5b8}",
        "'\u{4dd}\u{64e}\u{369}\u{543}\\U0006adf1\u{7f0}\\U000f7aab\\U0005d9b9\\U00074eea\\U0005123b\\U000f70c5\u{141}\u{13d0}\u{c881}\u{7db}\u{40b7}\u{12f}\u{2368}\u{721}\\U000bcd16\u{21a}\\U0010b3b9\u{11f6}\u{5b8}'",
    ),
    (
        "\u{22714}\u{4fa}\u{bc4d1}\u{4253}\u{f251}\u{770c}\u{65f7}\u{2e697}\u{d51e3}\u{c6e1}\u{10992a}\u{9ed7}\u{75df}\u{82fc}\u{67b7d}\u{af5f}\u{cf3c5}\u{402}\u{706c7}\u{510}\u{14c5e}\u{106}\u{735}\u{c3dd}",
        "'\u{22714}\u{4fa}\\U000bc4d1\u{4253}\\uf251\u{770c}\u{65f7}\u{2e697}\\U000d51e3\u{c6e1}\\U0010992a\u{9ed7}\u{75df}\u{82fc}\\U00067b7d\u{af5f}\\U000cf3c5\u{402}\\U000706c7\u{510}\\U00014c5e\u{106}\u{735}\u{c3dd}'",
    ),
    (
        "\u{50b}\u{153df}\u{9e393}\u{4592}\u{309}\u{1808}\u{27eb7}\u{6610}\u{f1c42}\u{5bb2}\u{c97af}\u{d22ab}\u{4283}\u{c0ec4}\u{a726b}\u{347}\u{c7cb}\u{8615}\u{1303}\u{6be}\u{37e}\u{ab85}\u{fc339}\u{e0fbe}",
        "'\u{50b}\\U000153df\\U0009e393\u{4592}\u{309}\u{1808}\u{27eb7}\u{6610}\\U000f1c42\u{5bb2}\\U000c97af\\U000d22ab\u{4283}\\U000c0ec4\\U000a726b\u{347}\u{c7cb}\u{8615}\u{1303}\u{6be}\u{37e}\u{ab85}\\U000fc339\\U000e0fbe'",
    ),
    (
        "\u{10baa2}\u{c32ed}\u{4844d}\u{fecb}\u{1d4}\u{cd19}\u{21bda}\u{d3da}\u{3f0}\u{f3fc1}\u{379c}\u{4248c}]\u{60e}\u{5af}\u{1055c3}\u{653c}\u{d3a96}\u{6fcac}\u{771f0}\u{a1ba3}\u{50a}\u{18c}\u{169}",
        "'\\U0010baa2\\U000c32ed\\U0004844d\u{fecb}\u{1d4}\u{cd19}\u{21bda}\u{d3da}\u{3f0}\\U000f3fc1\u{379c}\\U0004248c]\u{60e}\u{5af}\\U001055c3\u{653c}\\U000d3a96\\U0006fcac\\U000771f0\\U000a1ba3\u{50a}\u{18c}\u{169}'",
    ),
    (
        "\u{6f4}\u{671}\u{3b170}\u{60c5}\u{132ac}\u{7b3}\u{1d6}\u{487}\u{27bb}\u{da56c}\u{6b904}\u{5f8}\u{d0df}\u{63e78}\u{2a4}\u{cf1be}\u{ae94}\u{1dc}\u{547}\u{67d}\u{577}+\u{45e}\u{5d2a}",
        "'\u{6f4}\u{671}\\U0003b170\u{60c5}\u{132ac}\\u07b3\u{1d6}\u{487}\u{27bb}\\U000da56c\\U0006b904\\u05f8\u{d0df}\\U00063e78\u{2a4}\\U000cf1be\u{ae94}\u{1dc}\u{547}\u{67d}\u{577}+\u{45e}\u{5d2a}'",
    ),
];
