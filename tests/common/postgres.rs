#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! A real PostgreSQL per test (Debian's `postgresql` package; scripts/test.sh installs it): a
//! cluster made by `initdb` in a temp dir (trust auth, superuser `relais`), one postmaster on a
//! random loopback port with `fsync=on`, SIGKILLed (a crash) and restarted on the same data dir
//! for fault tests, killed on drop. PostgreSQL refuses to run as root, so under root (CI) both
//! run as `nobody`/`nogroup` with the temp dir handed to them.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding `initdb`, `postgres` and `psql`: Debian's newest under
/// /usr/lib/postgresql, else wherever `postgres` is on the PATH.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("postgres"))
        .find(|p| p.exists())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join("initdb").exists())
}

/// Whether the tests can run here.
pub fn available() -> bool {
    bin_dir().is_some()
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir().expect("PostgreSQL's binaries (apt-get install postgresql)");
        let dir = tempfile::tempdir().expect("postgres dir");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the PostgreSQL dir to nobody");
        }
        let pg = Postgres {
            child: None,
            port: free_port(),
            bin,
            dir,
        };
        let out = pg
            .as_owner(&pg.bin.join("initdb"))
            .args([
                "-U",
                "relais",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(pg.data())
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = pg;
        pg.launch();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command run as the cluster's owner: `nobody` under root, else the caller.
    fn as_owner(&self, program: &Path) -> Command {
        if running_as_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("log");
        let mut cmd = self.as_owner(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Its own process group: a crash takes the postmaster and every backend at once.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        self.child = Some(cmd.spawn().expect("start postgres"));
        let deadline = Instant::now() + Duration::from_secs(30);
        // Accepting TCP is not enough: after a crash it answers "starting up" until recovered.
        while !self.psql_raw("SELECT 1").status.success() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://relais@127.0.0.1:{}/postgres", self.port)
    }

    /// SIGKILL the postmaster and its backends: a crash, nothing flushed but what was fsynced.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            // Backends outlive the postmaster for a moment; a restart needs them gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Command::new("kill")
                .args(["-0", "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && Instant::now() < deadline
            {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Start again on the same data directory and port (crash recovery first).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn psql_raw(&self, sql: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "relais", "-d", "postgres", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql")
    }

    /// Run one SQL command; its rows as `|`-separated lines.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_raw(sql);
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}
