//! The `finetp` command. Errors get context here (anyhow); the libraries return typed errors.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad input (flags, config, model shapes).

mod args;
mod bench_cmd;
mod host_memory;
mod launch;
mod plan_cmd;
mod run_cmd;
mod serve_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "finetp", version, about = "Fine-grained tensor parallelism for LLM inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the groups of each component and the per-rank weight memory they save.
    Plan(plan_cmd::PlanArgs),
    /// Generate text with fine-grained TP across data-parallel ranks.
    Run(run_cmd::RunArgs),
    /// Time each component's decode step sharded vs replicated, and the collectives alone.
    Bench(bench_cmd::BenchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (run's flags, plus --host/--port).
    Serve(serve_cmd::ServeArgs),
}

/// An error with the exit code it maps to.
pub enum Failure {
    /// Bad flags, config or model shapes (exit 2).
    Input(anyhow::Error),
    /// Anything else (exit 1).
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Runtime(e.into())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(a) => plan_cmd::run(&a),
        Command::Run(a) => run_cmd::run(&a),
        Command::Bench(a) => bench_cmd::run(&a),
        Command::Serve(a) => serve_cmd::serve(&a),
    };
    let code = match result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Input(e)) => {
            print_error(&e);
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            print_error(&e);
            ExitCode::from(1)
        }
    };
    finetp_engine::let_the_launcher_forward_output();
    code
}

/// `error: <the error and its causes>` on stderr in one write: processes of an MPI job share
/// the launcher's stderr, and a line written in pieces interleaves with theirs.
fn print_error(e: &anyhow::Error) {
    use std::io::Write;
    let line = format!("error: {}\n", render(e));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The error and its causes on one line, `context: cause: cause`, leaving out a cause whose
/// text the message already ends with (typed errors that quote their source in their own
/// message, as `rank 3: {source}` does, would otherwise print it twice).
fn render(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
