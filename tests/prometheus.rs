//! The Prometheus files: the config is valid (`promtool check config`, which also checks the alert
//! rules it loads) and the alert rules pass their unit tests (`promtool test rules`). promtool is
//! Debian's, installed into `.tools/` by `scripts/install-prometheus.sh` (`make tools`).

use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> String {
    let bin = root().join(".tools/bin/promtool");
    assert!(
        bin.exists(),
        "{} missing: run `make tools` (scripts/install-prometheus.sh)",
        bin.display()
    );
    let out = Command::new(bin)
        .args(args)
        .current_dir(root().join("prometheus"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_config_and_its_rules_are_valid() {
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert!(out.contains("rules found"), "{out}");
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let tests: Vec<String> = std::fs::read_dir(root().join("prometheus/tests"))
        .unwrap()
        .map(|e| format!("tests/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".yml"))
        .collect();
    assert!(!tests.is_empty());
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = promtool(&args);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_agent_alert_rule_has_a_prometheus_mirror() {
    let rules = std::fs::read_to_string(root().join("prometheus/rules/blockwatch.yml")).unwrap();
    for rule in blockwatch::alerts::Rule::ALL.map(|r| r.as_str()) {
        assert!(
            rules.contains(&format!("rule: {rule}}}")),
            "no Prometheus rule mirrors the agent's {rule}"
        );
    }
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every alert rule's expression, by alert name.
fn rule_exprs() -> Vec<(String, String)> {
    use yaml_rust2::YamlLoader;
    let text = std::fs::read_to_string(root().join("prometheus/rules/blockwatch.yml")).unwrap();
    let doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    let mut out = Vec::new();
    for group in doc["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap().to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// `query` against Prometheus's API at `base`: the result list, or the error Prometheus gave.
async fn query(
    client: &reqwest::Client,
    base: &str,
    query: &str,
) -> Result<Vec<serde_json::Value>, String> {
    let resp = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_demo_and_every_rule_expression_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_port, prom_port) = (free_port(), free_port());
    let _demo = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
            .args([
                "demo",
                "--duration",
                "90s",
                "--http",
                &format!("127.0.0.1:{agent_port}"),
            ])
            .current_dir(dir.path())
            // Killed at the end: whatever it keeps in its temporary directory goes with `dir`.
            .env("TMPDIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: blockwatch\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
        ),
    )
    .unwrap();
    let bin = root().join(".tools/bin/prometheus");
    assert!(bin.exists(), "{} missing: run `make tools`", bin.display());
    let _prometheus = Child(
        std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{prom_port}");
    let client = reqwest::Client::new();
    // Scraped for a while: the demo's first fault (p0 down) has come and gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ready = query(&client, &base, "sum(blockwatch_provider_switches_total)")
            .await
            .is_ok_and(|r| !r.is_empty());
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus never got the demo's switches"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Every rule's expression is valid PromQL over the agent's real series.
    let rules = rule_exprs();
    assert_eq!(rules.len(), 10);
    for (alert, expr) in &rules {
        query(&client, &base, expr)
            .await
            .unwrap_or_else(|e| panic!("{alert}: {e}\n{expr}"));
    }
    // The series the rules read exist, with the labels they aggregate by.
    for selector in [
        "blockwatch_blocks_processed_total{service_name!=\"\",chain=\"devnet\"}",
        "blockwatch_provider_up{state=\"alive\",provider=\"p0\"}",
        "blockwatch_missed_blocks_streak{chain=\"devnet\"}",
        "blockwatch_rpc_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"}",
        "blockwatch_rpc_duration_seconds_count{outcome=\"error\"}",
    ] {
        let got = query(&client, &base, selector).await.unwrap();
        assert!(!got.is_empty(), "no series for {selector}");
    }
    // The p0 outage made failed calls, counted per provider as the rules aggregate them.
    let errors = query(
        &client,
        &base,
        "sum by (service_name, chain, provider) (blockwatch_rpc_duration_seconds_count{outcome=\"error\"}) > 0",
    )
    .await
    .unwrap();
    assert!(
        errors.iter().any(|r| r["metric"]["provider"] == "p0"),
        "no failed call of p0 seen: {errors:?}"
    );
}
