//! `blockwatch demo` runs with no config, shows failover and recovery, and stops by itself.

use std::process::Command;

#[test]
fn demo_shows_failover_and_recovery_and_stops_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["demo", "--duration", "15s", "--http", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("BLOCKWATCH_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("▶ p0 goes down"), "{stdout}");
    assert!(
        stdout.contains("agent switched from p0 to p1"),
        "no failover:\n{stdout}"
    );
    assert!(stdout.contains("▶ p0 is back up"), "{stdout}");
    assert!(
        stdout.contains("agent switched from p1 to p0"),
        "no recovery:\n{stdout}"
    );
    assert!(stdout.contains("done:"), "{stdout}");
    // Blocks are told in order with no gap: the outage cost nothing.
    let numbers: Vec<u64> = stdout
        .lines()
        .filter_map(|l| {
            l.split_once("] block ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
        })
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(numbers.len() >= 10, "{stdout}");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "gap or repeat: {numbers:?}"
    );
    // Nothing is left behind in the working directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
