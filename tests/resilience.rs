//! Harder paths of the stream: lines written but not committed before a kill are adopted, not
//! repeated; a dropped `newHeads` subscription falls back to polling; several chains run in one
//! process; stdout carries the same stream.

mod common;

use std::{io::Write, time::Duration};

use blockwatch::model::{BlockLine, StreamEvent};
use common::*;

const CATCH_UP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_but_not_committed_are_adopted_not_repeated() {
    let anvil = Anvil::start(0).await;
    anvil.mine(3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&provider("anvil", &anvil.url(), None, 0), "");
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(3, CATCH_UP).await;
    agent.stop();

    // Pretend the agent wrote blocks 4 and 5 and was killed before committing the cursor, in the
    // middle of writing a third line.
    anvil.mine(4).await;
    let last = canonical(&agent.stream()).last().cloned().unwrap();
    let mut lines = String::new();
    let mut parent = last.hash;
    for n in 4..=5u64 {
        let hash: alloy_primitives::B256 = anvil.hash_at(n).await.parse().unwrap();
        let line = StreamEvent::Block(BlockLine {
            chain: "anvil".into(),
            block_number: n,
            hash,
            parent_hash: parent,
            timestamp: 0,
            transactions: 0,
            provider: "written-before-kill".into(),
            received_at: "2026-11-23T10:00:00.000Z".into(),
            lag_ms: 0,
        });
        lines.push_str(&serde_json::to_string(&line).unwrap());
        lines.push('\n');
        parent = hash;
    }
    lines.push_str("{\"type\":\"block\",\"chain\":\"anv");
    std::fs::OpenOptions::new()
        .append(true)
        .open(agent.blocks_path())
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();

    agent.restart();
    agent.wait_for_block(7, CATCH_UP).await;
    agent.stop();
    let chain = canonical(&agent.stream());
    assert_is_canonical(&chain, &anvil).await;
    let adopted: Vec<u64> = chain
        .iter()
        .filter(|b| b.provider == "written-before-kill")
        .map(|b| b.block_number)
        .collect();
    assert_eq!(adopted, vec![4, 5], "adopted lines must stay, once each");
    assert!(
        agent.log().contains("adopted block lines"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_falls_back_to_polling() {
    let anvil = Anvil::start(1).await;
    let ws = Proxy::start(anvil.port).await;
    let dir = tempfile::tempdir().unwrap();
    let ws_url = format!("ws://127.0.0.1:{}", ws.port);
    let cfg = config(&provider("anvil", &anvil.url(), Some(&ws_url), 0), "");
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(3, CATCH_UP).await;
    assert!(
        agent.log().contains("newHeads subscription open"),
        "{}",
        agent.log()
    );
    ws.cut();
    let head = anvil.head().await;
    agent.wait_for_block(head + 4, CATCH_UP).await;
    let log = agent.log();
    assert!(
        log.contains("newHeads subscription ended") || log.contains("cannot open newHeads"),
        "{log}"
    );
    agent.stop();
    assert_is_canonical(&canonical(&agent.stream()), &anvil).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_chains_run_in_one_process() {
    let one = Anvil::start(1).await;
    let two = Anvil::start(0).await;
    two.mine(20).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}\n[[chains]]\nname = \"second\"\nchain_id = 31337\nexpected_block_time = \"1s\"\nstart = 5\n{}",
        config(&provider("p", &one.url(), Some(&one.ws_url()), 0), ""),
        provider("p", &two.url(), None, 0)
    );
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(3, CATCH_UP).await;
    agent.wait_for_chain_block("second", 20, CATCH_UP).await;
    let second = canonical(&agent.chain_stream("second"));
    assert_eq!(
        second.first().map(|b| b.block_number),
        Some(5),
        "start = 5 must start at block 5"
    );
    assert_eq!(second.last().map(|b| b.block_number), Some(20));
    agent.stop();
    assert_is_canonical(&canonical(&agent.chain_stream("anvil")), &one).await;
    assert_is_canonical(&second, &two).await;
}

/// Runs the agent with `cfg` switched to stdout output, stdout piped to the test.
fn spawn_to_stdout(dir: &std::path::Path, cfg: &str) -> std::process::Child {
    let path = dir.join("blockwatch.toml");
    std::fs::write(
        &path,
        cfg.replace(
            "block_output = \"blocks.jsonl\"",
            "block_output = \"stdout\"",
        ),
    )
    .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["run", "--config"])
        .arg(&path)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Every line of `stdout`, as it comes, on a channel (closed at end of file).
fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn parse_line(l: &str) -> StreamEvent {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_carries_the_stream_and_nothing_else() {
    let anvil = Anvil::start(0).await;
    anvil.mine(5).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&provider("anvil", &anvil.url(), None, 0), "start = 1");
    let mut child = spawn_to_stdout(dir.path(), &cfg);
    let lines = lines_of(child.stdout.take().unwrap());
    // Read as they come until blocks 1-5 are out.
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + CATCH_UP;
    while canonical(&events).last().map(|b| b.block_number) != Some(5) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => events.push(parse_line(&l)),
            Err(e) => {
                let _ = child.kill();
                panic!("blocks 1-5 not on stdout ({e}); got {events:?}");
            }
        }
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGINT should exit 0, got {status:?}");
    // Whatever came after, up to the end of the stream.
    events.extend(lines.iter().map(|l| parse_line(&l)));
    let chain = canonical(&events);
    assert_eq!(
        chain.iter().map(|b| b.block_number).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(events.len(), 5, "only the stream: {events:?}");
    assert_is_canonical(&chain, &anvil).await;
}

/// Whether a thread of process `pid` is blocked writing to a pipe (its kernel wait channel).
fn blocked_writing_a_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|t| {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        // The kernel function it sleeps in, or (where that is hidden) the system call it is in:
        // write(2) (number 1 on x86_64) to fd 1, stdout.
        read("wchan").contains("pipe_write")
            || (cfg!(target_arch = "x86_64") && read("syscall").starts_with("1 0x1 "))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_in_time_even_when_nobody_reads_stdout() {
    let anvil = Anvil::start(0).await;
    anvil.mine(3000).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&provider("anvil", &anvil.url(), None, 0), "start = 1").replace(
        "timeout = \"2s\"",
        "timeout = \"2s\"\nrate_limit = { requests_per_second = 2000, burst = 2000 }",
    );
    // stdout is a pipe that is not read: it fills after a few hundred lines and the writer blocks.
    let mut child = spawn_to_stdout(dir.path(), &cfg);
    let pid = child.id();
    let blocked = std::time::Instant::now() + CATCH_UP;
    while !blocked_writing_a_pipe(pid) {
        if std::time::Instant::now() > blocked || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "the agent never blocked on its full stdout pipe (per /proc/{pid}/task/*/wchan and syscall)"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The product's promise is 5 s; the margin absorbs a loaded CI machine.
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "took {:?}",
        sent.elapsed()
    );
    assert!(status.success(), "{status:?}");
    // What the pipe holds is the start of the stream, far from its end: the writer was held up.
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    out.truncate(out.rfind('\n').map_or(0, |i| i + 1));
    let events: Vec<StreamEvent> = out.lines().map(parse_line).collect();
    let chain = canonical(&events);
    assert_eq!(chain.first().map(|b| b.block_number), Some(1), "{out}");
    assert!(chain.len() < 2000, "{} blocks got through", chain.len());
}
