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
