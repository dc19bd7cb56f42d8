//! Prints the adapter the wgpu tests run on (CI shows it with `--nocapture`), and checks the
//! limits the backend took from it.

mod common;

use finetp_core::backend::Backend;

#[test]
fn prints_the_adapter() {
    let Some(be) = common::backend() else { return };
    println!("wgpu adapter: {}", be.describe());
    let a = be.adapter();
    assert!(!a.name.is_empty(), "the adapter has a name");
    assert!(be.max_binding_bytes() >= 1 << 20, "a storage binding of at least 1 MiB");
}
