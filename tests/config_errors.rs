//! Bad configuration: every kind of mistake exits with code 2 and a message naming the problem, from
//! both `check-config` and `run`; a good config prints back with its secrets redacted.

use std::process::{Command, Output};

const GOOD: &str = r#"
[agent]
state_path = "state.db"
block_output = "none"

[[chains]]
name = "main"
chain_id = 1
expected_block_time = "12s"

  [[chains.providers]]
  name = "alchemy"
  url = "https://eth-mainnet.g.alchemy.com/v2/${TEST_PROVIDER_KEY}"
  headers = { "x-api-key" = "${TEST_HEADER_KEY}" }
"#;

fn blockwatch(cmd: &str, config: &str) -> Output {
    blockwatch_with_files(cmd, config, &[])
}

/// Runs `cmd` on `config`, written with `files` (name, content) beside it; the working directory
/// is another directory, so that a relative `${file:…}` path only works from the config's.
fn blockwatch_with_files(cmd: &str, config: &str, files: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blockwatch.toml");
    std::fs::write(&path, config).unwrap();
    for (name, content) in files {
        let file = dir.path().join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    let cwd = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args([cmd, "--config"])
        .arg(&path)
        .current_dir(cwd.path())
        .env("TEST_PROVIDER_KEY", "Zq81kLmN0pQrStUvWx")
        .env("TEST_HEADER_KEY", "hdr-secret-value")
        .output()
        .unwrap()
}

fn assert_rejected(config: &str, expected: &[&str]) {
    for cmd in ["check-config", "run"] {
        let out = blockwatch(cmd, config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{cmd}: expected exit 2, stderr: {stderr}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{cmd}: {needle:?} not in stderr: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn good_config_prints_with_secrets_redacted() {
    let out = blockwatch("check-config", GOOD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("eth-mainnet.g.alchemy.com/v2/<redacted>"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Zq81kLmN0pQrStUvWx") && !stdout.contains("hdr-secret-value"),
        "{stdout}"
    );
}

/// `check-config` succeeded and printed the provider URL with its key `<redacted>`, and `secret`
/// nowhere.
fn assert_shown_redacted(out: &std::process::Output, secret: &str) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("\"https://eth-mainnet.g.alchemy.com/v2/<redacted>\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_short_key_written_in_the_url_path_is_never_printed() {
    // Written out, not from `${…}`: only its shape (no known route word) gives it away.
    let config = GOOD.replace("${TEST_PROVIDER_KEY}", "SECRET123abc");
    assert_shown_redacted(&blockwatch("check-config", &config), "SECRET123abc");
    // Nor in the message about a bad URL.
    let bad = config.replace("https://eth-mainnet", "htps://eth-mainnet");
    assert_rejected(&bad, &["chains[0].providers[0].url", "scheme"]);
    for cmd in ["check-config", "run"] {
        let out = blockwatch(cmd, &bad);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("SECRET123abc"), "{cmd}: {all}");
    }
}

/// A provider key read from a file, 12 characters like the short key above.
const FILE_KEY: &str = "F1leK3y-7xQz";

#[test]
fn a_key_read_from_a_file_is_used_and_never_printed() {
    let config = GOOD.replace("${TEST_PROVIDER_KEY}", "${file:secrets/provider.key}");
    let out = blockwatch_with_files(
        "check-config",
        &config,
        &[("secrets/provider.key", &format!("{FILE_KEY}\n"))],
    );
    assert_shown_redacted(&out, FILE_KEY);
    // Read from a file in a key that carries no secret, it is still never printed.
    let config = format!(
        "[telemetry]\nservice_name = \"${{file:secrets/provider.key}}\"\n{}",
        GOOD
    );
    let out = blockwatch_with_files(
        "check-config",
        &config,
        &[("secrets/provider.key", FILE_KEY)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("service_name = \"<redacted>\"") && !stdout.contains(FILE_KEY),
        "{stdout}"
    );
}

#[test]
fn missing_secret_file() {
    // Exit 2 from check-config and run, naming the key and the path.
    assert_rejected(
        &GOOD.replace(
            "${TEST_PROVIDER_KEY}",
            "${file:/run/secrets/blockwatch-test-missing}",
        ),
        &[
            "chains[0].providers[0].url",
            "/run/secrets/blockwatch-test-missing",
            "cannot read secret file",
        ],
    );
    // A relative path is looked for beside the config file, and named so.
    assert_rejected(
        &GOOD.replace("${TEST_HEADER_KEY}", "${file:absent.key}"),
        &[
            "chains[0].providers[0].headers.x-api-key",
            "absent.key (relative to the config file's directory)",
        ],
    );
    // No default for a file.
    assert_rejected(
        &GOOD.replace("${TEST_HEADER_KEY}", "${file:absent.key:-fallback}"),
        &["chains[0].providers[0].headers.x-api-key", "no `:-default`"],
    );
}

#[test]
fn unknown_key() {
    assert_rejected(
        &GOOD.replace("[agent]", "[agent]\nstate_dir = \"x\""),
        &["agent", "state_dir"],
    );
}

#[test]
fn a_routine_call_share_outside_0_to_1() {
    for share in ["1.5", "-0.1"] {
        assert_rejected(
            &GOOD.replace(
                "[[chains]]",
                &format!("[telemetry]\nroutine_call_share = {share}\n\n[[chains]]"),
            ),
            &["telemetry.routine_call_share", share, "is not a share"],
        );
    }
}

#[test]
fn bad_duration() {
    assert_rejected(
        &GOOD.replace("\"12s\"", "\"twelve seconds\""),
        &["chains[0].expected_block_time", "invalid duration"],
    );
}

#[test]
fn missing_url() {
    let config = GOOD.replace(
        "url = \"https://eth-mainnet.g.alchemy.com/v2/${TEST_PROVIDER_KEY}\"",
        "",
    );
    assert_rejected(&config, &["chains[0].providers[0]", "url"]);
}

#[test]
fn duplicate_provider_name() {
    let config = format!(
        "{GOOD}\n  [[chains.providers]]\n  name = \"alchemy\"\n  url = \"http://127.0.0.1:1\"\n"
    );
    assert_rejected(
        &config,
        &[
            "chains[0].providers[1].name",
            "duplicate provider name \"alchemy\"",
        ],
    );
}

#[test]
fn unset_environment_variable() {
    assert_rejected(
        &GOOD.replace("TEST_HEADER_KEY", "TEST_UNSET_VARIABLE"),
        &["TEST_UNSET_VARIABLE", "not set"],
    );
}

#[test]
fn syntax_error_and_missing_file() {
    assert_rejected("[[chains]\nname = ", &["not valid TOML", "line"]);
    let out = Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["check-config", "--config", "/nonexistent/blockwatch.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/blockwatch.toml"));
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["run", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["--version"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn http_api_limits_above_zero() {
    for (key, value) in [
        ("http_max_connections", "0"),
        ("http_header_timeout", "\"0s\""),
        ("http_request_timeout", "\"0ms\""),
    ] {
        assert_rejected(
            &GOOD.replace("[agent]", &format!("[agent]\n{key} = {value}")),
            &[&format!("agent.{key}"), "out of range"],
        );
    }
}
