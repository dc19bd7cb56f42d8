//! finetp turns text into exactly the ids HF transformers does for the default model (SmolLM2
//! GGUF, which transformers reads itself): raw prompts with the BOS policy the file declares
//! (`add_bos_token = false`: none), and conversations through the model's own chat template
//! (its default system prompt included), special tokens parsed as specials. The ids are HF's,
//! made by `tools/gen_goldens.py tokenization` and committed.
//!
//! Needs the default model: without it the cases are listed as ignored with the reason.

use finetp_loader::{Checkpoint, Message};
use finetp_testkit::harness::{self, Case, Need};

const GOLDEN: &str = include_str!("../../finetp-loader/tests/data/smollm2_tokenization.json");

fn golden() -> serde_json::Value {
    serde_json::from_str(GOLDEN).expect("the committed golden is JSON")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).map(|x| x as u32).collect()).unwrap_or_default()
}

fn open(path: &std::path::Path) -> Result<Checkpoint, String> {
    Checkpoint::open(path).map_err(|e| e.to_string())
}

fn raw_prompts_tokenize_as_hf(path: std::path::PathBuf) -> Result<(), String> {
    let ckpt = open(&path)?;
    let tok = ckpt.tokenizer.as_ref().ok_or("no tokenizer")?;
    for case in golden()["raw"].as_array().ok_or("no raw cases")? {
        let text = case["text"].as_str().ok_or("no text")?;
        let got = ckpt.prompt.encode_raw(tok, text).map_err(|e| e.to_string())?;
        if got != ids(&case["ids"]) {
            return Err(format!("{text:?}: finetp {got:?}, HF {:?}", ids(&case["ids"])));
        }
    }
    Ok(())
}

fn conversations_tokenize_as_hf_apply_chat_template(path: std::path::PathBuf) -> Result<(), String> {
    let ckpt = open(&path)?;
    let tok = ckpt.tokenizer.as_ref().ok_or("no tokenizer")?;
    for case in golden()["chat"].as_array().ok_or("no chat cases")? {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).map_err(|e| e.to_string())?;
        let got = ckpt.prompt.encode_chat(tok, &messages).map_err(|e| e.to_string())?;
        if got != ids(&case["ids"]) {
            let text = ckpt.prompt.render_chat(&messages, true).unwrap_or_default();
            return Err(format!("{messages:?}:\nfinetp {got:?}\nHF     {:?}\nrendered {text:?}", ids(&case["ids"])));
        }
    }
    Ok(())
}

fn main() {
    let (model, path) = Need::default_model();
    let p = path.unwrap_or_default();
    let q = p.clone();
    harness::run(vec![
        Case::new("raw_prompts_tokenize_as_hf", std::slice::from_ref(&model), move || raw_prompts_tokenize_as_hf(p)),
        Case::new("conversations_tokenize_as_hf_apply_chat_template", &[model], move || conversations_tokenize_as_hf_apply_chat_template(q)),
    ]);
}
