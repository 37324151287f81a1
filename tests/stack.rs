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
//!   one serves; the agent's config is valid with the secret files compose mounts for it.

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

/// compose/blockwatch.toml passes `check-config` with the secret files compose mounts for it: each
/// `${file:/run/secrets/NAME}` it reads is a secret of the blockwatch service, and is read here
/// from the file compose.yaml gives for it. Their content is never printed.
#[test]
fn the_compose_agent_config_is_valid() {
    let c = compose();
    let mut config = read("compose/blockwatch.toml");
    let mut contents = Vec::new();
    for secret in list(&c["services"]["blockwatch"], "secrets") {
        let file = str_of(&c["secrets"][secret.as_str()]["file"], &secret);
        let path = root().join(file.strip_prefix("./").unwrap_or(file));
        contents.push(
            std::fs::read_to_string(&path)
                .unwrap()
                .trim_end()
                .to_owned(),
        );
        config = config.replace(
            &format!("${{file:/run/secrets/{secret}}}"),
            &format!("${{file:{}}}", path.display()),
        );
    }
    let unmounted: Vec<&str> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("${file:/run/secrets/"))
        .collect();
    assert!(
        unmounted.is_empty(),
        "secrets compose does not mount for blockwatch: {unmounted:?}"
    );
    assert!(
        !contents.is_empty(),
        "compose/blockwatch.toml reads no secret file"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blockwatch.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for content in contents {
        assert!(!stdout.contains(&content), "{stdout}");
    }
}
