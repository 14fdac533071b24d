//! The binary starts and reports itself. (Its presence also makes
//! `cargo test --workspace` build the `pgshift` binary that the end-to-end
//! tests in `tests/` run.)

#[test]
fn version_and_help() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pgshift "));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "no subcommand and no --config is an input error"
    );
}
