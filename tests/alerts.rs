//! Alerts on devnet, delivered to real HTTP servers on loopback: tiers, thresholds, throttling and
//! de-duplication, resolution, a channel that is down, and no secret in any message.

mod common;

use std::time::{Duration, Instant};

use common::{webhook::*, *};
use serde_json::{json, Value};

const CATCH_UP: Duration = Duration::from_secs(30);
const TOKEN: &str = "T0KENabcdef123456789";
const HEADER_SECRET: &str = "hdr-S3cret-value-42";

/// Waits until `path` on `r` got an alert of `rule` with `tier` and `status` ("" matches any).
async fn wait_for_alert(r: &Receiver, path: &str, rule: &str, tier: &str, status: &str) {
    let what = format!("{rule} {tier} {status} on {path}");
    wait_for(CATCH_UP, &what, || {
        let found = webhook_alerts(r, path).iter().any(|(ru, t, s)| {
            ru == rule && (tier.is_empty() || t == tier) && (status.is_empty() || s == status)
        });
        async move { found.then_some(()) }
    })
    .await;
}

/// The `throttle` of [`alerts_config`].
const THROTTLE: Duration = Duration::from_secs(60);
/// Provider states that make the `providers_down` rule count a provider as down.
const DOWN: [&str; 4] = ["unreachable", "circuit_open", "wrong_chain", "inconsistent"];

/// The `providers_down` messages `path` on `r` got, in the order they came.
fn providers_down_posts(r: &Receiver, path: &str) -> Vec<Post> {
    r.posts(path)
        .into_iter()
        .filter(|p| p.body["rule"] == "providers_down")
        .collect()
}

/// `provider`'s state on `/status` (chain anvil).
async fn provider_state(api: &str, provider: &str) -> Option<String> {
    let (_, body) = http_get(&format!("{api}/status")).await;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["chains"][0]["providers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == provider)?["state"]
        .as_str()
        .map(str::to_owned)
}

/// `Some` when the alert rules' last evaluation found chain anvil in `state`: the
/// `blockwatch_chain_state` gauge is exported by the rules' evaluation only, once a second.
async fn rules_see(api: &str, state: &str) -> Option<()> {
    let (_, m) = http_get(&format!("{api}/metrics")).await;
    (metric_sum(
        &m,
        "blockwatch_chain_state",
        &[("chain", "anvil"), ("state", state)],
    ) == 1.0)
        .then_some(())
}

/// Takes p0 down, when the alert rules see every provider alive, and waits until the agent has
/// seen it down (its state on `/status`) and the rules have evaluated the chain with it down (the
/// verdict they export went from healthy to degraded, p0 being the only change). Returns when.
async fn p0_down_and_seen(devnet: &DevnetProc, api: &str) -> Instant {
    wait_for(
        CATCH_UP,
        "the alert rules to see every provider alive",
        || rules_see(api, "healthy"),
    )
    .await;
    devnet.set_fault("p0", json!({"kind": "down"})).await;
    wait_for(
        CATCH_UP,
        "the agent and its alert rules to see p0 down",
        move || async move {
            let state = provider_state(api, "p0").await?;
            DOWN.contains(&state.as_str()).then_some(())?;
            rules_see(api, "degraded").await?;
            Some(Instant::now())
        },
    )
    .await
}

/// Brings p0 back and waits until the alert rules see every provider alive again.
async fn p0_back_and_seen(devnet: &DevnetProc, api: &str) {
    devnet.clear_faults().await;
    wait_for(CATCH_UP, "the alert rules to see p0 alive again", || {
        rules_see(api, "healthy")
    })
    .await;
}

fn alerts_config(devnet: &DevnetProc, channels: &str) -> String {
    devnet.agent_config("max_block_delay = \"1s\"").replace(
        "[pool]",
        &format!(
            r#"[alerts]
no_new_block_after = "3s"
consecutive_failures = 3
max_switches = {{ count = 1, window = "15s" }}
throttle = "1m"
dashboard_url = "https://grafana.example.com"
delivery_retries = 2
delivery_backoff = "200ms"
{channels}

[pool]
# Recovered providers leave `degraded` and open circuits close within seconds.
score_window = "5s"
circuit_open_for = "2s""#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_every_channel_by_tier_once_and_resolve() {
    let receiver = Receiver::start(0).await;
    let channels = format!(
        r#"
  [[alerts.channels]]
  kind = "webhook"
  url = "{webhook}"
  headers = {{ "authorization" = "Bearer {HEADER_SECRET}" }}

  [[alerts.channels]]
  kind = "slack"
  url = "{slack}"
  min_severity = "critical"

  [[alerts.channels]]
  kind = "discord"
  url = "{discord}"

  [[alerts.channels]]
  kind = "file"
  path = "alerts.jsonl"
"#,
        webhook = receiver.url(&format!("/hook?token={TOKEN}")),
        slack = receiver.url(&format!("/services/T0123ABC/B0456DEF/{TOKEN}")),
        discord = receiver.url(&format!("/api/webhooks/123456789012/{TOKEN}")),
    );
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(move |devnet| alerts_config(devnet, &channels))
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    // The rules have evaluated the healthy chain (at least once): nothing to send.
    let api = agent.api_url().await;
    wait_for(CATCH_UP, "the alert rules to see the chain healthy", || {
        rules_see(&api, "healthy")
    })
    .await;
    assert!(
        receiver.posts("/hook").is_empty(),
        "no alert while healthy: {:?}",
        receiver.posts("/hook")
    );

    // One provider down: a warning (webhook, discord; not slack, which wants critical).
    devnet.set_fault("p0", json!({"kind": "down"})).await;
    wait_for_alert(&receiver, "/hook", "providers_down", "warning", "firing").await;
    // Its failed calls: in a row, and as a share of its calls.
    wait_for_alert(
        &receiver,
        "/hook",
        "consecutive_failures",
        "warning",
        "firing",
    )
    .await;
    wait_for_alert(&receiver, "/hook", "error_rate", "warning", "firing").await;
    // Two down: escalated to critical at once, and now slack gets it too.
    devnet.set_fault("p1", json!({"kind": "down"})).await;
    wait_for_alert(&receiver, "/hook", "providers_down", "critical", "").await;
    wait_for(CATCH_UP, "the critical alert on slack", || {
        let n = receiver
            .posts(&format!("/services/T0123ABC/B0456DEF/{TOKEN}"))
            .len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    // The stream goes on through p2 while alerts are delivered.
    let head = devnet.head().await;
    agent.wait_for_block(head + 3, CATCH_UP).await;
    // All down: no provider left, and the chain stalls.
    devnet.set_fault("p2", json!({"kind": "down"})).await;
    wait_for_alert(&receiver, "/hook", "chain_stalled", "emergency", "").await;
    wait_for_alert(&receiver, "/hook", "providers_down", "emergency", "").await;
    devnet.clear_faults().await;
    wait_for_alert(&receiver, "/hook", "chain_stalled", "", "resolved").await;
    wait_for_alert(&receiver, "/hook", "providers_down", "", "resolved").await;
    settle_and_check(agent, devnet).await;
    // The outage made a streak of missed blocks, and the failovers more switches than allowed.
    wait_for_alert(&receiver, "/hook", "missed_blocks", "critical", "").await;
    wait_for_alert(&receiver, "/hook", "provider_switches", "warning", "").await;
    // Throttled: p0 flapping within the minute after the last providers_down message (the
    // resolution of the outage) sends nothing new. In each window the agent sees p0 down and its
    // alert rules evaluate it (the verdict they export turns degraded), so a condition to send was
    // there each time.
    let down_posts = providers_down_posts(&receiver, "/hook");
    let last_message = down_posts.iter().map(|p| p.at).max().unwrap();
    for _ in 0..2 {
        let seen = p0_down_and_seen(devnet, &api).await;
        assert!(
            seen.duration_since(last_message) < THROTTLE - Duration::from_secs(5),
            "inconclusive: p0 was seen down {:?} after the last message, not well within the {THROTTLE:?} throttle",
            seen.duration_since(last_message)
        );
        p0_back_and_seen(devnet, &api).await;
    }
    let after = providers_down_posts(&receiver, "/hook");
    assert_eq!(
        after.len(),
        down_posts.len(),
        "a flapping provider was not throttled: {:#?}",
        &after[down_posts.len()..]
    );
    settle_and_check(agent, devnet).await;
    for rule in ["missed_blocks", "provider_switches"] {
        wait_for_alert(&receiver, "/hook", rule, "", "resolved").await;
    }

    // De-duplicated: each (rule, target, tier, status) once; every firing alert resolved once.
    let hook = webhook_alerts(&receiver, "/hook");
    let keys: Vec<String> = receiver
        .posts("/hook")
        .iter()
        .map(|p| {
            let b = &p.body;
            format!(
                "{} {} {} {} {}",
                b["rule"], b["chain"], b["provider"], b["tier"], b["status"]
            )
        })
        .collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(keys.len(), unique.len(), "a message repeated: {keys:#?}");
    let tiers: Vec<&str> = hook
        .iter()
        .filter(|(r, _, s)| r == "providers_down" && s == "firing")
        .map(|(_, t, _)| t.as_str())
        .collect();
    assert_eq!(tiers, ["warning", "critical", "emergency"], "{hook:#?}");
    let targets = |status: &str| {
        let mut v: Vec<String> = receiver
            .posts("/hook")
            .iter()
            .filter(|p| p.body["status"] == status)
            .map(|p| format!("{} {}", p.body["rule"], p.body["provider"]))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(
        targets("firing"),
        targets("resolved"),
        "every alert resolved: {keys:#?}"
    );
    assert_eq!(
        hook.iter().filter(|(_, _, s)| s == "resolved").count(),
        targets("resolved").len(),
        "one resolution each: {keys:#?}"
    );
    // The webhook got its header; its text says what, where, since when, what the agent did.
    let first = &receiver.posts("/hook")[0];
    assert_eq!(
        first.headers["authorization"],
        format!("Bearer {HEADER_SECRET}").as_str()
    );
    let text = first.body["text"].as_str().unwrap();
    for part in [
        "What: ",
        "Where: chain anvil",
        "Since: ",
        "Agent: ",
        "Dashboard: https://grafana.example.com/d/",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // Slack: only critical and worse (and their resolutions), in Slack's payload.
    let slack = receiver.posts(&format!("/services/T0123ABC/B0456DEF/{TOKEN}"));
    assert!(slack
        .iter()
        .all(|p| p.body["text"].as_str().unwrap().contains("CRITICAL")
            || p.body["text"].as_str().unwrap().contains("EMERGENCY")
            || p.body["text"].as_str().unwrap().contains("RESOLVED")));
    assert_eq!(slack[0].body["blocks"][1]["text"]["type"], "mrkdwn");
    // Discord: embeds with the dashboard link.
    let discord = receiver.posts(&format!("/api/webhooks/123456789012/{TOKEN}"));
    assert_eq!(discord.len(), hook.len(), "discord takes every tier");
    let embed = &discord[0].body["embeds"][0];
    assert!(embed["title"].as_str().unwrap().starts_with("[WARNING]"));
    assert!(embed["url"]
        .as_str()
        .unwrap()
        .starts_with("https://grafana.example.com/d/"));
    // The file channel has the same messages as the webhook, as JSON lines.
    let file = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert_eq!(file.lines().count(), hook.len());

    // No secret in any message, the log or /metrics.
    let (_, metrics) = http_get(&format!("{}/metrics", agent.api_url().await)).await;
    let everything = format!(
        "{:?}{file}{}{metrics}",
        receiver
            .all()
            .into_iter()
            .map(|p| p.body)
            .collect::<Vec<_>>(),
        agent.log()
    );
    assert!(!everything.contains(TOKEN), "the channel token leaked");
    assert!(
        !everything.contains(HEADER_SECRET),
        "the header secret leaked"
    );
    // Delivered messages are counted per channel.
    assert!(
        metric_sum(
            &metrics,
            "blockwatch_alerts_sent_total",
            &[("channel", "webhook")]
        ) >= 8.0
    );
    assert_eq!(
        metric_sum(&metrics, "blockwatch_alerts_failed_total", &[]),
        0.0
    );
    // Every alert is a log record.
    assert!(agent.log().contains(r#""message":"alert""#));
    scenario.finish();
}

/// The throttle both ways: a condition back within `throttle` of its rule's last message (its
/// resolution) is held back while the window lasts, and sent once the window has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_back_within_the_throttle_is_sent_once_the_window_has_passed() {
    const WINDOW: Duration = Duration::from_secs(8);
    let receiver = Receiver::start(0).await;
    let channels = format!(
        "\n  [[alerts.channels]]\n  kind = \"webhook\"\n  url = \"{}\"\n",
        receiver.url("/hook")
    );
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(move |devnet| {
            alerts_config(devnet, &channels).replace("throttle = \"1m\"", "throttle = \"8s\"")
        })
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    let api = agent.api_url().await;
    // p0 down and back: a warning, then its resolution, the rule's last message.
    p0_down_and_seen(devnet, &api).await;
    wait_for_alert(&receiver, "/hook", "providers_down", "warning", "firing").await;
    p0_back_and_seen(devnet, &api).await;
    wait_for_alert(&receiver, "/hook", "providers_down", "", "resolved").await;
    let sent = providers_down_posts(&receiver, "/hook");
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let resolved_at = sent[1].at;
    // Down again within the window: seen by the agent and its rules, and held back.
    let seen = p0_down_and_seen(devnet, &api).await;
    assert!(
        seen.duration_since(resolved_at) < WINDOW - Duration::from_secs(2),
        "inconclusive: p0 was seen down again only {:?} after the resolution",
        seen.duration_since(resolved_at)
    );
    assert_eq!(
        providers_down_posts(&receiver, "/hook").len(),
        2,
        "sent within the throttle window"
    );
    // Still down when the window has passed: the warning goes, once.
    wait_for(CATCH_UP, "the held-back warning", || {
        let n = providers_down_posts(&receiver, "/hook").len();
        async move { (n > 2).then_some(()) }
    })
    .await;
    let again = providers_down_posts(&receiver, "/hook");
    assert_eq!(again.len(), 3, "{again:#?}");
    assert_eq!(again[2].body["status"], "firing");
    assert_eq!(again[2].body["tier"], "warning");
    let waited = again[2].at.duration_since(resolved_at);
    // The window runs from the tick that sent the resolution; its delivery took a moment.
    assert!(
        waited >= WINDOW - Duration::from_millis(500),
        "sent {waited:?} after the resolution, within the {WINDOW:?} throttle"
    );
    p0_back_and_seen(devnet, &api).await;
    wait_for(CATCH_UP, "the second warning resolved", || {
        let n = providers_down_posts(&receiver, "/hook").len();
        async move { (n > 3).then_some(()) }
    })
    .await;
    assert_eq!(
        providers_down_posts(&receiver, "/hook")[3].body["status"],
        "resolved"
    );
    settle_and_check(agent, devnet).await;
    scenario.finish();
}

/// Waits until the agent gives up on a message, then checks that `/metrics` counts a failure on
/// channel `failed` and a delivery on channel `delivered`.
async fn given_up_and_counted(agent: &Agent, failed: &str, delivered: &str) {
    wait_for(CATCH_UP, "a message given up on", || {
        let seen = agent.log().contains("alert not delivered; giving up");
        async move { seen.then_some(()) }
    })
    .await;
    let (_, metrics) = http_get(&format!("{}/metrics", agent.api_url().await)).await;
    let count = |name: &str, channel: &str| metric_sum(&metrics, name, &[("channel", channel)]);
    assert!(
        count("blockwatch_alerts_failed_total", failed) >= 1.0,
        "{metrics}"
    );
    assert!(
        count("blockwatch_alerts_sent_total", delivered) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_is_down_is_retried_and_the_stream_goes_on() {
    // Nothing listens on `late` until later; `dead` never answers.
    let late_port = free_port();
    let dead_port = free_port();
    let channels = format!(
        r#"
  [[alerts.channels]]
  kind = "webhook"
  url = "http://127.0.0.1:{late_port}/late"

  [[alerts.channels]]
  kind = "webhook"
  url = "http://127.0.0.1:{dead_port}/dead"
"#
    );
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(move |devnet| {
            alerts_config(devnet, &channels).replace(
                "delivery_retries = 2\ndelivery_backoff = \"200ms\"",
                "delivery_retries = 4\ndelivery_backoff = \"500ms\"",
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    devnet.set_fault("p1", json!({"kind": "down"})).await;
    wait_for(CATCH_UP, "a failed delivery attempt", || {
        let seen = agent.log().contains("alert delivery failed; retrying");
        async move { seen.then_some(()) }
    })
    .await;
    // The stream is not held up by deliveries.
    let head = devnet.head().await;
    agent.wait_for_block(head + 5, CATCH_UP).await;
    // The late channel comes up: the retry delivers.
    let late = Receiver::start(late_port).await;
    wait_for_alert(&late, "/late", "providers_down", "", "").await;
    // The dead one is given up on after its retries, and counted.
    given_up_and_counted(agent, "webhook-1", "webhook-0").await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    scenario.finish();
}

/// aiosmtpd (installed by `make tools`) on loopback with STARTTLS and AUTH required, under a
/// self-signed certificate; every mail it gets is a JSON line in `out`.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    out: std::path::PathBuf,
    ca: std::path::PathBuf,
}

impl SmtpServer {
    fn start(dir: &std::path::Path, user: &str, password: &str) -> SmtpServer {
        use std::io::BufRead;
        let python =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python");
        assert!(
            python.exists(),
            "{} missing: run `make tools` (scripts/install-aiosmtpd.sh)",
            python.display()
        );
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key, out) = (
            dir.join("smtp.pem"),
            dir.join("smtp.key"),
            dir.join("mail.jsonl"),
        );
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let port = free_port();
        let mut child = std::process::Command::new(python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_server.py"))
            .args([
                &port.to_string(),
                cert.to_str().unwrap(),
                key.to_str().unwrap(),
                user,
                password,
            ])
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the SMTP server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "SMTP server did not start");
        SmtpServer {
            child,
            port,
            out,
            ca: cert,
        }
    }

    fn mails(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_alerts_go_through_starttls_and_auth() {
    const PASSWORD: &str = "Smtp-Pa55word-xyz";
    let smtp_dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(smtp_dir.path(), "alerts", PASSWORD);
    let channels = format!(
        r#"
  [[alerts.channels]]
  kind = "email"
  smtp_url = "smtp://alerts:{PASSWORD}@127.0.0.1:{port}"
  smtp_ca_file = "{ca}"
  from = "blockwatch <blockwatch@example.com>"
  to = ["oncall@example.com", "infra@example.com"]

  [[alerts.channels]]
  kind = "email"
  smtp_url = "smtp://alerts:wrong-password-123@127.0.0.1:{port}"
  smtp_ca_file = "{ca}"
  from = "blockwatch@example.com"
  to = ["oncall@example.com"]
"#,
        port = smtp.port,
        ca = smtp.ca.display()
    );
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(move |devnet| alerts_config(devnet, &channels))
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    devnet.set_fault("p1", json!({"kind": "down"})).await;
    let mail = wait_for(CATCH_UP, "an alert by mail", || {
        let mails = smtp.mails();
        async move { mails.into_iter().next() }
    })
    .await;
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["login"], "alerts");
    assert_eq!(mail["from"], "blockwatch@example.com");
    assert_eq!(
        mail["to"],
        json!(["oncall@example.com", "infra@example.com"])
    );
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [WARNING] providers_down anvil"),
        "{data}"
    );
    assert!(data.contains("What: 1 of 2 providers down: p1"), "{data}");
    // The channel with a wrong password fails, is retried, given up on and counted.
    given_up_and_counted(agent, "email-1", "email-0").await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    let log = agent.log();
    assert!(
        !log.contains(PASSWORD) && !log.contains("wrong-password-123"),
        "a password leaked"
    );
    scenario.finish();
}

/// The alert lines of a file channel: (rule, provider, status).
fn file_alerts(path: &std::path::Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("rule"), s("provider"), s("status"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_raises_a_latency_warning_that_resolves() {
    let channels = "\n  [[alerts.channels]]\n  kind = \"file\"\n  path = \"alerts.jsonl\"\n";
    // No hedging: every call waits for the slow leader, whose p95 is then its delay.
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| {
            alerts_config(devnet, channels)
                .replace(
                    "throttle = \"1m\"",
                    "throttle = \"1m\"\np95_latency = \"200ms\"",
                )
                .replace(
                    "score_window = \"5s\"",
                    "score_window = \"5s\"\nhedge_percentile = 0",
                )
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    devnet
        .set_fault("p0", json!({"kind": "latency", "ms": 350}))
        .await;
    let path = dir.path().join("alerts.jsonl");
    let latency = |status: &'static str| {
        let path = path.clone();
        move || {
            let found =
                file_alerts(&path).contains(&("latency".into(), "p0".into(), status.into()));
            async move { found.then_some(()) }
        }
    };
    wait_for(CATCH_UP, "a latency warning for p0", latency("firing")).await;
    devnet.clear_faults().await;
    wait_for(
        CATCH_UP,
        "the latency warning resolved",
        latency("resolved"),
    )
    .await;
    assert!(
        file_alerts(&path).iter().all(|(_, p, _)| p != "p1"),
        "the healthy provider was not alerted on"
    );
    settle_and_check(agent, devnet).await;
    scenario.finish();
}
