//! Stopping a child process: a signal, a grace period, then a kill.

use std::time::Duration;

/// Sends `signal` to `child`, waits up to `grace` for it to exit, then kills it. Returns how it exited, if it
/// did by itself.
pub fn stop_child(
    child: &mut std::process::Child,
    signal: libc::c_int,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
