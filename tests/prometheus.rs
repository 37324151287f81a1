//! The Prometheus files: the config is valid (`promtool check config`, which also checks the alert
//! and SLO rules it loads) and the rules pass their unit tests (`promtool test rules`, every file of
//! prometheus/tests). promtool is Debian's, installed into `.tools/` by
//! `scripts/install-prometheus.sh` (`make tools`). A real Prometheus, with exemplar storage on,
//! scrapes `blockwatch demo` and runs every dashboard and rule query; every latency panel asks
//! Grafana for exemplars, which the Prometheus data source links to Tempo.

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

/// A rule of prometheus/rules: its file, whether it is an alert (else a recording rule), its name
/// (the alert's or the recorded series'), its expression.
struct RuleExpr {
    file: String,
    alert: bool,
    name: String,
    expr: String,
}

/// Every rule of every file of prometheus/rules (the files `prometheus.yml` loads).
fn rule_exprs() -> Vec<RuleExpr> {
    use yaml_rust2::YamlLoader;
    let mut files: Vec<_> = std::fs::read_dir(root().join("prometheus/rules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
        for group in doc["groups"].as_vec().unwrap() {
            for rule in group["rules"].as_vec().unwrap() {
                let alert = rule["alert"].as_str();
                let name = alert.or(rule["record"].as_str()).unwrap();
                out.push(RuleExpr {
                    file: file.clone(),
                    alert: alert.is_some(),
                    name: name.to_owned(),
                    expr: rule["expr"].as_str().unwrap().to_owned(),
                });
            }
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
    // Only the Collector's spanmetrics connector makes blockwatch_spanmetrics_*: here Prometheus
    // scrapes the agent directly.
    (
        "blockwatch-providers",
        "Latency p95 from spans (Collector route)",
    ),
    // A burn-rate alert needs a budget burning 14.4 times too fast over a whole hour's window and
    // 5 minutes: the demo's outage may or may not get there in its three minutes. (The burn rates
    // themselves are never empty while blocks are emitted and calls made: a window without a bad
    // event has a ratio of 0.)
    ("blockwatch-slo", "Firing SLO alerts"),
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
            // As compose.yaml runs it: exemplars scraped with the histograms are kept.
            .arg("--enable-feature=exemplar-storage")
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
    // Every rule's expression is valid PromQL over the agent's real series: the agent's mirrored
    // alerts, and the SLO recording rules and burn-rate alerts.
    let rules = rule_exprs();
    let alerts = |file: &str| rules.iter().filter(|r| r.alert && r.file == file).count();
    assert_eq!(alerts("blockwatch.yml"), 10);
    assert_eq!(alerts("blockwatch-slo.yml"), 4);
    assert!(rules.iter().filter(|r| !r.alert).count() > 10);
    for r in &rules {
        query(&client, &base, &r.expr)
            .await
            .unwrap_or_else(|e| panic!("{}: {}: {e}\n{}", r.file, r.name, r.expr));
    }
    // Prometheus evaluates the SLO rules over the demo's series: a burn rate per chain (no block
    // was late, or none counted yet: 0) and per provider, p0's above 0 after its outage.
    for (selector, want) in [
        (
            "blockwatch:slo_burn_rate:rate5m{slo=\"block_freshness\",service_name!=\"\",chain=\"devnet\"}",
            None,
        ),
        (
            "blockwatch:slo_burn_rate:rate1h{slo=\"provider_availability\",chain=\"devnet\",provider=\"p0\"} > 0",
            Some("p0"),
        ),
        (
            "blockwatch:slo_error_budget_remaining:ratio30d{slo=\"provider_availability\",chain=\"devnet\"}",
            None,
        ),
    ] {
        let got = query(&client, &base, selector).await.unwrap();
        assert!(!got.is_empty(), "no series for {selector}");
        if let Some(provider) = want {
            assert!(got.iter().all(|r| r["metric"]["provider"] == provider));
        }
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

/// Every Prometheus query of a latency panel — one that reads a histogram of durations or the block
/// delay — asks Grafana for exemplars, and Grafana's Prometheus data source links an exemplar's
/// `trace_id` to the provisioned Tempo.
#[test]
fn every_latency_panel_asks_for_exemplars_and_grafana_links_them_to_tempo() {
    let mut latency = 0;
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                if expr.contains("_duration_seconds_bucket")
                    || expr.contains("blockwatch_block_delay_seconds")
                {
                    latency += 1;
                    assert_eq!(
                        t["exemplar"].as_bool(),
                        Some(true),
                        "{}: {}: {expr} shows no exemplars",
                        d["uid"],
                        p["title"]
                    );
                }
            }
        }
    }
    assert!(latency >= 10, "{latency} latency queries");

    use yaml_rust2::YamlLoader;
    let text =
        std::fs::read_to_string(root().join("grafana/provisioning/datasources/blockwatch.yaml"))
            .unwrap();
    let doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    let sources = doc["datasources"].as_vec().unwrap();
    let uid_of = |ty: &str| {
        sources
            .iter()
            .find(|s| s["type"].as_str() == Some(ty))
            .and_then(|s| s["uid"].as_str())
            .unwrap()
            .to_owned()
    };
    let prometheus = sources
        .iter()
        .find(|s| s["type"].as_str() == Some("prometheus"))
        .unwrap();
    let links = prometheus["jsonData"]["exemplarTraceIdDestinations"]
        .as_vec()
        .expect("no exemplarTraceIdDestinations on the Prometheus data source");
    assert!(
        links.iter().any(|l| l["name"].as_str() == Some("trace_id")
            && l["datasourceUid"].as_str() == Some(uid_of("tempo").as_str())),
        "{links:?}"
    );
}
