//! `cess-bench`: runs a suite and prints ours beside the baseline, with the ratio.
//!
//! `cargo run --release -p cess-bench -- <suite> [--quick] [--json FILE] [--target PATH] [--case NAME]`

#![forbid(unsafe_code)]

mod codec;
mod consensus;
mod e2e;
mod engine;
mod hostile;
mod kernels;
mod pois;
mod proofs;
mod report;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cess-bench <engine|codec|transport|proofs|kernels|all> [--quick] [--json FILE] [--target PATH] [--case NAME]";

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("attack") {
        // The hostile peer of the `honest-*-under-*` cases, run as a child process.
        return match hostile::attack_main(&all[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("attack: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut args = all.into_iter();
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
    let suites: &[&str] = match suite.as_str() {
        "all" => &[
            "engine",
            "codec",
            "transport",
            "proofs",
            "kernels",
            "consensus",
            "e2e",
        ],
        "consensus" => &["consensus"],
        "e2e" => &["e2e"],
        "proofs" => &["proofs"],
        "kernels" => &["kernels"],
        "transport" => &["transport"],
        "engine" => &["engine"],
        "codec" => &["codec"],
        other => {
            eprintln!(
                "unknown suite {other}: this build has `engine`, `codec`, `transport`, `proofs`, `kernels`, \
                 `consensus` and `e2e`"
            );
            return ExitCode::from(2);
        }
    };
    for (i, name) in suites.iter().enumerate() {
        let result = match *name {
            "engine" => engine::run(&options),
            "transport" => transport::run(&options),
            "proofs" => proofs::run(&options),
            "kernels" => kernels::run(&options),
            "consensus" => consensus::run(&options),
            "e2e" => e2e::run(&options),
            _ => codec::run(&options),
        };
        if let Err(e) = result.and_then(|cases| report::emit(name, &cases, &options, i > 0)) {
            eprintln!("cess-bench: {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
