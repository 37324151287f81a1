//! The Collector config, checked structurally (no Collector binary can be fetched here): every
//! pipeline's receivers, processors and exporters are defined, `memory_limiter` comes first and
//! `batch` last, traces go to Tempo, logs to Loki's OTLP endpoint, metrics to the `prometheus`
//! exporter with `service.name` copied to `service_name`, and Prometheus scrapes that exporter.

use yaml_rust2::{Yaml, YamlLoader};

fn load(path: &str) -> Yaml {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

fn names(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_pipeline_is_wired_to_its_backend() {
    let c = load("otel-collector/config.yaml");
    let pipelines = c["service"]["pipelines"]
        .as_hash()
        .expect("service.pipelines");
    let mut seen = Vec::new();
    for (name, p) in pipelines {
        let name = name.as_str().unwrap();
        seen.push(name.to_owned());
        for kind in ["receivers", "processors", "exporters"] {
            for component in names(&p[kind]) {
                assert!(
                    !c[kind][component.as_str()].is_badvalue(),
                    "pipeline {name}: {kind} {component} is not defined"
                );
            }
        }
        let processors = names(&p["processors"]);
        assert_eq!(
            processors.first().map(String::as_str),
            Some("memory_limiter"),
            "{name}"
        );
        assert_eq!(
            processors.last().map(String::as_str),
            Some("batch"),
            "{name}"
        );
        assert_eq!(names(&p["receivers"]), ["otlp"], "{name}");
    }
    seen.sort();
    assert_eq!(seen, ["logs", "metrics", "traces"]);
    let exporters = |p: &str| names(&c["service"]["pipelines"][p]["exporters"]);
    assert_eq!(exporters("traces"), ["otlp/tempo"]);
    assert!(c["exporters"]["otlp/tempo"]["endpoint"]
        .as_str()
        .unwrap()
        .starts_with("tempo:"));
    assert_eq!(exporters("logs"), ["otlphttp/loki"]);
    assert!(c["exporters"]["otlphttp/loki"]["endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/otlp"));
    assert_eq!(exporters("metrics"), ["prometheus"]);
    let statements = format!("{:?}", c["processors"]["transform/service_name"]);
    assert!(
        statements.contains(
            r#"set(attributes[\"service_name\"], resource.attributes[\"service.name\"])"#
        ),
        "{statements}"
    );
    assert!(names(&c["service"]["pipelines"]["metrics"]["processors"])
        .contains(&"transform/service_name".to_owned()));
    // Both OTLP protocols are received; the agent uses gRPC on 4317.
    assert!(c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .unwrap()
        .ends_with(":4317"));
    assert!(!c["receivers"]["otlp"]["protocols"]["http"].is_badvalue());

    // Prometheus scrapes the exporter's port.
    let port = c["exporters"]["prometheus"]["endpoint"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let prom = load("prometheus/prometheus.yml");
    let targets = format!(
        "{:?}",
        prom["scrape_configs"][0]["static_configs"][0]["targets"]
    );
    assert!(
        targets.contains(&format!("otel-collector:{port}")),
        "{targets}"
    );
}
