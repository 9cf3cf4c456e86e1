//! `kvant`: inspect, run and benchmark ONNX models with kvant's runtime.

mod bench;
mod error;
mod inputs;
mod inspect;
mod run;

use clap::{Parser, Subcommand};
use error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kvant",
    version,
    about = "Quantize, run and measure ONNX models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's opsets, inputs, outputs, operators and parameters.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        /// Also list every node (name, operator, inputs, outputs).
        #[arg(long)]
        nodes: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a model on inputs from an .npz file and print or save the outputs.
    Run {
        /// The ONNX model.
        model: PathBuf,
        /// Inputs: an .npz keyed by input name (or an .npy for a one-input model).
        #[arg(long, short)]
        input: PathBuf,
        /// Where to write the outputs (.npz keyed by output name).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Measure a model's latency and peak memory.
    Bench {
        /// The ONNX model.
        model: PathBuf,
        /// Inputs (.npz); by default random inputs of the declared shapes.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Size of a symbolic dimension for generated inputs, as NAME=VALUE (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE")]
        dims: Vec<String>,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Untimed warm-up runs.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also print where the time goes: total time per operator type and the slowest nodes.
        #[arg(long)]
        profile: bool,
    },
    /// List the operators kvant's runtime supports.
    Ops,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), CliError> = match cli.command {
        Command::Inspect { model, nodes, json } => inspect::inspect(&model, nodes, json),
        Command::Run {
            model,
            input,
            output,
            threads,
        } => run::run(&model, &input, output.as_deref(), threads),
        Command::Bench {
            model,
            input,
            dims,
            threads,
            iters,
            warmup,
            json,
            profile,
        } => bench::bench(&bench::BenchArgs {
            model,
            input,
            dims,
            threads,
            iters,
            warmup,
            json,
            profile,
        }),
        Command::Ops => {
            for (domain, op) in kvant_runtime::ops::registry().operators() {
                if domain.is_empty() {
                    println!("{op}");
                } else {
                    println!("{domain}.{op}");
                }
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
