//! `cess-bench`: runs a suite and prints ours beside the baseline, with the ratio.
//!
//! `cargo run --release -p cess-bench -- <suite> [--quick] [--json FILE] [--target PATH] [--case NAME]`

#![forbid(unsafe_code)]

mod engine;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: cess-bench <engine|all> [--quick] [--json FILE] [--target PATH] [--case NAME]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut suite = None;
    let mut options = report::Options::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--json" => options.json = args.next().map(PathBuf::from),
            "--target" => options.target = args.next().map(PathBuf::from),
            "--case" => options.case = args.next(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if suite.is_none() && !s.starts_with('-') => suite = Some(s.to_string()),
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(suite) = suite else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match suite.as_str() {
        "engine" | "all" => engine::run(&options),
        other => Err(format!(
            "unknown suite {other}: this build has `engine` (the other suites arrive with their crates)"
        )),
    };
    match result.and_then(|cases| report::emit("engine", &cases, &options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cess-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
