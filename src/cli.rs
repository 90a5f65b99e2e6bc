//! The command line (DESIGN.md §6): `netstrap [--config FILE] [--set KEY=VALUE]... <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Layers, Origin, Settings, read_toml_file};

#[derive(Parser, Debug)]
#[command(name = "netstrap", version, about = "A stable network identity for EdgeLake/AnyLog nodes")]
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
    /// Show what would be bound and advertised, and why.
    Discover {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
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
    let settings = match layers(&cli).and_then(|l| Settings::parse(&l)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netstrap: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netstrap: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None | Some(Command::Discover { json: false }) => runtime.block_on(discover(settings, false)),
        Some(Command::Discover { json: true }) => runtime.block_on(discover(settings, true)),
    }
}

async fn discover(settings: Settings, json: bool) -> ExitCode {
    let discovery = crate::discover::discover(&settings).await;
    let table = crate::table::ConnectionTable::plan(&settings, &discovery);
    if json {
        let doc = serde_json::json!({ "discovery": discovery, "table": table });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", crate::report::render(&settings, &discovery, &table));
    }
    if discovery.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for p in &discovery.problems {
            eprintln!("netstrap: cannot determine {p}");
        }
        ExitCode::FAILURE
    }
}
