//! What the command line documents about itself, generated from its clap definition
//! ([`crate::cli::Cli`]) and the variable reference ([`crate::config::variables`]):
//! `netstrap completions <shell>`, `netstrap man`, and the end of `--help`.
//!
//! Generated at run time by the binary itself rather than at build time: what a packager
//! installs always matches the binary (`netstrap completions bash > .../netstrap`), and the
//! build needs no build script. README, "Shell completions and the man page".

use std::io::Write as _;
use std::process::ExitCode;

use clap::CommandFactory as _;
use clap_mangen::roff::{Roff, bold, roman};

use super::{Cli, Command};
use crate::config::variables::{EDGELAKE, NETSTRAP, Variable};

/// Where the reference lives, for `--help` and the man page.
pub const README: &str =
    "README.md (sections \"Configuration reference\" and \"Run on a host\"), in the source tree";

/// Run `completions` or `man`, which need no configuration; `None` for every other command.
pub fn run(cli: &Cli) -> Option<ExitCode> {
    let out = match cli.command {
        Some(Command::Completions { shell }) => completions(shell),
        Some(Command::Man) => man(),
        _ => return None,
    };
    Some(match out.and_then(|bytes| std::io::stdout().lock().write_all(&bytes)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netstrap: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    })
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "netstrap", &mut out);
    Ok(out)
}

/// The man page (roff): clap's sections, then ENVIRONMENT (every variable, its default and
/// meaning), FILES and SEE ALSO.
pub fn man() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    page.render_subcommands_section(&mut out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "Configuration is read from the environment (above a --config file, below --set). \
         EdgeLake's own variables keep EdgeLake's names, meanings and defaults.",
    )]);
    for v in EDGELAKE.iter().chain(NETSTRAP) {
        roff.control("TP", []);
        roff.text([bold(v.name)]);
        roff.text([roman(format!("{} (default: {})", v.meaning, v.default))]);
    }
    roff.control("SH", ["FILES"]);
    roff.text([roman(
        "NETSTRAP_STATE_DIR/netstrap.env, netstrap.al, node_policy.json, config_policy.json, \
         network.json: what netstrap writes for the node. packaging/systemd/: the systemd units.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(README)]);
    roff.to_writer(&mut out)?;
    page.render_version_section(&mut out)?;
    Ok(out)
}

/// The end of `-h`: where the variables are.
pub fn after_help() -> String {
    format!(
        "Configuration: environment variables ({} of them; `netstrap --help` lists their names, \
         `netstrap man` their defaults and meanings). Reference: {README}.",
        EDGELAKE.len() + NETSTRAP.len()
    )
}

/// The end of `--help`: every variable name, then where the reference is.
pub fn after_long_help() -> String {
    let names = |vars: &[Variable]| wrap(vars.iter().map(|v| v.name), 90);
    format!(
        "Configuration: environment variables (also `--set KEY=VALUE` and `--config FILE`).\n\n\
         EdgeLake's (same names, meanings and defaults):\n{}\n\nnetstrap's own:\n{}\n\n\
         Defaults and meanings: `netstrap man`, and {README}.",
        names(EDGELAKE),
        names(NETSTRAP)
    )
}

/// Names joined by spaces, in lines of at most `width` characters, indented by two.
fn wrap<'a>(names: impl Iterator<Item = &'a str>, width: usize) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for name in names {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + name.len() > width {
            lines.push(name.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(name);
        }
    }
    lines.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}
