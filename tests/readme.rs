//! The README is the operator's reference: it must list every variable netstrap reads and
//! keep exactly the two commands a newcomer needs.

use netstrap::config::variables::{EDGELAKE, NETSTRAP};

const README: &str = include_str!("../README.md");

#[test]
fn readme_documents_every_variable() {
    let missing: Vec<&str> = EDGELAKE
        .iter()
        .chain(NETSTRAP)
        .map(|v| v.name)
        .filter(|n| !README.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "README.md lacks: {missing:?}");
}

#[test]
fn readme_has_one_run_and_one_test_command() {
    let run = README.lines().filter(|l| l.starts_with("$ ") && l.ends_with("# run")).count();
    let test = README.lines().filter(|l| l.starts_with("$ ") && l.ends_with("# test")).count();
    assert_eq!((run, test), (1, 1));
}

/// The README's variable tables give each default as netstrap has it (`config::variables`,
/// which `--help` and `discover` print too): a default changed in one place only is caught.
#[test]
fn readme_defaults_are_netstraps() {
    let row_default = |name: &str| {
        let prefix = format!("| `{name}` | ");
        README.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|rest| rest.split(" | ").next())
    };
    let drifted: Vec<String> = EDGELAKE
        .iter()
        .chain(NETSTRAP)
        .filter(|v| row_default(v.name).map(|d| d.replace('`', "")) != Some(v.default.replace('`', "")))
        .map(|v| format!("{}: netstrap says {:?}, README {:?}", v.name, v.default, row_default(v.name)))
        .collect();
    assert!(drifted.is_empty(), "README defaults differ:\n{}", drifted.join("\n"));
}
