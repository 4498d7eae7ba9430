//! The command line as users call it.

use std::process::Command;

#[test]
fn config_file_from_distill_watch_config_is_read_and_cli_variables_are_not_config_keys() {
    let file = std::env::temp_dir().join(format!("dw-cli-{}.toml", std::process::id()));
    std::fs::write(&file, "[kafka]\ngroup_id = \"from-the-file\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .arg("config")
        .env("DISTILL_WATCH_CONFIG", &file)
        .env("DISTILL_WATCH_DEMO_BROKER", "127.0.0.1:1")
        .env("DISTILL_WATCH_CACHE", "/nonexistent")
        .env("DISTILL_WATCH_NISSHI", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("group_id = \"from-the-file\""), "{stdout}");
    // A misspelt configuration variable is still an error.
    let out = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .arg("config")
        .env("DISTILL_WATCH_KAFKA_GROUP", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DISTILL_WATCH_KAFKA_GROUP"));
}
