use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[[chains]]
name = "local"
chain_id = 31337

  [[chains.providers]]
  name = "a"
  url = "http://127.0.0.1:8545"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let env = |name: &str| match name {
        "ALCHEMY_KEY" => Some("k3yk3yk3yk3y".to_owned()),
        "HDR" => Some("header-secret".to_owned()),
        _ => None,
    };
    Config::from_toml_str(text, Path::new("test.toml"), &env)
}

fn err_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.chains[0].reorg_window, DEFAULT_REORG_WINDOW);
    assert_eq!(c.chains[0].start, StartAt::Resume);
    assert_eq!(c.chains[0].providers[0].timeout, DEFAULT_TIMEOUT);
    assert_eq!(c.agent.block_output, BlockOutputTarget::Stdout);
    assert_eq!(
        c.chains[0].poll_interval(),
        std::time::Duration::from_secs(3)
    );
}

#[test]
fn unknown_key_is_named() {
    let msg = err_of(&format!("{MINIMAL}\n  colour = \"red\"\n"));
    assert!(
        msg.contains("chains[0].providers[0]") && msg.contains("colour"),
        "{msg}"
    );
    let msg = err_of(&format!("[agent]\nstate_pth = \"x\"\n{MINIMAL}"));
    assert!(msg.contains("state_pth"), "{msg}");
}

#[test]
fn bad_duration_is_named() {
    let msg = err_of(&format!("{MINIMAL}\n  timeout = \"5 parsecs\"\n"));
    assert!(
        msg.contains("chains[0].providers[0].timeout") && msg.contains("invalid duration"),
        "{msg}"
    );
}

#[test]
fn missing_url_is_named() {
    let msg = err_of("[[chains]]\nname='x'\nchain_id=1\n[[chains.providers]]\nname='a'\n");
    assert!(msg.contains("url"), "{msg}");
}

#[test]
fn duplicate_provider_name_is_named() {
    let msg = err_of(&format!(
        "{MINIMAL}\n  [[chains.providers]]\n  name = \"a\"\n  url = \"http://127.0.0.1:1\"\n"
    ));
    assert!(
        msg.contains("chains[0].providers[1].name") && msg.contains("duplicate"),
        "{msg}"
    );
}

#[test]
fn ranges_and_schemes_are_checked() {
    let msg = err_of(&MINIMAL.replace("chain_id = 31337", "chain_id = 1\nreorg_window = 0"));
    assert!(msg.contains("reorg_window"), "{msg}");
    let msg = err_of(&MINIMAL.replace("http://127.0.0.1:8545", "ftp://x"));
    assert!(
        msg.contains("providers[0].url") && msg.contains("scheme"),
        "{msg}"
    );
    let msg = err_of(&format!("{MINIMAL}\n  ws_url = \"http://x\"\n"));
    assert!(msg.contains("ws_url"), "{msg}");
    let msg = err_of(&format!(
        "{MINIMAL}\n  rate_limit = {{ requests_per_second = 0 }}\n"
    ));
    assert!(msg.contains("requests_per_second"), "{msg}");
    assert!(err_of("").contains("no chain configured"));
    let msg = err_of(&MINIMAL.replace("chain_id = 31337", "chain_id = 1\nstart = \"earliest\""));
    assert!(msg.contains("chains[0].start"), "{msg}");
}

#[test]
fn start_accepts_numbers_and_words() {
    let c = parse(&MINIMAL.replace("chain_id = 31337", "chain_id = 1\nstart = 1234")).unwrap();
    assert_eq!(c.chains[0].start, StartAt::Block(1234));
    let c =
        parse(&MINIMAL.replace("chain_id = 31337", "chain_id = 1\nstart = \"latest\"")).unwrap();
    assert_eq!(c.chains[0].start, StartAt::Latest);
}

#[test]
fn secrets_are_expanded_and_redacted() {
    let text = MINIMAL.replace(
        "http://127.0.0.1:8545\"",
        "https://eth.example.com/v2/${ALCHEMY_KEY}\"\n  headers = { \"x-api-key\" = \"${HDR}\" }",
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.chains[0].providers[0].url,
        "https://eth.example.com/v2/k3yk3yk3yk3y"
    );
    let shown = c.to_redacted_toml();
    assert!(
        !shown.contains("k3yk3yk3yk3y") && !shown.contains("header-secret"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_eq!(c.redactor().redact("oops k3yk3yk3yk3y"), "oops <redacted>");
}

#[test]
fn secrets_never_appear_in_validation_errors() {
    let text = MINIMAL.replace(
        "http://127.0.0.1:8545",
        "htps://rpc.example.com/v1/${ALCHEMY_KEY}",
    );
    let msg = err_of(&text);
    assert!(
        msg.contains("scheme") && !msg.contains("k3yk3yk3yk3y"),
        "{msg}"
    );
    let text = format!("{MINIMAL}\n  ws_url = \"https://x.example.com/${{ALCHEMY_KEY}}\"\n");
    let msg = err_of(&text);
    assert!(
        msg.contains("ws_url") && !msg.contains("k3yk3yk3yk3y"),
        "{msg}"
    );
}

#[test]
fn health_knobs_are_checked() {
    let pool = |body: &str| err_of(&format!("[pool]\n{body}\n{MINIMAL}"));
    let msg = pool("degraded_error_rate = 1.5");
    assert!(msg.contains("pool.degraded_error_rate"), "{msg}");
    let msg = pool("hedge_percentile = 100");
    assert!(msg.contains("pool.hedge_percentile"), "{msg}");
    let msg = pool("switch_ratio = 0.5");
    assert!(msg.contains("pool.switch_ratio"), "{msg}");
    let msg = pool("circuit_failures = 0");
    assert!(msg.contains("pool.circuit_failures"), "{msg}");
    let msg = pool("probe_interval = \"1ms\"");
    assert!(msg.contains("pool.probe_interval"), "{msg}");
    let msg = pool("method_costs = { eth_getBlockByNumber = 0 }");
    assert!(
        msg.contains("pool.method_costs.eth_getBlockByNumber"),
        "{msg}"
    );
    // A method costing more than a provider's burst could never be sent.
    let msg = pool("method_costs = { eth_getBlockByNumber = 60 }");
    assert!(
        msg.contains("providers[0].rate_limit.burst") && msg.contains("eth_getBlockByNumber"),
        "{msg}"
    );
    let msg = err_of(&format!("{MINIMAL}\n  max_batch_size = 0\n"));
    assert!(msg.contains("providers[0].max_batch_size"), "{msg}");
    let msg = err_of(&MINIMAL.replace("chain_id = 31337", "chain_id = 1\ngenesis_hash = \"0x12\""));
    assert!(msg.contains("chains[0].genesis_hash"), "{msg}");
    let c = parse(&format!("[pool]\nmethod_costs = {{ eth_getBlockByNumber = 16 }}\n{MINIMAL}\n  rate_limit = {{ requests_per_second = 100, burst = 100 }}\n")).unwrap();
    assert_eq!(c.pool.method_cost("eth_getBlockByNumber"), 16);
    assert_eq!(c.pool.method_cost("eth_chainId"), 1);
}

#[test]
fn monitor_section_is_read_and_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.monitor.retry_attempts, DEFAULT_RETRY_ATTEMPTS);
    assert_eq!(c.monitor.retry_delay, DEFAULT_RETRY_DELAY);
    assert_eq!(c.monitor.alert_threshold, DEFAULT_ALERT_THRESHOLD);
    assert!(c.monitor.enable_recovery);
    let c = parse(&format!(
        "[monitor]\nretry_attempts = 5\nretry_delay = \"250ms\"\nalert_threshold = 3\nenable_recovery = false\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(c.monitor.retry_attempts, 5);
    assert_eq!(c.monitor.retry_delay, HumanDuration::from_millis(250));
    assert!(!c.monitor.enable_recovery);
    let monitor = |body: &str| err_of(&format!("[monitor]\n{body}\n{MINIMAL}"));
    let msg = monitor("retry_attempts = 0");
    assert!(
        msg.contains("monitor.retry_attempts") && msg.contains("enable_recovery"),
        "{msg}"
    );
    // No attempts is fine when recovery is off.
    parse(&format!(
        "[monitor]\nretry_attempts = 0\nenable_recovery = false\n{MINIMAL}"
    ))
    .unwrap();
    let msg = monitor("retry_delay = \"0s\"");
    assert!(msg.contains("monitor.retry_delay"), "{msg}");
    let msg = monitor("alert_threshold = 0");
    assert!(msg.contains("monitor.alert_threshold"), "{msg}");
    let msg = monitor("retry_attemps = 2");
    assert!(msg.contains("retry_attemps"), "{msg}");
}

#[test]
fn alerts_section_is_read_checked_and_its_secrets_redacted() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.alerts.consecutive_failures, 5);
    assert_eq!(c.alerts.throttle, HumanDuration::from_secs(300));
    assert!(c.alerts.channels.is_empty());
    let with = |channel: &str| format!("[alerts]\n[[alerts.channels]]\n{channel}\n{MINIMAL}");
    let msg = err_of(&with("kind = \"webhook\""));
    assert!(
        msg.contains("alerts.channels[0].url") && msg.contains("webhook"),
        "{msg}"
    );
    let msg = err_of(&with("kind = \"slack\"\nurl = \"ftp://x/T0123456789\""));
    assert!(
        msg.contains("alerts.channels[0].url") && !msg.contains("T0123456789"),
        "{msg}"
    );
    let msg = err_of(&with("kind = \"file\""));
    assert!(msg.contains("alerts.channels[0].path"), "{msg}");
    let msg = err_of(&with("kind = \"pager\""));
    assert!(msg.contains("pager"), "{msg}");
    let msg = err_of(&with("kind = \"console\"\nmin_severity = \"fatal\""));
    assert!(
        msg.contains("min_severity") || msg.contains("fatal"),
        "{msg}"
    );
    let email = |extra: &str| {
        with(&format!(
            "kind = \"email\"\nsmtp_url = \"smtp://u:pw-Secret-123@mail.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n{extra}"
        ))
    };
    parse(&email("")).unwrap();
    let msg = err_of(&email("").replace("a@example.com", "not an address"));
    assert!(msg.contains("alerts.channels[0].from"), "{msg}");
    let msg =
        err_of(&email("").replace("@mail.example.com", "@mail.example.com?tls=opportunistic"));
    assert!(
        msg.contains("alerts.channels[0].smtp_url") && !msg.contains("pw-Secret-123"),
        "{msg}"
    );
    let msg = err_of(&email("smtp_ca_file = \"/nonexistent/ca.pem\""));
    assert!(msg.contains("alerts.channels[0].smtp_ca_file"), "{msg}");
    let msg = err_of(&format!("[alerts]\nerror_rate = 5.0\n{MINIMAL}"));
    assert!(msg.contains("alerts.error_rate"), "{msg}");
    let msg = err_of(&format!(
        "[alerts]\nmax_switches = {{ count = 0, window = \"1m\" }}\n{MINIMAL}"
    ));
    assert!(msg.contains("alerts.max_switches"), "{msg}");
    // Tokens in channel URLs and header values are secrets: redacted in the printed config and
    // by the redactor, wherever they appear.
    let c = parse(&with(
        "kind = \"webhook\"\nurl = \"https://hooks.example.com/services/T0ABC123/B0DEF456/xoxbSecretToken99\"\nheaders = { authorization = \"Bearer hdr-secret-1\" }",
    ))
    .unwrap();
    let printed = c.to_redacted_toml();
    for secret in ["T0ABC123", "B0DEF456", "xoxbSecretToken99", "hdr-secret-1"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
        assert!(!c
            .redactor()
            .redact(&format!("error at {secret}"))
            .contains(secret));
    }
}

#[test]
fn alert_channels_refuse_clear_text_credentials_and_bad_headers() {
    let with = |channel: &str| format!("[alerts]\n[[alerts.channels]]\n{channel}\n{MINIMAL}");
    let msg = err_of(&with(
        "kind = \"email\"\nsmtp_url = \"smtp://u:pw-Secret-123@relay.internal:25?tls=none\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
    ));
    assert!(
        msg.contains("in clear") && !msg.contains("pw-Secret-123"),
        "{msg}"
    );
    parse(&with(
        "kind = \"email\"\nsmtp_url = \"smtp://relay.internal:25?tls=none\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
    ))
    .unwrap();
    let msg = err_of(&with(
        "kind = \"webhook\"\nurl = \"https://example.com/hook\"\nheaders = { \"bad header\" = \"x\" }",
    ));
    assert!(
        msg.contains("alerts.channels[0].headers.bad header"),
        "{msg}"
    );
}

#[test]
fn http_api_limits_are_read_and_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.agent.http_max_connections, DEFAULT_HTTP_MAX_CONNECTIONS);
    assert_eq!(c.agent.http_header_timeout, DEFAULT_HTTP_HEADER_TIMEOUT);
    assert_eq!(c.agent.http_request_timeout, DEFAULT_HTTP_REQUEST_TIMEOUT);
    let agent = |body: &str| parse(&format!("[agent]\n{body}\n{MINIMAL}"));
    let c = agent(
        "http_max_connections = 8\nhttp_header_timeout = \"250ms\"\nhttp_request_timeout = \"2s\"",
    )
    .unwrap();
    assert_eq!(c.agent.http_max_connections, 8);
    assert_eq!(c.agent.http_header_timeout, HumanDuration::from_millis(250));
    assert_eq!(c.agent.http_request_timeout, HumanDuration::from_secs(2));
    for (body, key) in [
        ("http_max_connections = 0", "agent.http_max_connections"),
        (
            "http_max_connections = 1000000",
            "agent.http_max_connections",
        ),
        ("http_max_connections = -1", "agent.http_max_connections"),
        ("http_header_timeout = \"0s\"", "agent.http_header_timeout"),
        ("http_header_timeout = \"2h\"", "agent.http_header_timeout"),
        (
            "http_request_timeout = \"0ms\"",
            "agent.http_request_timeout",
        ),
        (
            "http_request_timeout = \"soon\"",
            "agent.http_request_timeout",
        ),
    ] {
        let msg = agent(body).unwrap_err().to_string();
        assert!(msg.contains(key), "{body}: {msg}");
    }
}

#[test]
fn provider_url_paths_are_hidden_unless_marked_public() {
    // A 12-character key: too short for a length rule, hidden because it is no known route word.
    let text = MINIMAL.replace(
        "http://127.0.0.1:8545\"",
        "http://host/v2/SECRET123abc\"\n  ws_url = \"ws://host/ws/v2/SECRET123abc\"",
    );
    let c = parse(&text).unwrap();
    assert!(!c.chains[0].providers[0].public_url);
    let shown = c.to_redacted_toml();
    assert!(!shown.contains("SECRET123abc"), "{shown}");
    assert!(
        shown.contains("\"http://host/v2/<redacted>\"")
            && shown.contains("\"ws://host/ws/v2/<redacted>\"")
            && shown.contains("public_url = false"),
        "{shown}"
    );
    // …and found in free text, where a transport error may quote it.
    assert_eq!(
        c.redactor()
            .redact("error sending request for url (http://host/v2/SECRET123abc)"),
        "error sending request for url (http://host/v2/<redacted>)"
    );
    let msg = err_of(&text.replace("http://host", "htp://host"));
    assert!(
        msg.contains("scheme") && !msg.contains("SECRET123abc"),
        "{msg}"
    );

    // A self-hosted node: its path is shown, user-info and query values are not.
    let text = MINIMAL.replace(
        "http://127.0.0.1:8545\"",
        "http://ops:pa55w0rd-ops@10.0.0.5:8545/some/route?token=t0k3n-t0k3n\"\n  ws_url = \"ws://10.0.0.5:8546/some/route\"\n  public_url = true",
    );
    let c = parse(&text).unwrap();
    assert!(c.chains[0].providers[0].public_url);
    let shown = c.to_redacted_toml();
    assert!(
        shown.contains("\"http://<redacted>@10.0.0.5:8545/some/route?token=<redacted>\"")
            && shown.contains("\"ws://10.0.0.5:8546/some/route\"")
            && shown.contains("public_url = true"),
        "{shown}"
    );
    let r = c.redactor();
    assert_eq!(r.redact("POST /some/route"), "POST /some/route");
    assert_eq!(
        r.redact("t0k3n-t0k3n pa55w0rd-ops"),
        "<redacted> <redacted>"
    );
    let msg = err_of(&format!("{MINIMAL}\n  public_url = \"yes\"\n"));
    assert!(msg.contains("chains[0].providers[0].public_url"), "{msg}");
}

#[test]
fn file_secrets_are_read_collected_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| std::fs::write(dir.path().join(name), content).unwrap();
    write("provider.key", "F1leK3y-abc\n");
    write("service", "svc-from-file\r\n");
    write("timeout", "s3cret-timeout\n");
    write("chain", "chain-n4me-s3cret\n");
    let load =
        |text: &str| Config::from_toml_str(text, &dir.path().join("blockwatch.toml"), &|_| None);
    // A relative path is relative to the config file's directory (not the working directory).
    let text = format!(
        "[telemetry]\nservice_name = \"${{file:service}}\"\n{}",
        MINIMAL.replace(
            "http://127.0.0.1:8545\"",
            "http://127.0.0.1:8545/${file:provider.key}\"\n  public_url = true"
        )
    );
    let c = load(&text).unwrap();
    assert_eq!(
        c.chains[0].providers[0].url,
        "http://127.0.0.1:8545/F1leK3y-abc"
    );
    assert_eq!(c.telemetry.service_name, "svc-from-file");
    for s in ["F1leK3y-abc", "svc-from-file"] {
        assert!(c.secrets.iter().any(|x| x == s), "{s} not a secret");
        assert_eq!(c.redactor().redact(&format!("[{s}]")), "[<redacted>]");
    }
    // Redacted in any key, and in a public URL too: a value read from a file is always secret.
    let shown = c.to_redacted_toml();
    assert!(
        !shown.contains("F1leK3y-abc") && !shown.contains("svc-from-file"),
        "{shown}"
    );
    assert!(
        shown.contains("service_name = \"<redacted>\"")
            && shown.contains("url = \"http://127.0.0.1:8545/<redacted>\""),
        "{shown}"
    );
    // Messages that quote a value do not quote it when it came from a file.
    let msg = load(&format!("{MINIMAL}\n  timeout = \"${{file:timeout}}\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("chains[0].providers[0].timeout") && !msg.contains("s3cret-timeout"),
        "{msg}"
    );
    let twice = MINIMAL.replace("name = \"local\"", "name = \"${file:chain}\"");
    let msg = load(&format!("{twice}\n{twice}")).unwrap_err().to_string();
    assert!(
        msg.contains("chains[1].name") && msg.contains("duplicate") && !msg.contains("n4me"),
        "{msg}"
    );
    // A missing file names the key and the path.
    let msg = load(&MINIMAL.replace("8545\"", "8545/${file:absent.key}\""))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("chains[0].providers[0].url")
            && msg.contains(&dir.path().join("absent.key").display().to_string()),
        "{msg}"
    );
}

#[test]
fn cluster_section_is_read_checked_and_its_password_redacted() {
    let c = parse(MINIMAL).unwrap();
    assert!(!c.cluster.shared());
    assert_eq!(c.cluster.lease_ttl, HumanDuration::from_secs(10));
    assert_eq!(c.cluster.renew_every, HumanDuration::from_secs(2));
    let with = |cluster: &str| format!("[cluster]\n{cluster}\n{MINIMAL}");
    let c = parse(&with(
        "store = \"postgres\"\nurl = \"postgres://bw:pg-Secret-42@db.internal:5432/bw\"\ninstance = \"a-1\"",
    ))
    .unwrap();
    assert!(c.cluster.shared());
    assert_eq!(c.cluster.instance_name(), "a-1");
    let shown = c.to_redacted_toml();
    assert!(!shown.contains("pg-Secret-42"), "{shown}");
    assert!(
        shown.contains("db.internal"),
        "the server stays readable: {shown}"
    );
    assert!(!c
        .redactor()
        .redact("login pg-Secret-42 failed")
        .contains("pg-Secret-42"));
    // Blocks into PostgreSQL need the shared store.
    let msg = err_of(&format!("[agent]\nblock_output = \"postgres\"\n{MINIMAL}"));
    assert!(
        msg.contains("agent.block_output") && msg.contains("cluster.store"),
        "{msg}"
    );
    let c = parse(&format!(
        "[agent]\nblock_output = \"postgres\"\n{}",
        with("store = \"postgres\"\nurl = \"host=db user=bw password=kv-Secret-7\"")
    ))
    .unwrap();
    assert_eq!(c.agent.block_output, BlockOutputTarget::Postgres);
    assert!(!c.to_redacted_toml().contains("kv-Secret-7"));
    let msg = err_of(&with("store = \"mysql\""));
    assert!(
        msg.contains("cluster.store") || msg.contains("mysql"),
        "{msg}"
    );
    let msg = err_of(&with("lease_ttl = \"3s\"\nrenew_every = \"2s\""));
    assert!(msg.contains("cluster.renew_every"), "{msg}");
    let msg = err_of(&with("leases = 3"));
    assert!(msg.contains("leases"), "{msg}");
    // The instance defaults to the host name and the process id.
    let c = parse(MINIMAL).unwrap();
    assert!(c
        .cluster
        .instance_name()
        .ends_with(&format!("-{}", std::process::id())));
}
