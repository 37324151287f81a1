//! Child processes of the harnesses (shared with the benches, which include this file).

use std::process::{Child, Command, Stdio};

/// SIGKILL to a child's whole process group (a server and its workers, a browser and its
/// renderers), then waits for the child itself.
pub fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}
