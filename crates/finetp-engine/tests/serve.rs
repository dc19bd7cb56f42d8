//! The online front end on a small random Llama: requests submitted while others run,
//! cancelled, sampled with penalties and asked for log-probabilities, each checked against the
//! same request served alone or unsharded.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use finetp_backend_cpu::CpuBackend;
use finetp_core::config::{FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;
use finetp_engine::{
    EngineConfig, EngineError, Event, EventSink, ExecMode, FinishReason, Hub, Launcher, Penalties, Rank, Request, Sampling, TokenLogprob, generate, serve,
};

fn config() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type":"llama","vocab_size":97,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false}"#,
    )
    .unwrap()
}

struct Chan(Mutex<mpsc::Sender<Event>>);

impl EventSink for Chan {
    fn send(&self, e: Event) {
        let _ = self.0.lock().unwrap().send(e);
    }
}

fn request(id: usize, len: usize, max_tokens: usize) -> Request {
    Request { id, prompt: (0..len as u32).map(|t| (t * 11 + id as u32 * 5) % 97).collect(), max_tokens, ..Request::default() }
}

/// What one request produced, read off its events.
#[derive(Debug, Default, Clone)]
struct Got {
    tokens: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    prompt_logprobs: Vec<Option<TokenLogprob>>,
    finish: Option<FinishReason>,
}

fn collect(rx: &mpsc::Receiver<Event>) -> Got {
    let mut g = Got::default();
    while let Ok(e) = rx.recv_timeout(Duration::from_secs(30)) {
        match e {
            Event::Token { token, logprob } => {
                g.tokens.push(token);
                g.logprobs.extend(logprob);
            }
            Event::PromptLogprobs(p) => g.prompt_logprobs = p,
            Event::Finished { reason, .. } => {
                g.finish = Some(reason);
                break;
            }
        }
    }
    g
}

fn plan(dp: usize, fg: FinegrainedTpConfig) -> Plan {
    Plan::new(&ParallelConfig::new(dp, 1, 1, false, fg).unwrap())
}

fn serve_cfg(mode: ExecMode, seqs: usize) -> EngineConfig {
    EngineConfig { max_num_seqs: Some(seqs), kv_blocks: Some(64), ..EngineConfig::new(mode, 64) }
}

/// Runs a server on `plan`; `client` submits and reads, then the hub is closed.
fn with_server<T: Send>(plan: &Plan, cfg: &EngineConfig, client: impl FnOnce(&Hub) -> T + Send) -> T {
    let (mc, w) = (config(), Arc::new(InMemoryWeights::random(&finetp_models::tensor_shapes(&config()), 12345, 0.3)));
    let hub = Hub::new(plan.parallel.data_parallel_size, 1, 64);
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            serve(&Launcher::threads(Duration::from_secs(20)), plan, cfg, &hub, |r: &Rank<CpuBackend>| {
                finetp_models::load(&r.be, &mc, &*w, &r.groups).map_err(|source| EngineError::Model { rank: r.rank, source })
            })
        });
        // Closed however the client ends (a failed assertion included), so the server ends too.
        struct CloseOnDrop<'a>(&'a Hub);
        impl Drop for CloseOnDrop<'_> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let closing = CloseOnDrop(&hub);
        let out = client(&hub);
        drop(closing);
        server.join().unwrap().expect("the server ends cleanly once closed");
        out
    })
}

fn submit(hub: &Hub, r: Request) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    hub.submit(r, Arc::new(Chan(Mutex::new(tx)))).unwrap();
    rx
}

/// The request served alone, as a batch of one.
fn alone(r: &Request) -> Vec<u32> {
    let (mc, w) = (config(), InMemoryWeights::random(&finetp_models::tensor_shapes(&config()), 12345, 0.3));
    let r = Request { id: 0, ..r.clone() };
    let rep = generate(&Launcher::threads(Duration::from_secs(20)), &plan(1, FinegrainedTpConfig::default()), &EngineConfig::new(ExecMode::Eager, 64), &[r], |rk: &Rank<CpuBackend>| {
        finetp_models::load(&rk.be, &mc, &w, &rk.groups).map_err(|source| EngineError::Model { rank: rk.rank, source })
    })
    .unwrap();
    rep.outputs[0].tokens.clone()
}

#[test]
fn requests_joining_a_running_batch_get_the_tokens_they_get_alone() {
    let reqs: Vec<Request> = (0..7).map(|i| request(i, 3 + i * 3, 6 + i % 4)).collect();
    let want: Vec<Vec<u32>> = reqs.iter().map(alone).collect();
    for mode in [ExecMode::Eager, ExecMode::Graph] {
        let p = plan(2, FinegrainedTpConfig { embedding: Some(2), lm_head: Some(2), o_proj: Some(2), mlp: Some(2) });
        // At most 2 sequences per rank: later requests wait, then take freed slots and blocks.
        let got = with_server(&p, &serve_cfg(mode, 2), |hub| {
            let mut rxs = Vec::new();
            for r in &reqs {
                rxs.push(submit(hub, r.clone()));
                std::thread::sleep(Duration::from_millis(3));
            }
            rxs.iter().map(collect).collect::<Vec<_>>()
        });
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.finish, Some(FinishReason::Length), "{mode:?} request {i}");
            assert_eq!(g.tokens, want[i], "{mode:?} request {i}: served among others it must equal itself alone");
        }
    }
}

#[test]
fn a_cancelled_request_frees_its_slot_for_the_next() {
    let p = plan(1, FinegrainedTpConfig::default());
    // A request far longer than the cancellation takes to arrive (the model is tiny and fast).
    let cfg = EngineConfig { kv_blocks: Some(256), ..EngineConfig { max_seq_len: 4096, ..serve_cfg(ExecMode::Eager, 1) } };
    with_server(&p, &cfg, |hub| {
        let long = submit(hub, request(1, 4, 4000));
        // Its first token means it runs, holding the only slot.
        assert!(matches!(long.recv_timeout(Duration::from_secs(30)).unwrap(), Event::Token { .. }));
        hub.cancel(1);
        let mut last = None;
        while let Ok(e) = long.recv_timeout(Duration::from_secs(30)) {
            if let Event::Finished { reason, completion_tokens, .. } = e {
                last = Some((reason, completion_tokens));
                break;
            }
        }
        let (reason, n) = last.expect("the cancelled request finishes");
        assert_eq!(reason, FinishReason::Cancelled);
        assert!(n < 4000, "cancelled after {n} of 4000 tokens");
        let next = collect(&submit(hub, request(2, 5, 4)));
        assert_eq!(next.tokens, alone(&request(2, 5, 4)));
        assert_eq!(hub.stats().running, [0]);
        assert_eq!(hub.stats().waiting, 0);
    });
}

#[test]
fn log_probabilities_and_penalties_under_lm_head_tp_equal_the_unsharded_run() {
    let mut r = request(3, 9, 8);
    r.logprobs = Some(3);
    r.prompt_logprobs = Some(2);
    r.penalties = Penalties { frequency: 0.8, presence: 0.6 };
    r.sampling = Sampling { temperature: 0.9, top_p: 0.95, top_k: 0, seed: 5 };
    r.sample_stream = Some(0);
    let run = |p: &Plan| with_server(p, &serve_cfg(ExecMode::Graph, 4), |hub| collect(&submit(hub, r.clone())));
    let unsharded = run(&plan(1, FinegrainedTpConfig::default()));
    let sharded = run(&plan(4, FinegrainedTpConfig { lm_head: Some(4), embedding: Some(2), ..Default::default() }));
    assert_eq!(sharded.tokens, unsharded.tokens, "penalties and sampling under lm_head TP");
    assert_eq!(unsharded.logprobs.len(), 8);
    assert_eq!(unsharded.prompt_logprobs.len(), 9);
    assert!(unsharded.prompt_logprobs[0].is_none() && unsharded.prompt_logprobs[1..].iter().all(Option::is_some));
    let close = |a: &TokenLogprob, b: &TokenLogprob| {
        a.token == b.token
            && (a.logprob - b.logprob).abs() < 1e-5
            && a.top.len() == b.top.len()
            && a.top.iter().zip(&b.top).all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() < 1e-5)
    };
    for (a, b) in sharded.logprobs.iter().zip(&unsharded.logprobs) {
        assert!(close(a, b), "{a:?} vs {b:?}");
        assert_eq!(a.top.len(), 3);
    }
    for (a, b) in sharded.prompt_logprobs.iter().flatten().zip(unsharded.prompt_logprobs.iter().flatten()) {
        assert!(close(a, b), "prompt {a:?} vs {b:?}");
    }
    // The penalties change what is sampled (the test would pass vacuously otherwise), and the
    // same seed and stream draw the same tokens again.
    let plain = with_server(&plan(1, FinegrainedTpConfig::default()), &serve_cfg(ExecMode::Eager, 4), |hub| {
        collect(&submit(hub, Request { penalties: Penalties::default(), logprobs: None, prompt_logprobs: None, ..r.clone() }))
    });
    assert_ne!(plain.tokens, unsharded.tokens, "the penalties must matter on this request");
    let again = with_server(&plan(1, FinegrainedTpConfig::default()), &serve_cfg(ExecMode::Eager, 4), |hub| collect(&submit(hub, Request { id: 77, ..r.clone() })));
    assert_eq!(again.tokens, unsharded.tokens, "the same seed and stream under another id");
}
