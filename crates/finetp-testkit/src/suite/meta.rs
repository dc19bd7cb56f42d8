//! The suite covers the whole contract: every method of the backend traits, read from their
//! source in `finetp-core`, is named by some case's `covers`.

use finetp_core::backend::Device;

/// The sources that define the contract's traits.
const SOURCES: [(&str, &str); 4] = [
    ("backend/mod.rs", include_str!("../../../finetp-core/src/backend/mod.rs")),
    ("backend/ops.rs", include_str!("../../../finetp-core/src/backend/ops.rs")),
    ("backend/collective.rs", include_str!("../../../finetp-core/src/backend/collective.rs")),
    ("backend/graph.rs", include_str!("../../../finetp-core/src/backend/graph.rs")),
];

/// `Trait::method` for every `fn` declared inside a `pub trait ... {` block of `src`.
pub(crate) fn trait_methods(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut depth = 0usize;
    for line in src.lines() {
        let t = line.trim_start();
        if current.is_none() {
            if let Some(rest) = t.strip_prefix("pub trait ") {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                current = Some(name);
                depth = 0;
            } else {
                continue;
            }
        }
        if depth == 1
            && let Some(rest) = t.strip_prefix("fn ").or_else(|| t.strip_prefix("unsafe fn "))
        {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(format!("{}::{name}", current.as_deref().unwrap_or_default()));
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if depth == 0 && line.contains('}') {
            current = None;
        }
    }
    out
}

/// Fails naming every trait method no case covers (and every `covers` entry that names no
/// method, so the list cannot rot).
pub(super) fn every_method_has_a_case<B: Device>() -> Result<(), String> {
    let methods: Vec<String> = SOURCES.iter().flat_map(|(_, s)| trait_methods(s)).collect();
    if methods.len() < 20 {
        return Err(format!("found only {} trait methods in the contract's sources: the parser is broken", methods.len()));
    }
    let covered: Vec<&str> = super::cases::<B>().iter().flat_map(|c| c.covers.iter().copied()).collect();
    let missing: Vec<&String> = methods.iter().filter(|m| !covered.contains(&m.as_str())).collect();
    let unknown: Vec<&&str> = covered.iter().filter(|c| !methods.iter().any(|m| m == **c)).collect();
    if !missing.is_empty() || !unknown.is_empty() {
        return Err(format!("trait methods without a case: {missing:?}; cases covering methods that do not exist: {unknown:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_methods_of_each_trait_and_only_theirs() {
        let src = "pub trait A: X {\n    fn a(&self);\n    fn b(&self) -> u32 {\n        let f = |x| { x };\n        0\n    }\n}\nfn free() {}\npub trait C<B> {\n    unsafe fn c(&mut self);\n}\n";
        assert_eq!(super::trait_methods(src), ["A::a", "A::b", "C::c"]);
    }
}
