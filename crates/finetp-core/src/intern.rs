//! Names read back as the `&'static str` the code that made them uses (module names in a
//! rank's report, op names in a message from another process): each distinct name is leaked
//! once — a run has a handful — and shared after that.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// The one `&'static str` for `s`.
pub fn intern(s: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(&n) = names.get(s) {
        return n;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    #[test]
    fn equal_names_are_one_string() {
        let (a, b) = (super::intern(&String::from("mlp")), super::intern("mlp"));
        assert_eq!(a, "mlp");
        assert!(std::ptr::eq(a, b));
    }
}
