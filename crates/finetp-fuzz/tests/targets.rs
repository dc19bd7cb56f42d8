//! The four parsers as bolero targets. Under `cargo test` each replays its committed corpus
//! (`tests/__fuzz__/<name>/corpus`, and any `crashes/` kept as regression cases), then
//! random inputs; under `cargo bolero test -p finetp-fuzz <name>` libFuzzer grows the corpus
//! guided by coverage (`ci/fuzz.sh`, a bounded time each).

#[test]
fn gguf() {
    finetp_fuzz::bolero::check!().for_each(finetp_fuzz::gguf);
}

#[test]
fn safetensors() {
    finetp_fuzz::bolero::check!().for_each(finetp_fuzz::safetensors);
}

#[test]
fn config_json() {
    finetp_fuzz::bolero::check!().for_each(finetp_fuzz::config_json);
}

#[test]
fn additional_config() {
    finetp_fuzz::bolero::check!().for_each(finetp_fuzz::additional_config);
}
