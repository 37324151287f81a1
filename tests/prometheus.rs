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

/// Every PromQL query of the dashboards, as Grafana sends it with every variable on "All": the
/// dashboard's uid, what the query belongs to (a panel's title or a variable's name), the query.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        let uid = d["uid"].as_str().unwrap().to_owned();
        for p in d["panels"].as_array().unwrap() {
            if p["datasource"]["type"] != "prometheus" {
                continue;
            }
            for t in p["targets"].as_array().unwrap() {
                let title = p["title"].as_str().unwrap().to_owned();
                out.push((
                    uid.clone(),
                    title,
                    as_grafana_sends(t["expr"].as_str().unwrap()),
                ));
            }
        }
        // `label_values(selector, label)`: the selector must find series.
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"].as_str().unwrap();
            let selector = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel)
                .unwrap_or_else(|| panic!("{uid}: unexpected variable query {q}"));
            let name = format!("variable {}", v["name"].as_str().unwrap());
            out.push((uid.clone(), name, as_grafana_sends(selector)));
        }
    }
    out
}

/// `expr` with Grafana's variables replaced as Grafana would for a short dashboard range and every
/// variable on "All" (`.*`).
fn as_grafana_sends(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    while let Some(i) = out.find('$') {
        let rest = &out[i + 1..];
        let len = if rest.starts_with('{') {
            rest.find('}').unwrap() + 1
        } else {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .count()
        };
        out.replace_range(i..i + 1 + len, ".*");
    }
    out
}

/// Panels that have nothing to show in the demo, and why.
const EMPTY_IN_THE_DEMO: &[(&str, &str)] = &[
    // The demo serves no broken block (no bad_hash or wrong_block fault in its scenario).
    ("blockwatch-providers", "Blocks refused"),
    // The Prometheus rules fire only after their `for:`, longer than the demo's faults last.
    ("blockwatch-overview", "Firing Prometheus alerts"),
];

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
async fn a_real_prometheus_scrapes_the_demo_and_every_dashboard_and_rule_query_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_port, prom_port) = (free_port(), free_port());
    let _demo = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
            .args([
                "demo",
                "--duration",
                "180s",
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
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}/prometheus/rules/*.yml']\nscrape_configs:\n  - job_name: blockwatch\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n",
            root().display()
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
    // Every dashboard query is valid PromQL, and has data once the demo's scenario has played its
    // faults (the reorg comes last, about 40 s in), but for the panels it cannot feed.
    let queries = dashboard_queries();
    assert!(queries.len() > 40, "{}", queries.len());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        // A panel shows data when one of its queries does.
        let mut with_data = std::collections::BTreeSet::new();
        for (uid, what, q) in &queries {
            let got = query(&client, &base, q)
                .await
                .unwrap_or_else(|e| panic!("{uid}: {what}: {e}\n{q}"));
            if !got.is_empty() {
                with_data.insert((uid.as_str(), what.as_str()));
            }
        }
        let empty: Vec<String> = queries
            .iter()
            .map(|(uid, what, _)| (uid.as_str(), what.as_str()))
            .filter(|p| !with_data.contains(p) && !EMPTY_IN_THE_DEMO.contains(p))
            .map(|(uid, what)| format!("{uid}: {what}"))
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboard panels without data in the demo:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
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
