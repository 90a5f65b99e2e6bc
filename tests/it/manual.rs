//! What netstrap documents about itself on a host: `netstrap completions <shell>` (the bash
//! script, sourced by a real bash, completes like an operator's shell would), `netstrap man`
//! (rendered by the real `man -l`), and `--help`, which lists every variable name and says
//! where their meanings are.

use crate::support;

use std::process::{Command, Output, Stdio};

use netstrap::config::variables::{EDGELAKE, NETSTRAP};

fn netstrap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(args)
        .env_clear()
        // A bad configuration must not stop the documentation commands.
        .env("TCP_BIND", "maybe")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(args: &[&str]) -> String {
    let out = netstrap(args);
    assert!(out.status.success(), "netstrap {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// What bash offers for the command line `words` (the last word is the one being completed),
/// with the completion script sourced as bash-completion would.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         _netstrap netstrap '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words_q.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words.get(words.len().wrapping_sub(2)).copied().unwrap_or("netstrap"),
    );
    let out = Command::new("bash").args(["--norc", "--noprofile", "-c", &program]).output().unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

#[test]
fn bash_completes_subcommands_and_their_arguments() {
    if !have("bash") {
        return support::prereq::missing("bash is not installed (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("netstrap.bash");
    std::fs::write(&script, stdout(&["completions", "bash"])).unwrap();
    assert_eq!(bash_complete(&script, &["netstrap", "d"]), ["discover"]);
    let top = bash_complete(&script, &["netstrap", ""]);
    for want in ["run", "probe", "peers", "policy", "discover", "completions", "man", "--config", "--set"] {
        assert!(top.contains(&want.to_string()), "{want} missing in {top:?}");
    }
    assert_eq!(bash_complete(&script, &["netstrap", "probe", "r"]), ["ready"]);
    let shells = bash_complete(&script, &["netstrap", "completions", ""]);
    for want in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&want.to_string()), "{want} missing in {shells:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    for (shell, marker) in [("zsh", "#compdef netstrap"), ("fish", "complete -c netstrap")] {
        let script = stdout(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["run", "probe", "peers", "policy", "discover", "completions", "man"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
    }
    let out = netstrap(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "names the bad value and what is accepted: {err}");
}

#[test]
fn man_page_renders_with_man_and_documents_every_variable() {
    let page = stdout(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH netstrap 1"),
        "roff: {}",
        &page[..200.min(page.len())]
    );
    if !have("man") {
        return support::prereq::missing("man is not installed (.ci/run installs man-db)");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netstrap.1");
    std::fs::write(&file, &page).unwrap();
    let out = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&file)
        .env("MANWIDTH", "200")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Bold/underline overstrikes, if man's pager settings leave any.
    let text = text.replace('\u{8}', "");
    for section in
        ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS", "ENVIRONMENT", "FILES", "SEE ALSO"]
    {
        assert!(text.lines().any(|l| l.trim() == section), "section {section} missing:\n{text}");
    }
    let missing: Vec<&str> =
        EDGELAKE.iter().chain(NETSTRAP).map(|v| v.name).filter(|n| !text.contains(n)).collect();
    assert!(missing.is_empty(), "variables missing in the man page: {missing:?}");
    assert!(text.contains("NETSTRAP_STATE_DIR") && text.contains("./netstrap-state"), "defaults shown");
    assert!(text.contains("README.md"), "points to the README");
}

#[test]
fn help_lists_every_variable_and_points_to_the_readme() {
    let long = stdout(&["--help"]);
    let missing: Vec<&str> = EDGELAKE
        .iter()
        .chain(NETSTRAP)
        .map(|v| v.name)
        .filter(|n| !long.split_whitespace().any(|w| w == *n))
        .collect();
    assert!(missing.is_empty(), "--help lacks {missing:?}:\n{long}");
    assert!(long.trim_end().ends_with("in the source tree."), "ends with the README pointer:\n{long}");
    assert!(long.contains("README.md") && long.contains("Configuration reference"), "{long}");
    let short = stdout(&["-h"]);
    assert!(short.contains("netstrap --help") && short.contains("README.md"), "{short}");
    assert!(short.lines().count() < 30, "-h stays short:\n{short}");
}
