//! The command line (README, "Commands"): `netstrap [--config FILE] [--set KEY=VALUE]... <command>`.

pub mod manual;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Layers, Origin, Settings, read_toml_file};

#[derive(Parser, Debug)]
#[command(
    name = "netstrap",
    version,
    about = "A stable network identity for EdgeLake/AnyLog nodes",
    after_help = crate::cli::manual::after_help(),
    after_long_help = crate::cli::manual::after_long_help()
)]
pub struct Cli {
    /// TOML file of KEY = value pairs (environment variable names); below the environment.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set a variable, above the environment (repeatable), e.g. --set NODE_TYPE=operator.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub set: Vec<(String, String)>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Discover, bind the listeners, advertise, and serve until SIGTERM (the default).
    Run,
    /// Exit 0 when this node's rest plane answers /livez or /readyz with 200 (for exec
    /// probes and Docker HEALTHCHECK).
    Probe {
        #[arg(value_enum)]
        kind: crate::probe::ProbeKind,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
    /// Read the registry and dial every node's TCP, REST and broker endpoints.
    Peers {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for each connection.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print the node and config policies that would be declared.
    Policy {
        /// Print JSON only.
        #[arg(long)]
        json: bool,
    },
    /// Show what would be bound and advertised, and why.
    Discover {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for SHELL, e.g. `netstrap completions bash >
    /// /usr/share/bash-completion/completions/netstrap`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `netstrap man | man -l -`.
    Man,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Build the configuration layers from the flags, the process environment and the file.
pub fn layers(cli: &Cli) -> Result<Layers, crate::config::ConfigErrors> {
    let mut layers = Layers::new().push(Origin::Flag, cli.set.clone()).push(Origin::Env, std::env::vars());
    if let Some(path) = &cli.config {
        let pairs = read_toml_file(path).map_err(|e| crate::config::ConfigErrors(vec![e]))?;
        layers = layers.push(Origin::File(path.clone()), pairs);
    }
    Ok(layers)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = crate::cli::manual::run(&cli) {
        return code;
    }
    let settings = match layers(&cli).and_then(|l| Settings::parse(&l)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netstrap: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&settings);
    match cli.command {
        None | Some(Command::Run) => return crate::lifecycle::run(settings),
        Some(Command::Probe { kind, timeout }) => return probe(&settings, kind, timeout),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netstrap: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Discover { json }) => runtime.block_on(discover(settings, json)),
        Some(Command::Policy { json }) => runtime.block_on(policy(settings, json)),
        Some(Command::Peers { json, timeout }) => runtime.block_on(peers(settings, json, timeout)),
        _ => ExitCode::SUCCESS,
    }
}

fn probe(settings: &Settings, kind: crate::probe::ProbeKind, timeout: u64) -> ExitCode {
    // Only the rest plane's address is needed: no discovery (probes must be fast).
    let bind_ip = if settings.rest.listen.bind.value {
        let facts = crate::discover::MachineFacts {
            interfaces: crate::discover::local_ip::interfaces(),
            route_ips: crate::discover::local_ip::default_route_ips(),
            ..Default::default()
        };
        crate::discover::local_ip::local_ip(settings, &facts.interfaces, &facts.route_ips)
            .ok()
            .map(|f| f.value)
    } else {
        None
    };
    let port = settings.rest.listen.port.as_ref().map(|p| p.value).unwrap_or(0);
    let addr = crate::probe::target(bind_ip, port);
    match crate::probe::probe(addr, kind, std::time::Duration::from_secs(timeout.max(1))) {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok((code, body)) => {
            eprintln!("netstrap probe: {addr} answered {code}\n{body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("netstrap probe: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn policy(settings: Settings, json: bool) -> ExitCode {
    let crate::lifecycle::Plan { discovery, table } = crate::lifecycle::Plan::of(&settings).await;
    let cluster = crate::policy::render::cluster(&settings).ok().flatten().map(|c| c.offline_id());
    let node = match crate::policy::render::node_policy(&settings, &discovery, &table, cluster.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("netstrap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = crate::policy::render::config_policy(&settings);
    let id = |p: &serde_json::Value| crate::policy::id::policy_id(p).unwrap_or_default();
    if json {
        let doc = serde_json::json!({"node": node, "node_id": id(&node), "config": config, "config_id": id(&config)});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("# node policy (id {})", id(&node));
        println!("{}", serde_json::to_string_pretty(&node).unwrap_or_default());
        println!("# config policy (id {})", id(&config));
        println!("{}", serde_json::to_string_pretty(&config).unwrap_or_default());
    }
    if discovery.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn discover(settings: Settings, json: bool) -> ExitCode {
    let crate::lifecycle::Plan { discovery, table } = crate::lifecycle::Plan::of(&settings).await;
    if json {
        let doc = serde_json::json!({ "discovery": discovery, "table": table });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", crate::report::render(&settings, &discovery, &table));
    }
    // As `netstrap policy`: an operator without its cluster has no policy to declare.
    let no_cluster = crate::policy::render::missing_cluster(&settings);
    if let Some(e) = &no_cluster {
        eprintln!("netstrap: {e}");
    }
    if discovery.problems.is_empty() && no_cluster.is_none() {
        ExitCode::SUCCESS
    } else {
        for p in &discovery.problems {
            eprintln!("netstrap: cannot determine {p}");
        }
        ExitCode::FAILURE
    }
}

async fn peers(settings: Settings, json: bool, timeout: u64) -> ExitCode {
    let registry = match crate::registry::Registry::open(
        &settings.ledger,
        &settings.ledger_conn.value,
        crate::registry::REQUEST_TIMEOUT,
    ) {
        crate::registry::Registry::None => {
            eprintln!("netstrap peers: no registry configured: set NETSTRAP_LEDGER");
            return ExitCode::from(2);
        }
        r => r,
    };
    let nodes = match registry.nodes().await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("netstrap peers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reports = crate::peers::check(&nodes, std::time::Duration::from_secs(timeout.max(1))).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
    } else {
        print!("{}", crate::peers::render(&reports));
    }
    if reports.iter().all(crate::peers::PeerReport::all_ok) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
