//! The observability stack's files, checked structurally (no Docker engine, Collector, Grafana, Loki
//! or Tempo can be run here; Prometheus is tested for real in tests/prometheus.rs):
//! - the Collector config: every pipeline's receivers, processors and exporters are defined,
//!   `memory_limiter` comes first and `batch` last, traces go to Tempo, logs to Loki's OTLP endpoint,
//!   metrics to the `prometheus` exporter with `service.name` copied to `service_name`, and
//!   Prometheus scrapes that exporter;
//! - Grafana: the data sources are provisioned and linked both ways, the dashboards are valid
//!   Grafana JSON whose data source references and variables resolve, and the agent's alert links
//!   name their uids;
//! - compose.yaml: every service of the stack, pinned images, mounts and secrets of files that exist,
//!   ports on 127.0.0.1 only, and every address one component gives for another matches what that
//!   one serves; the agent's config is valid with the secret files compose mounts for it;
//! - cluster mode in compose.yaml: a pinned PostgreSQL whose password and connection string come from
//!   secret files that agree, two replicas of the agent's image with their own instance names and a
//!   valid cluster config, and Prometheus scraping them for the cluster series;
//! - deploy/kubernetes: the Deployment's replicas, probes, Secret reference and hardening, the objects
//!   that select its pods and name its port, the ConfigMap's config valid, no password committed.

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
                // A connector is an exporter of one pipeline and a receiver of another.
                let connector =
                    kind != "processors" && !c["connectors"][component.as_str()].is_badvalue();
                assert!(
                    connector || !c[kind][component.as_str()].is_badvalue(),
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
        assert_eq!(
            names(&p["receivers"]).first().map(String::as_str),
            Some("otlp"),
            "{name}"
        );
    }
    seen.sort();
    assert_eq!(seen, ["logs", "metrics", "traces"]);
    let exporters = |p: &str| names(&c["service"]["pipelines"][p]["exporters"]);
    assert_eq!(exporters("traces"), ["otlp/tempo", "spanmetrics"]);
    // Metrics computed from the spans, with exemplars, reach Prometheus in OpenMetrics.
    assert_eq!(
        names(&c["service"]["pipelines"]["metrics"]["receivers"]),
        ["otlp", "spanmetrics"]
    );
    let spanmetrics = &c["connectors"]["spanmetrics"];
    assert_eq!(spanmetrics["exemplars"]["enabled"].as_bool(), Some(true));
    assert_eq!(names(&spanmetrics["exclude_dimensions"]), ["service.name"]);
    assert_eq!(
        c["exporters"]["prometheus"]["enable_open_metrics"].as_bool(),
        Some(true)
    );
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

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {y:?}"))
}

/// `host:port` of an address written `scheme://host:port/path` or `host:port`.
fn host_port(addr: &str) -> (String, u16) {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let hp = rest.split('/').next().unwrap();
    let (h, p) = hp
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{addr}: no port"));
    (h.to_owned(), p.parse().unwrap())
}

/// The provisioned Grafana data sources: uid → type.
fn data_sources() -> std::collections::BTreeMap<String, String> {
    let ds = load("grafana/provisioning/datasources/blockwatch.yaml");
    ds["datasources"]
        .as_vec()
        .expect("datasources")
        .iter()
        .map(|d| {
            (
                str_of(&d["uid"], "uid").to_owned(),
                str_of(&d["type"], "type").to_owned(),
            )
        })
        .collect()
}

#[test]
fn grafana_data_sources_are_provisioned_and_linked_both_ways() {
    let uids = data_sources();
    let of_type = |t: &str| -> Vec<&String> {
        uids.iter()
            .filter(|(_, ty)| ty.as_str() == t)
            .map(|(u, _)| u)
            .collect()
    };
    for t in ["prometheus", "loki", "tempo"] {
        assert_eq!(of_type(t).len(), 1, "one {t} data source: {uids:?}");
    }
    let ds = load("grafana/provisioning/datasources/blockwatch.yaml");
    let by_type = |t: &str| {
        ds["datasources"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|d| d["type"].as_str() == Some(t))
            .unwrap()
            .clone()
    };
    let target = |y: &Yaml, what: &str| -> String {
        let uid = str_of(y, what);
        uids.get(uid)
            .unwrap_or_else(|| panic!("{what} = {uid}: no such data source"))
            .clone()
    };
    // Trace → logs, trace → metrics, and Tempo's log search.
    let tempo = by_type("tempo");
    let j = &tempo["jsonData"];
    assert_eq!(
        target(&j["tracesToLogsV2"]["datasourceUid"], "tracesToLogsV2"),
        "loki"
    );
    assert_eq!(j["tracesToLogsV2"]["filterByTraceID"].as_bool(), Some(true));
    assert_eq!(
        target(&j["tracesToMetrics"]["datasourceUid"], "tracesToMetrics"),
        "prometheus"
    );
    let queries = j["tracesToMetrics"]["queries"].as_vec().unwrap();
    assert!(!queries.is_empty());
    for q in queries {
        let q = str_of(&q["query"], "tracesToMetrics query");
        assert!(
            q.contains("{$$__tags}") && q.contains("blockwatch_rpc_"),
            "{q}"
        );
    }
    // The span attributes mapped to metric labels are the ones the agent's spans carry.
    let tags = format!("{:?}", j["tracesToMetrics"]["tags"]);
    for (attr, label) in [
        ("blockwatch.provider", "provider"),
        ("rpc.method", "method"),
        ("blockwatch.chain", "chain"),
    ] {
        assert!(
            tags.contains(&format!("String(\"{attr}\")"))
                && tags.contains(&format!("String(\"{label}\")")),
            "{tags}"
        );
    }
    assert_eq!(
        target(&j["lokiSearch"]["datasourceUid"], "lokiSearch"),
        "loki"
    );
    // Log → trace: the OTLP route's structured-metadata field, and the JSON line's field.
    let loki = by_type("loki");
    let fields = loki["jsonData"]["derivedFields"].as_vec().unwrap();
    for f in fields {
        assert_eq!(target(&f["datasourceUid"], "derivedFields"), "tempo");
        assert_eq!(str_of(&f["url"], "url"), "$${__value.raw}");
    }
    assert!(fields
        .iter()
        .any(|f| f["matcherType"].as_str() == Some("label")
            && f["matcherRegex"].as_str() == Some("trace_id")));
    assert!(fields
        .iter()
        .any(|f| f["matcherType"].as_str() == Some("regex")
            && f["matcherRegex"].as_str().unwrap().contains("\"trace_id\"")));
    // Grafana expands `$NAME` in provisioning files from its environment: every literal `$` is
    // written `$$`, or Grafana would blank `$__tags` and `${__value.raw}`.
    let text = read("grafana/provisioning/datasources/blockwatch.yaml");
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !body.replace("$$", "").contains('$'),
        "an unescaped $ in the data source provisioning"
    );
}

/// The dashboards in grafana/dashboards: file name and JSON.
fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("grafana/dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let json = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The variables `text` uses: `$name`, `${name}` and `${name:format}`.
fn variables_used(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        } else {
            assert!(!braced, "empty variable in {text}");
        }
    }
    out
}

/// Grafana's own variables the dashboards may use.
const BUILTIN_VARIABLES: &[&str] = &["__rate_interval", "__interval", "__range"];

#[test]
fn the_dashboards_are_valid_grafana_json_and_their_references_resolve() {
    use serde_json::Value;
    let provisioned = data_sources();
    let boards = dashboards();
    let uids: Vec<&str> = boards
        .iter()
        .map(|(n, d)| d["uid"].as_str().unwrap_or_else(|| panic!("{n}: no uid")))
        .collect();
    let mut unique = uids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), uids.len(), "dashboard uids repeat: {uids:?}");
    assert_eq!(
        unique,
        [
            "blockwatch-missed-blocks",
            "blockwatch-overview",
            "blockwatch-providers",
            "blockwatch-slo"
        ]
    );
    // The agent's alert texts link to these.
    for rule in blockwatch::alerts::Rule::ALL {
        assert!(uids.contains(&rule.dashboard()), "{rule:?}");
    }
    for (name, d) in &boards {
        assert_eq!(
            format!("{}.json", d["uid"].as_str().unwrap()),
            *name,
            "file named after its uid"
        );
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}");
        assert!(d["schemaVersion"].as_u64().is_some(), "{name}");
        // The variables, and the data source each data source variable selects by default.
        let vars = d["templating"]["list"].as_array().expect("templating");
        let mut var_names: Vec<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        let mut ds_vars = std::collections::BTreeMap::new();
        for v in vars {
            let vname = v["name"].as_str().unwrap().to_owned();
            assert!(
                !var_names.contains(&vname),
                "{name}: variable {vname} twice"
            );
            if v["type"] == "datasource" {
                let kind = v["query"].as_str().unwrap().to_owned();
                let default = v["current"]["value"].as_str().unwrap();
                assert_eq!(
                    provisioned.get(default),
                    Some(&kind),
                    "{name}: ${vname} defaults to {default}, not a provisioned {kind} data source"
                );
                ds_vars.insert(vname.clone(), kind);
            }
            var_names.push(vname);
        }
        // A data source reference names a provisioned uid or a data source variable of its type.
        let resolve = |ds: &Value, at: &str| -> String {
            let ty = ds["type"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {at}: data source without a type: {ds}"));
            let uid = ds["uid"].as_str().unwrap();
            let found = match uid.strip_prefix("${").and_then(|u| u.strip_suffix('}')) {
                Some(var) => ds_vars.get(var).cloned(),
                None => provisioned.get(uid).cloned(),
            };
            assert_eq!(
                found.as_deref(),
                Some(ty),
                "{name}: {at}: data source {ds} does not resolve"
            );
            ty.to_owned()
        };
        for v in vars.iter().filter(|v| v["type"] == "query") {
            resolve(&v["datasource"], &format!("variable {}", v["name"]));
            let q = v["query"].as_str().unwrap();
            for used in variables_used(q) {
                assert!(var_names.contains(&used), "{name}: {q} uses ${used}");
            }
        }
        // Panels: unique ids, inside the 24-column grid, none overlapping.
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() > 5, "{name}");
        let mut ids = Vec::new();
        let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            assert!(!title.is_empty(), "{name}: a panel without a title");
            ids.push(p["id"].as_u64().unwrap());
            let g = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
            assert!(w >= 1 && h >= 1 && x + w <= 24, "{name}: {title}: {g}");
            for (bx, by, bw, bh, other) in &boxes {
                let apart = x + w <= *bx || bx + bw <= x || y + h <= *by || by + bh <= y;
                assert!(apart, "{name}: {title} overlaps {other}");
            }
            boxes.push((x, y, w, h, title.clone()));
            if p["type"] == "row" {
                continue;
            }
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {title}: no description"
            );
            let kind = resolve(&p["datasource"], &title);
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title}: no query");
            let mut refs: Vec<&str> = targets
                .iter()
                .map(|t| t["refId"].as_str().unwrap())
                .collect();
            refs.sort();
            refs.dedup();
            assert_eq!(refs.len(), targets.len(), "{name}: {title}: refIds repeat");
            for t in targets {
                assert_eq!(resolve(&t["datasource"], &title), kind, "{name}: {title}");
                let q = match kind.as_str() {
                    "prometheus" | "loki" => t["expr"].as_str(),
                    "tempo" => t["query"].as_str(),
                    other => panic!("{name}: {title}: unexpected data source type {other}"),
                }
                .unwrap_or_else(|| panic!("{name}: {title}: empty query"));
                assert!(!q.trim().is_empty(), "{name}: {title}");
                for used in variables_used(q) {
                    assert!(
                        var_names.contains(&used),
                        "{name}: {title}: ${used} is not a variable of the dashboard"
                    );
                }
                if kind == "prometheus" {
                    // A metric of the agent's, a recording rule of prometheus/rules, or ALERTS.
                    assert!(
                        q.contains("blockwatch_")
                            || q.contains("blockwatch:")
                            || q.contains("ALERTS"),
                        "{q}"
                    );
                }
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "{name}: panel ids repeat");
    }
    // What the issue asks each dashboard to show.
    let titles = |uid: &str| -> String {
        let d = &boards.iter().find(|(_, d)| d["uid"] == uid).unwrap().1;
        d.to_string()
    };
    let providers = titles("blockwatch-providers");
    for needle in [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "error_type",
        "http_429",
        "blockwatch_ratelimit_throttled_total",
        "state-timeline",
        "blockwatch_provider_switches_total",
        "\"queryType\": \"traceql\"",
        "status = error",
    ] {
        assert!(
            providers.contains(needle) || providers.contains(&needle.replace(": ", ":")),
            "providers dashboard: no {needle}"
        );
    }
    let missed = titles("blockwatch-missed-blocks");
    for needle in [
        "sum by (reason)",
        "sum by (severity)",
        "blockwatch_missed_blocks_streak",
        "blockwatch_missed_block_recovery_duration_seconds_bucket",
        "\"type\":\"logs\"",
        "|= \\\"missed block\\\"",
    ] {
        assert!(
            missed.contains(needle),
            "missed-blocks dashboard: no {needle}"
        );
    }
    let overview = titles("blockwatch-overview");
    for needle in [
        "blockwatch_provider_head",
        "blockwatch_block_lag_seconds",
        "blockwatch_blocks_processed_total",
        "blockwatch_blocks_missed_total",
        "blockwatch_blocks_recovered_total",
        "blockwatch_reorgs_total",
        "ALERTS",
    ] {
        assert!(overview.contains(needle), "overview dashboard: no {needle}");
    }
}

/// compose.yaml's services.
fn compose() -> Yaml {
    load("compose.yaml")
}

/// The list `key` of service `s` as strings (empty when absent).
fn list(s: &Yaml, key: &str) -> Vec<String> {
    s[key]
        .as_vec()
        .map(|v| v.iter().map(|i| str_of(i, key).to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn compose_starts_the_stack_from_the_repository_files() {
    let c = compose();
    let services = c["services"].as_hash().expect("services");
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for want in [
        "anvil",
        "blockwatch",
        "demo",
        "otel-collector",
        "prometheus",
        "loki",
        "tempo",
        "grafana",
    ] {
        assert!(names.contains(&want), "compose.yaml: no {want} service");
    }
    for (name, s) in services {
        let name = name.as_str().unwrap();
        // Pinned images (the Collector's component names change between versions).
        let image = str_of(&s["image"], name);
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: image {image} is not pinned"));
        assert!(tag != "latest" && !tag.is_empty(), "{name}: {image}");
        if !s["build"].is_badvalue() {
            assert_eq!(image, "blockwatch:local", "{name}");
        }
        // Bind mounts name files of this repository.
        for v in list(s, "volumes") {
            if let Some(rel) = v.strip_prefix("./") {
                let src = rel.split(':').next().unwrap();
                assert!(root().join(src).exists(), "{name}: mounts missing {src}");
            }
        }
        // Secrets are declared at the top level, from files of this repository.
        for secret in list(s, "secrets") {
            let file = str_of(&c["secrets"][secret.as_str()]["file"], &secret);
            if let Some(rel) = file.strip_prefix("./") {
                assert!(
                    root().join(rel).is_file(),
                    "{name}: secret {secret} missing {rel}"
                );
            }
        }
        // Published ports are on loopback only.
        for p in list(s, "ports") {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{name}: port {p} is not on 127.0.0.1"
            );
        }
        // Dependencies are services.
        let deps: Vec<String> = match &s["depends_on"] {
            Yaml::Array(a) => a.iter().map(|d| d.as_str().unwrap().to_owned()).collect(),
            Yaml::Hash(h) => h.keys().map(|k| k.as_str().unwrap().to_owned()).collect(),
            _ => Vec::new(),
        };
        for d in deps {
            assert!(
                names.contains(&d.as_str()),
                "{name}: depends on unknown {d}"
            );
        }
    }
    let svc = |n: &str| &c["services"][n];
    let mounts = |n: &str| list(svc(n), "volumes");
    // The Collector image is the version its config was written for.
    let collector = read("otel-collector/config.yaml");
    let image = str_of(&svc("otel-collector")["image"], "image");
    assert!(
        collector.contains(image),
        "otel-collector/config.yaml is not written for {image}"
    );
    assert!(mounts("otel-collector")
        .iter()
        .any(|m| m.starts_with("./otel-collector/config.yaml:")));
    // Grafana gets the provisioning and the dashboards where the dashboard provider looks.
    let provider = load("grafana/provisioning/dashboards/blockwatch.yaml");
    let path = str_of(&provider["providers"][0]["options"]["path"], "path");
    let g = mounts("grafana");
    assert!(
        g.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro".to_owned()),
        "{g:?}"
    );
    assert!(
        g.contains(&format!("./grafana/dashboards:{path}:ro")),
        "{g:?}"
    );
    // Prometheus gets its config and the rules where the config loads them from.
    let p = mounts("prometheus");
    assert!(p
        .iter()
        .any(|m| m.starts_with("./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml")));
    assert!(p
        .iter()
        .any(|m| m.starts_with("./prometheus/rules:/etc/prometheus/rules")));
    let prom = load("prometheus/prometheus.yml");
    assert_eq!(list(&prom, "rule_files"), ["rules/*.yml"]);

    // Every address one component gives for another is a service listening there.
    let loki = load("compose/loki.yaml");
    let tempo = load("compose/tempo.yaml");
    let loki_port = loki["server"]["http_listen_port"].as_i64().unwrap() as u16;
    let tempo_port = tempo["server"]["http_listen_port"].as_i64().unwrap() as u16;
    let tempo_otlp = host_port(str_of(
        &tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "tempo otlp",
    ))
    .1;
    let cfg = load("otel-collector/config.yaml");
    let collector_grpc = host_port(str_of(
        &cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "otlp grpc",
    ))
    .1;
    assert_eq!(
        host_port(str_of(&cfg["exporters"]["otlp/tempo"]["endpoint"], "tempo")),
        ("tempo".to_owned(), tempo_otlp)
    );
    assert_eq!(
        host_port(str_of(
            &cfg["exporters"]["otlphttp/loki"]["endpoint"],
            "loki"
        )),
        ("loki".to_owned(), loki_port)
    );
    let ds = load("grafana/provisioning/datasources/blockwatch.yaml");
    for d in ds["datasources"].as_vec().unwrap() {
        let (host, port) = host_port(str_of(&d["url"], "url"));
        let want = match str_of(&d["type"], "type") {
            "prometheus" => 9090,
            "loki" => loki_port,
            "tempo" => tempo_port,
            other => panic!("unexpected data source {other}"),
        };
        assert!(names.contains(&host.as_str()), "{host} is not a service");
        assert_eq!(port, want, "{host}");
    }
    // The agents send OTLP to the Collector.
    let demo_env = format!("{:?}", svc("demo")["environment"]);
    assert!(
        demo_env.contains(&format!("http://otel-collector:{collector_grpc}")),
        "{demo_env}"
    );
    let agent: toml::Table = read("compose/blockwatch.toml").parse().unwrap();
    assert_eq!(
        agent["telemetry"]["otlp_endpoint"].as_str(),
        Some(format!("http://otel-collector:{collector_grpc}").as_str())
    );
    for p in agent["chains"][0]["providers"].as_array().unwrap() {
        let (host, _) = host_port(p["url"].as_str().unwrap());
        assert_eq!(host, "anvil");
    }
    // The Dockerfile builds with the project's toolchain.
    let toolchain: toml::Table = read("rust-toolchain.toml").parse().unwrap();
    let channel = toolchain["toolchain"]["channel"].as_str().unwrap();
    assert!(
        read("Dockerfile").contains(&format!("FROM rust:{channel}-")),
        "the Dockerfile's Rust is not {channel}"
    );
}

/// `file` (a config of this repository) as compose mounts it for `service`: each
/// `${file:/run/secrets/NAME}` it reads must be a secret of that service, and is pointed here at the
/// file compose.yaml gives for it. Returns the text and the secrets' contents (never printed).
fn with_compose_secrets(c: &Yaml, service: &str, file: &str) -> (String, Vec<String>) {
    let mut config = read(file);
    let mut contents = Vec::new();
    for secret in list(&c["services"][service], "secrets") {
        let from = str_of(&c["secrets"][secret.as_str()]["file"], &secret);
        let path = root().join(from.strip_prefix("./").unwrap_or(from));
        let reference = format!("${{file:/run/secrets/{secret}}}");
        if !config.contains(&reference) {
            continue;
        }
        contents.push(
            std::fs::read_to_string(&path)
                .unwrap()
                .trim_end()
                .to_owned(),
        );
        config = config.replace(&reference, &format!("${{file:{}}}", path.display()));
    }
    let unmounted: Vec<&str> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("${file:/run/secrets/"))
        .collect();
    assert!(
        unmounted.is_empty(),
        "{file}: secrets compose does not mount for {service}: {unmounted:?}"
    );
    assert!(!contents.is_empty(), "{file} reads no secret file");
    (config, contents)
}

/// Runs `blockwatch check-config` on `config` with the environment variables `env` (and no other
/// BLOCKWATCH_* one), asserts that it passes and prints none of `secrets`, and returns the effective
/// configuration it prints (TOML, secrets redacted).
fn check_config(config: &str, env: &[(&str, &str)], secrets: &[String]) -> toml::Table {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blockwatch.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"));
    cmd.args(["check-config", "--config"]).arg(&path);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("BLOCKWATCH_")) {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in secrets {
        assert!(
            !stdout.contains(secret.as_str()),
            "a secret is shown: {stdout}"
        );
    }
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("check-config printed no TOML: {e}\n{stdout}"))
}

/// compose/blockwatch.toml passes `check-config` with the secret files compose mounts for it: each
/// `${file:/run/secrets/NAME}` it reads is a secret of the blockwatch service, and is read here
/// from the file compose.yaml gives for it. Their content is never printed.
#[test]
fn the_compose_agent_config_is_valid() {
    let c = compose();
    let (config, contents) = with_compose_secrets(&c, "blockwatch", "compose/blockwatch.toml");
    check_config(&config, &[], &contents);
}

/// The cluster replicas in compose.yaml.
const REPLICAS: [&str; 2] = ["blockwatch-a", "blockwatch-b"];

/// The value of `name` in service `s`'s `environment` (a map).
fn env_of<'a>(s: &'a Yaml, name: &str) -> Option<&'a str> {
    s["environment"][name].as_str()
}

/// compose.yaml's cluster mode: a pinned PostgreSQL, healthy before the replicas start, its password
/// from a secret file; two replicas of the single agent's image with their own instance names, the
/// cluster config, the connection string from a secret file that agrees with the server's password,
/// their ports on 127.0.0.1; and Prometheus scrapes them for the cluster series.
#[test]
fn compose_runs_postgres_and_two_cluster_replicas() {
    let c = compose();
    let svc = |n: &str| {
        let s = &c["services"][n];
        assert!(!s.is_badvalue(), "compose.yaml: no {n} service");
        s
    };

    // PostgreSQL: pinned to a minor release of 16, its data in a named volume, a TCP readiness check.
    let pg = svc("postgres");
    let image = str_of(&pg["image"], "postgres image");
    let minor = image
        .strip_prefix("postgres:16.")
        .unwrap_or_else(|| panic!("postgres image {image} is not postgres:16.<minor>"));
    assert!(
        minor
            .split('-')
            .next()
            .is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit())),
        "postgres image {image} is not pinned to a minor release"
    );
    let declared_volumes: Vec<&str> = c["volumes"]
        .as_hash()
        .expect("volumes")
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    let data = list(pg, "volumes")
        .into_iter()
        .find(|v| v.ends_with(":/var/lib/postgresql/data"))
        .expect("postgres: no volume at /var/lib/postgresql/data");
    let volume = data.split(':').next().unwrap();
    assert!(
        declared_volumes.contains(&volume),
        "postgres: {volume} is not a named volume"
    );
    let check = list(&pg["healthcheck"], "test");
    assert!(
        check.iter().any(|a| a.contains("pg_isready")),
        "postgres: healthcheck {check:?} is not pg_isready"
    );
    assert!(
        check.iter().any(|a| a == "-h"),
        "postgres: pg_isready on the Unix socket reports ready during initialisation: {check:?}"
    );
    // The password comes from a secret file of the repository, not from the environment.
    assert!(
        env_of(pg, "POSTGRES_PASSWORD").is_none(),
        "postgres: a literal POSTGRES_PASSWORD"
    );
    let password_file = env_of(pg, "POSTGRES_PASSWORD_FILE").expect("POSTGRES_PASSWORD_FILE");
    let password_secret = password_file
        .strip_prefix("/run/secrets/")
        .unwrap_or_else(|| panic!("POSTGRES_PASSWORD_FILE {password_file} is not a secret"));
    assert!(
        list(pg, "secrets").contains(&password_secret.to_owned()),
        "postgres does not mount the secret {password_secret}"
    );
    let secret_file = |name: &str| {
        let file = str_of(&c["secrets"][name]["file"], name);
        let path = root().join(file.strip_prefix("./").unwrap_or(file));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("secret {name}: {}: {e}", path.display()));
        assert!(!text.trim().is_empty(), "secret {name} is empty");
        (file.to_owned(), text.trim_end().to_owned())
    };
    let (file, password) = secret_file(password_secret);
    assert!(
        file.contains(".placeholder"),
        "the committed password {file} must be a placeholder"
    );
    let user = env_of(pg, "POSTGRES_USER").expect("POSTGRES_USER");
    let db = env_of(pg, "POSTGRES_DB").expect("POSTGRES_DB");

    // The replicas: the single agent's image and command, the cluster config, their own names.
    let single = svc("blockwatch");
    let command = list(single, "command");
    let config_at = command
        .iter()
        .position(|a| a == "--config")
        .map(|i| command[i + 1].clone())
        .expect("blockwatch: no --config");
    let cluster_config: toml::Table = read("compose/blockwatch-cluster.toml").parse().unwrap();
    let listen_port = host_port(
        cluster_config["agent"]["http_listen"]
            .as_str()
            .expect("agent.http_listen"),
    )
    .1;
    let mut instances = Vec::new();
    let mut urls = Vec::new();
    for name in REPLICAS {
        let s = svc(name);
        assert_eq!(
            str_of(&s["image"], name),
            str_of(&single["image"], "blockwatch"),
            "{name}: not the blockwatch image"
        );
        assert_eq!(list(s, "command"), command, "{name}");
        assert!(
            list(s, "volumes")
                .contains(&format!("./compose/blockwatch-cluster.toml:{config_at}:ro")),
            "{name} does not mount compose/blockwatch-cluster.toml at {config_at}"
        );
        for (dep, condition) in [
            ("postgres", "service_healthy"),
            ("anvil", "service_healthy"),
        ] {
            assert_eq!(
                s["depends_on"][dep]["condition"].as_str(),
                Some(condition),
                "{name}: depends_on {dep}"
            );
        }
        instances.push(
            env_of(s, "BLOCKWATCH_INSTANCE")
                .unwrap_or_else(|| panic!("{name}: no BLOCKWATCH_INSTANCE"))
                .to_owned(),
        );
        let ports = list(s, "ports");
        assert_eq!(ports.len(), 1, "{name}: {ports:?}");
        let container_port: u16 = ports[0].rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(
            container_port, listen_port,
            "{name}: publishes another port"
        );
        // The connection string: a secret file whose server, user, database and password are the
        // postgres service's.
        let url_secret = list(s, "secrets")
            .into_iter()
            .find(|sec| secret_file(sec).1.starts_with("postgres://"))
            .unwrap_or_else(|| panic!("{name}: no secret holds a postgres:// URL"));
        let (url_file, url) = secret_file(&url_secret);
        assert!(url_file.contains(".placeholder"), "{url_file}");
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.host_str(), Some("postgres"), "{url_file}: host");
        assert_eq!(parsed.username(), user, "{url_file}: user");
        assert_eq!(parsed.path(), format!("/{db}"), "{url_file}: database");
        assert_eq!(
            blockwatch::config::password_of(&url).as_deref(),
            Some(password.as_str()),
            "{url_file} does not carry the password of {file}"
        );
        urls.push(url_secret);
    }
    instances.sort();
    instances.dedup();
    assert_eq!(instances.len(), REPLICAS.len(), "instance names repeat");
    assert!(instances.iter().all(|i| !i.is_empty()));
    // Every host port is published once.
    let mut host_ports: Vec<String> = c["services"]
        .as_hash()
        .unwrap()
        .values()
        .flat_map(|s| list(s, "ports"))
        .map(|p| p.rsplit_once(':').unwrap().0.to_owned())
        .collect();
    let n = host_ports.len();
    host_ports.sort();
    host_ports.dedup();
    assert_eq!(host_ports.len(), n, "a host port is published twice");

    // Prometheus scrapes each replica's /metrics for the cluster series, and only there.
    let prom = load("prometheus/prometheus.yml");
    let jobs = prom["scrape_configs"].as_vec().unwrap();
    let targets = |j: &Yaml| -> Vec<String> {
        j["static_configs"]
            .as_vec()
            .unwrap()
            .iter()
            .flat_map(|s| list(s, "targets"))
            .collect()
    };
    let rule = |j: &Yaml, action: &str| -> Option<String> {
        j["metric_relabel_configs"].as_vec()?.iter().find_map(|r| {
            (r["action"].as_str() == Some(action) && list(r, "source_labels") == ["__name__"])
                .then(|| str_of(&r["regex"], "regex").to_owned())
        })
    };
    let covers = |regex: &str| {
        let prefix = regex
            .strip_suffix(".*")
            .unwrap_or_else(|| panic!("{regex}: not a prefix"));
        "blockwatch_cluster_leader".starts_with(prefix)
    };
    let cluster_job = jobs
        .iter()
        .find(|j| targets(j).contains(&format!("{}:{listen_port}", REPLICAS[0])))
        .expect("Prometheus does not scrape the replicas");
    for name in REPLICAS {
        assert!(
            targets(cluster_job).contains(&format!("{name}:{listen_port}")),
            "Prometheus does not scrape {name}"
        );
    }
    assert!(rule(cluster_job, "keep").is_some_and(|r| covers(&r)));
    let collector_job = jobs
        .iter()
        .find(|j| targets(j).iter().any(|t| t.starts_with("otel-collector:")))
        .unwrap();
    assert!(
        rule(collector_job, "drop").is_some_and(|r| covers(&r)),
        "the cluster series would come twice: through the Collector and from the replicas"
    );
}

/// compose/blockwatch-cluster.toml passes `check-config` for each replica, with the secret files and
/// the instance name compose gives it: a PostgreSQL store, blocks written to it, this replica's name.
#[test]
fn the_compose_cluster_config_is_valid_for_each_replica() {
    let c = compose();
    let raw: toml::Table = read("compose/blockwatch-cluster.toml").parse().unwrap();
    let single: toml::Table = read("compose/blockwatch.toml").parse().unwrap();
    assert_eq!(
        raw["chains"], single["chains"],
        "the replicas follow another chain than the single agent"
    );
    for name in REPLICAS {
        let (config, contents) = with_compose_secrets(&c, name, "compose/blockwatch-cluster.toml");
        assert!(
            contents.iter().any(|s| s.starts_with("postgres://")),
            "{name}: the PostgreSQL URL is not read from a secret file"
        );
        let instance = env_of(&c["services"][name], "BLOCKWATCH_INSTANCE").unwrap();
        let effective = check_config(&config, &[("BLOCKWATCH_INSTANCE", instance)], &contents);
        let cluster = &effective["cluster"];
        assert_eq!(cluster["store"].as_str(), Some("postgres"), "{name}");
        assert_eq!(cluster["instance"].as_str(), Some(instance), "{name}");
        assert_eq!(
            effective["agent"]["block_output"].as_str(),
            Some("postgres"),
            "{name}"
        );
        assert_eq!(
            effective["agent"]["http_listen"].as_str(),
            Some("0.0.0.0:9464"),
            "{name}: the API must listen on every interface inside the container"
        );
    }
}

/// Every manifest of deploy/kubernetes: file name and documents.
fn manifests() -> Vec<(String, Vec<Yaml>)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let docs = YamlLoader::load_from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, docs)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A label map (`matchLabels`, `labels`, `selector`) as pairs.
fn labels(y: &Yaml) -> std::collections::BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (str_of(k, "label").to_owned(), str_of(v, "label").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The environment variables `config` refers to with `${NAME}` outside comments.
fn env_references(config: &str) -> Vec<String> {
    let mut out: Vec<String> = config
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(variables_used)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The password written in `token`: a PostgreSQL URL's (`postgres://user:PASSWORD@…`, whether or
/// not the rest parses) or a `password=VALUE`.
fn written_password(token: &str) -> Option<String> {
    let p = match token.split_once("://") {
        Some((_, rest)) => {
            let authority = rest.split(['/', '?']).next().unwrap();
            let (userinfo, _) = authority.rsplit_once('@')?;
            userinfo.split_once(':')?.1
        }
        None => token.strip_prefix("password=")?,
    };
    (!p.is_empty()).then(|| p.to_owned())
}

/// deploy/kubernetes: the Deployment runs two replicas of the agent with the ConfigMap's config, the
/// PostgreSQL URL from a Secret (none committed), probes that cannot restart a replica for a chain's
/// health, a hardened container; the Service, the PodMonitor and the PodDisruptionBudget select its
/// pods and name its port; the ConfigMap's config is valid.
#[test]
fn the_kubernetes_manifests_run_two_replicas_on_postgres() {
    let files = manifests();
    let mut by_kind: std::collections::BTreeMap<String, Vec<Yaml>> = Default::default();
    for (name, docs) in &files {
        assert!(!docs.is_empty(), "{name}: empty");
        for d in docs {
            let kind = str_of(&d["kind"], name).to_owned();
            assert!(d["apiVersion"].as_str().is_some(), "{name}: no apiVersion");
            if kind != "Kustomization" {
                assert!(d["metadata"]["name"].as_str().is_some(), "{name}: no name");
            }
            assert_ne!(kind, "Secret", "{name}: a Secret is committed");
            by_kind.entry(kind).or_default().push(d.clone());
        }
    }
    let one = |kind: &str| -> &Yaml {
        let docs = by_kind
            .get(kind)
            .unwrap_or_else(|| panic!("deploy/kubernetes: no {kind}"));
        assert_eq!(docs.len(), 1, "one {kind}");
        &docs[0]
    };
    // kustomization.yaml lists every other manifest, and only files that exist.
    let mut listed = list(one("Kustomization"), "resources");
    listed.sort();
    let others: Vec<String> = files
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, others, "kustomization.yaml resources");

    // The Deployment.
    let dep = one("Deployment");
    assert_eq!(dep["apiVersion"].as_str(), Some("apps/v1"));
    assert_eq!(dep["spec"]["replicas"].as_i64(), Some(2), "replicas");
    let pod = &dep["spec"]["template"];
    let pod_labels = labels(&pod["metadata"]["labels"]);
    let selects_pods = |selector: &Yaml, what: &str| {
        let sel = labels(selector);
        assert!(!sel.is_empty(), "{what}: no selector");
        for (k, v) in &sel {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{what} selects {k}={v}, which the Deployment's pods do not carry"
            );
        }
    };
    selects_pods(&dep["spec"]["selector"]["matchLabels"], "the Deployment");
    let spec = &pod["spec"];
    assert!(
        spec["terminationGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 10),
        "terminationGracePeriodSeconds"
    );
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let anti = spec["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_vec()
        .expect("a preferred pod anti-affinity");
    assert!(!anti.is_empty());
    for term in anti {
        let term = &term["podAffinityTerm"];
        assert_eq!(term["topologyKey"].as_str(), Some("kubernetes.io/hostname"));
        selects_pods(&term["labelSelector"]["matchLabels"], "the anti-affinity");
    }
    let container = spec["containers"]
        .as_vec()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("blockwatch"))
        .expect("no container named blockwatch");
    let image = str_of(&container["image"], "image");
    let tag = image
        .strip_prefix("ghcr.io/blockwatch/blockwatch:")
        .unwrap_or_else(|| panic!("image {image}"));
    assert!(!tag.is_empty() && tag != "latest", "image {image}");
    let ports: Vec<(String, i64)> = container["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "port name").to_owned(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    let port_names: Vec<&str> = ports.iter().map(|(n, _)| n.as_str()).collect();
    let http_port = ports
        .iter()
        .find(|(n, _)| n == "http")
        .expect("no container port named http")
        .1;
    assert_eq!(http_port, 9464);
    let probe = |kind: &str| &container[kind]["httpGet"];
    assert_eq!(probe("readinessProbe")["path"].as_str(), Some("/ready"));
    assert_eq!(probe("readinessProbe")["port"].as_str(), Some("http"));
    // Liveness must not depend on the chains: /health is 503 while one is unhealthy.
    let live = &container["livenessProbe"];
    assert!(!live.is_badvalue(), "no liveness probe");
    let live_port = live["httpGet"]["port"]
        .as_str()
        .or(live["tcpSocket"]["port"].as_str())
        .expect("liveness: httpGet or tcpSocket on a named port");
    assert!(
        port_names.contains(&live_port),
        "liveness on port {live_port}"
    );
    if let Some(path) = live["httpGet"]["path"].as_str() {
        assert!(
            !["/health", "/ready"].contains(&path),
            "liveness on {path} restarts replicas for a chain's health"
        );
    }
    let env = container["env"].as_vec().expect("env");
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    let pg_url = var("BLOCKWATCH_PG_URL");
    assert!(
        pg_url["value"].is_badvalue(),
        "BLOCKWATCH_PG_URL has a literal value"
    );
    let secret_ref = &pg_url["valueFrom"]["secretKeyRef"];
    assert_eq!(secret_ref["name"].as_str(), Some("blockwatch-postgres"));
    assert_eq!(secret_ref["key"].as_str(), Some("url"));
    assert_eq!(
        var("BLOCKWATCH_INSTANCE")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    let env_names: Vec<&str> = env.iter().map(|e| str_of(&e["name"], "env")).collect();
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(list(&sc["capabilities"], "drop"), ["ALL"]);
    for side in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(
                !container["resources"][side][r].is_badvalue(),
                "resources.{side}.{r}"
            );
        }
    }

    // The config: the ConfigMap's key, mounted where `--config` reads it.
    let cm = one("ConfigMap");
    let args = list(container, "args");
    let config_at = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| args[i + 1].clone())
        .expect("no --config");
    let (dir, key) = config_at.rsplit_once('/').unwrap();
    let volume = spec["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == cm["metadata"]["name"].as_str())
        .expect("the ConfigMap is not a volume");
    let volume_name = str_of(&volume["name"], "volume");
    assert!(
        container["volumeMounts"]
            .as_vec()
            .expect("volumeMounts")
            .iter()
            .any(
                |m| m["name"].as_str() == Some(volume_name) && m["mountPath"].as_str() == Some(dir)
            ),
        "the ConfigMap is not mounted at {dir}"
    );
    let config = str_of(&cm["data"][key], key);
    // Every variable the config reads is set in the container.
    let used = env_references(config);
    assert!(used.contains(&"BLOCKWATCH_PG_URL".to_owned()), "{used:?}");
    for name in &used {
        assert!(
            env_names.contains(&name.as_str()),
            "the config reads ${{{name}}}, which the container does not set"
        );
    }
    let raw: toml::Table = config.parse().unwrap();
    assert_eq!(raw["cluster"]["url"].as_str(), Some("${BLOCKWATCH_PG_URL}"));
    assert_eq!(
        raw["cluster"]["instance"].as_str(),
        Some("${BLOCKWATCH_INSTANCE}")
    );
    let dummy_password = "dummy-password-for-the-check";
    let dummy_url = format!(
        "postgres://blockwatch:{dummy_password}@postgres.example:5432/blockwatch?sslmode=require"
    );
    let effective = check_config(
        config,
        &[
            ("BLOCKWATCH_PG_URL", &dummy_url),
            ("BLOCKWATCH_INSTANCE", "blockwatch-6d5f7c9b8-x2k4q"),
        ],
        &[dummy_password.to_owned()],
    );
    assert_eq!(effective["cluster"]["store"].as_str(), Some("postgres"));
    assert_eq!(
        effective["agent"]["block_output"].as_str(),
        Some("postgres")
    );
    let listen = effective["agent"]["http_listen"].as_str().unwrap();
    assert_eq!(
        listen,
        format!("0.0.0.0:{http_port}"),
        "the API must listen on every interface of the pod, on port http"
    );

    // The Service, the PodMonitor and the PodDisruptionBudget select the pods and name their port.
    let svc = one("Service");
    assert_eq!(svc["spec"]["type"].as_str(), Some("ClusterIP"));
    selects_pods(&svc["spec"]["selector"], "the Service");
    let svc_ports = svc["spec"]["ports"].as_vec().expect("Service ports");
    assert!(!svc_ports.is_empty());
    for p in svc_ports {
        let target = str_of(&p["targetPort"], "targetPort");
        assert!(
            port_names.contains(&target),
            "Service targets port {target}"
        );
    }
    let pm = one("PodMonitor");
    assert_eq!(pm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    selects_pods(&pm["spec"]["selector"]["matchLabels"], "the PodMonitor");
    let endpoints = pm["spec"]["podMetricsEndpoints"]
        .as_vec()
        .expect("podMetricsEndpoints");
    assert!(!endpoints.is_empty());
    for e in endpoints {
        let port = str_of(&e["port"], "port");
        assert!(port_names.contains(&port), "PodMonitor scrapes port {port}");
        assert_eq!(e["path"].as_str(), Some("/metrics"));
        assert_eq!(e["interval"].as_str(), Some("15s"));
    }
    let pdb = one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"].as_i64(), Some(1));
    selects_pods(
        &pdb["spec"]["selector"]["matchLabels"],
        "the PodDisruptionBudget",
    );

    // No password in deploy/: every PostgreSQL URL or password= shows a <placeholder>.
    let mut found = 0;
    for (name, _) in &files {
        let text = read(&format!("deploy/kubernetes/{name}"));
        for (at, _) in text
            .match_indices("postgres://")
            .chain(text.match_indices("postgresql://"))
            .chain(text.match_indices("password="))
        {
            let token: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '`'))
                .collect();
            if let Some(p) = written_password(&token) {
                found += 1;
                assert!(
                    p.starts_with('<') && p.ends_with('>'),
                    "{name}: a password in {token}"
                );
            }
        }
    }
    assert!(
        found > 0,
        "deploy/ shows no example of the connection string"
    );
}
