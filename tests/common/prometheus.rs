//! A real Prometheus (Debian's, installed into `.tools` by `make tools`) on loopback, scraping
//! given targets every second, killed when dropped.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use serde_json::Value;

/// A running Prometheus and its API's base URL.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    client: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus in `dir` scraping `targets` (`host:port`, path `/metrics`) every second,
    /// with exemplar storage, loading the rules of `rule_files` (globs) if any.
    pub fn start(dir: &Path, targets: &[String], rule_files: &[String]) -> Prometheus {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let port = super::free_port();
        let config = dir.join("prometheus.yml");
        let quoted = |v: &[String]| {
            v.iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nscrape_configs:\n  - job_name: blockwatch\n    static_configs:\n      - targets: [{}]\n",
                quoted(rule_files),
                quoted(targets),
            ),
        )
        .unwrap();
        let bin = root.join(".tools/bin/prometheus");
        assert!(bin.exists(), "{} missing: run `make tools`", bin.display());
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// `GET /api/v1/<api>` with `params`: the `data` of the answer, or the error Prometheus gave
    /// (or that it is not up yet).
    async fn api(&self, api: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let resp = self
            .client
            .get(format!("{}/api/v1/{api}", self.base))
            .query(params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"].clone())
    }

    /// An instant query's result list.
    pub async fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", query)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The exemplars stored for the series of `query` over the last hour, flattened: each with its
    /// series' labels (`seriesLabels`), its own `labels`, `value` and `timestamp`.
    pub async fn exemplars(&self, query: &str) -> Result<Vec<Value>, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (start, end) = ((now - 3600).to_string(), (now + 60).to_string());
        let data = self
            .api(
                "query_exemplars",
                &[("query", query), ("start", &start), ("end", &end)],
            )
            .await?;
        let mut out = Vec::new();
        for series in data.as_array().cloned().unwrap_or_default() {
            for e in series["exemplars"].as_array().cloned().unwrap_or_default() {
                let mut e = e.clone();
                e["seriesLabels"] = series["seriesLabels"].clone();
                out.push(e);
            }
        }
        Ok(out)
    }
}
