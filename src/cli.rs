//! The command line (DESIGN.md §6).
//!
//! (being written: `discover` lands with the connection table)

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
