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
