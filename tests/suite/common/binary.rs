//! The real `agentd` binary on a free loopback port, for tests that need a
//! separate process (signals, crashes) and for benchmarks that measure it
//! from outside (`benches/memory.rs` includes this file). Self-contained
//! for that reason.

#![allow(dead_code)] // tests and benches each use part of it

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

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
        Binary::start_with(data_dir, &["--disable", "embedding,query,agents"]).await
    }

    /// Starts `agentd serve` on `data_dir` with extra command-line `args`.
    pub async fn start_with(data_dir: &Path, args: &[&str]) -> (Binary, Channel) {
        Binary::start_logging(data_dir, args, Stdio::null()).await
    }

    /// Starts `agentd serve` on `data_dir` with extra command-line `args`,
    /// its log (stderr) going to `log`.
    pub async fn start_logging(
        data_dir: &Path,
        args: &[&str],
        log: impl Into<Stdio>,
    ) -> (Binary, Channel) {
        let binary = Binary::spawn(data_dir, args, log);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match connect(binary.addr).await {
                Ok(channel) => return (binary, channel),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("agentd did not start: {e}"),
            }
        }
    }

    /// Starts `agentd serve` on a free port without connecting (a TLS
    /// server does not speak plaintext): see [`Binary::wait_listening`].
    pub fn spawn(data_dir: &Path, args: &[&str], log: impl Into<Stdio>) -> Binary {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let child = Command::new(env!("CARGO_BIN_EXE_agentd"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("AGENTD_CONFIG")
            // Many servers run at once in tests: none takes the metrics
            // port unless a test asks (a flag wins over this).
            .env("AGENTD_METRICS_LISTEN", "off")
            .current_dir(data_dir.parent().unwrap_or(data_dir))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agentd");
        Binary { child, addr }
    }

    /// Waits until the port accepts TCP connections.
    pub async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "agentd did not listen within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGHUP (reload the keys and TLS files).
    pub fn hangup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGHUP agentd");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, in bytes (Linux `VmRSS`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Threads of the process now (Linux `Threads`).
    pub fn threads(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Threads in /proc/<pid>/status")
    }

    /// CPU time the process has used so far, user and system.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        // Fields after the command name (which may hold spaces) in parens;
        // utime and stime are the 14th and 15th of the whole line.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on every Linux this runs on.
        Duration::from_millis(ticks * 10)
    }

    /// SIGTERM, then the time until the process exited, and its status.
    pub fn terminate_timed(mut self) -> (Duration, std::process::ExitStatus) {
        let pid = self.pid().to_string();
        let began = Instant::now();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM agentd");
        let status = self.child.wait().expect("wait for agentd");
        (began.elapsed(), status)
    }

    /// SIGTERM, then waits for the graceful exit (which snapshots indexes).
    pub fn stop(mut self) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM agentd");
        let status = self.child.wait().expect("wait for agentd");
        assert!(status.success(), "agentd exited with {status}");
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

async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// An `agentd.toml` for a server started from outside (the suite's
/// process tests and the benches), built from the pieces they share.
/// Tables come out in the order they are added.
#[derive(Debug, Default)]
pub struct ConfigFile {
    text: String,
}

impl ConfigFile {
    /// An empty configuration (every default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Raw TOML, as is (a `[query]` table's settings, say: add it before
    /// the models).
    pub fn raw(mut self, toml: &str) -> Self {
        self.text.push_str(toml);
        if !toml.ends_with('\n') {
            self.text.push('\n');
        }
        self.text.push('\n');
        self
    }

    /// The `hash` embedding model (384 dimensions, no model files) as the
    /// default one.
    pub fn hash_embeddings(self) -> Self {
        self.raw(
            "[[embedding.models]]\nid = \"hash\"\nkind = \"hash\"\ndimensions = 384\n\n\
             [embedding]\ndefault_model = \"hash\"",
        )
    }

    /// An `openai` alias `alias` served by the fake provider at `base_url`
    /// (`FakeLlm::openai_url`), model id `echo`.
    pub fn fake_model(self, alias: &str, base_url: &str) -> Self {
        self.raw(&format!(
            "[[query.models]]\nalias = \"{alias}\"\nprovider = \"openai\"\nmodel_id = \"echo\"\n\
             base_url = \"{base_url}\""
        ))
    }

    /// The local Gemma 3 270M model (its GGUF at `gguf`) as alias `alias`,
    /// with a context window of 2,048 tokens.
    pub fn local_model(self, alias: &str, gguf: &Path) -> Self {
        self.raw(&format!(
            "[[query.models]]\nalias = \"{alias}\"\nprovider = \"local\"\n\
             model_id = \"gemma-3-270m\"\npath = \"{}\"\ncontext_window = 2048",
            gguf.display()
        ))
    }

    /// Writes it as `dir/agentd.toml`: its path.
    pub fn write(self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("agentd.toml");
        std::fs::write(&path, self.text).unwrap();
        path
    }
}
