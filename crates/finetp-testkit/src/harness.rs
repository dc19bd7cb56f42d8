//! A test runner for cases that need something a machine may lack — a device, the default
//! model — on libtest-mimic (in a `harness = false` test target).
//!
//! A case whose need is absent is listed by the runner as **ignored**, its kind naming what is
//! missing, and the full reason is printed once per test binary; it is never counted as
//! passed (run with `--ignored`, it fails with the reason). With the need's
//! `FINETP_REQUIRE_<X>=1` set, absence is a failure of every case that needs it: CI sets the
//! switch wherever the thing exists.

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};

/// Something cases may need, probed once per test binary.
#[derive(Debug, Clone)]
pub struct Need {
    /// What it is, for messages: `"wgpu device"`, `"default model"`.
    pub what: String,
    /// The environment switch that makes absence a failure.
    pub require_env: String,
    /// Why it is absent (`None`: present).
    pub absent: Option<String>,
}

impl Need {
    pub fn present(what: &str, require_env: &str) -> Arc<Need> {
        Arc::new(Need { what: what.into(), require_env: require_env.into(), absent: None })
    }

    pub fn absent(what: &str, require_env: &str, reason: String) -> Arc<Need> {
        Arc::new(Need { what: what.into(), require_env: require_env.into(), absent: Some(reason) })
    }

    /// Whether the switch is set (`=1`).
    pub fn required(&self) -> bool {
        std::env::var(&self.require_env).is_ok_and(|v| v == "1")
    }

    /// The default model (SmolLM2, fetched once with pip): absent when
    /// `FINETP_SKIP_MODEL_TESTS` is set or the fetch fails; required by `FINETP_REQUIRE_MODEL=1`.
    pub fn default_model() -> (Arc<Need>, Option<std::path::PathBuf>) {
        const WHAT: &str = "default model";
        const ENV: &str = "FINETP_REQUIRE_MODEL";
        if std::env::var_os("FINETP_SKIP_MODEL_TESTS").is_some() {
            return (Need::absent(WHAT, ENV, "FINETP_SKIP_MODEL_TESTS is set".into()), None);
        }
        match finetp_loader::default_model() {
            Ok(p) => (Need::present(WHAT, ENV), Some(p)),
            Err(e) => (Need::absent(WHAT, ENV, e.to_string()), None),
        }
    }
}

/// One case: its name, what it needs, and its body (an `Err` or a panic fails it).
pub struct Case {
    pub name: String,
    pub needs: Vec<Arc<Need>>,
    pub body: Box<dyn FnOnce() -> Result<(), String> + Send>,
}

impl Case {
    pub fn new(name: impl Into<String>, needs: &[Arc<Need>], body: impl FnOnce() -> Result<(), String> + Send + 'static) -> Self {
        Case { name: name.into(), needs: needs.to_vec(), body: Box::new(body) }
    }
}

/// Runs `cases` as the test binary's trials and exits with the runner's status.
pub fn run(cases: Vec<Case>) -> ! {
    let args = Arguments::from_args();
    let mut noted: Vec<String> = Vec::new();
    let trials = cases
        .into_iter()
        .map(|c| {
            let missing: Vec<Arc<Need>> = c.needs.iter().filter(|n| n.absent.is_some()).cloned().collect();
            for n in &missing {
                if !noted.contains(&n.what) {
                    let reason = n.absent.as_deref().unwrap_or_default();
                    if n.required() {
                        eprintln!("finetp-testkit: {}=1 but no {}: {reason}; every case that needs it fails", n.require_env, n.what);
                    } else {
                        eprintln!("finetp-testkit: no {}: {reason}; its cases are listed as ignored (set {}=1 to fail instead)", n.what, n.require_env);
                    }
                    noted.push(n.what.clone());
                }
            }
            let Some(first) = missing.first().cloned() else {
                let body = c.body;
                return Trial::test(c.name, move || body().map_err(Failed::from));
            };
            let why = format!("no {}: {}", first.what, first.absent.as_deref().unwrap_or_default());
            let required = missing.iter().any(|n| n.required());
            let trial = Trial::test(c.name, move || Err(Failed::from(why)));
            if required { trial } else { trial.with_ignored_flag(true).with_kind(format!("no {}", first.what)) }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
