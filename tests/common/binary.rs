//! The real `agentd` binary on a free loopback port, for tests that need a
//! separate process (signals, crashes).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::connect;

/// A running agentd process; killed when dropped.
pub struct Binary {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Binary {
    /// Starts `agentd serve` on `data_dir` with only the memory service, and
    /// connects to it.
    pub async fn start(data_dir: &Path) -> (Binary, Channel) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let child = Command::new(env!("CARGO_BIN_EXE_agentd"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--disable", "embedding,query,agents"])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("AGENTD_CONFIG")
            .current_dir(data_dir.parent().unwrap_or(data_dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start agentd");
        let binary = Binary { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match connect(addr).await {
                Ok(channel) => return (binary, channel),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("agentd did not start: {e}"),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown path runs, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL agentd");
        self.child.wait().expect("reap agentd");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
