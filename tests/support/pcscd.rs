//! A private `pcscd` with the vsmartcard `vpcd` virtual reader, for one test process.
//!
//! pcscd 1.9 has its socket path compiled in (`/run/pcscd/pcscd.comm`), but it accepts a
//! listening socket from systemd socket activation (`LISTEN_FDS`/`LISTEN_PID`, fd 3). The test
//! binds a Unix socket in a temporary directory and hands it over that way; libpcsclite in the
//! test process finds it through `PCSCLITE_CSOCK_NAME`. A system pcscd is left alone.
//!
//! The fd is passed without `unsafe` (no `pre_exec`): it becomes the child's stdin, and a tiny
//! `sh` moves it to fd 3, sets `LISTEN_PID` to its own pid (`$$`) and `exec`s pcscd, which keeps
//! that pid.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
const PCSCD_CANDIDATES: [&str; 2] = ["/usr/sbin/pcscd", "/usr/local/sbin/pcscd"];

pub fn pcscd_binary() -> Option<PathBuf> {
    PCSCD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// `Err` names what is missing and how to install it.
pub fn tools_installed() -> Result<(), String> {
    let mut missing = Vec::new();
    if pcscd_binary().is_none() {
        missing.push("pcscd");
    }
    if !Path::new(VPCD_DRIVER).exists() {
        missing.push("vsmartcard-vpcd");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not installed (apt-get install pcscd vsmartcard-vpcd libpcsclite-dev)",
            missing.join(" and ")
        ))
    }
}

/// A TCP port for vpcd: vpcd also opens `port + 1` for its second slot, so both must be free.
pub fn free_vpcd_port() -> io::Result<u16> {
    // Every port tried stays bound until the end: released at once, the kernel tends to hand
    // the same port out again, and a busy `port + 1` then fails every try.
    let mut tried = Vec::new();
    for _ in 0..64 {
        let first = TcpListener::bind(("0.0.0.0", 0))?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return Ok(port);
        }
        tried.push(first);
    }
    Err(io::Error::other("no pair of free TCP ports for vpcd"))
}

pub struct PrivatePcscd {
    child: Child,
    pub log: PathBuf,
}

impl PrivatePcscd {
    /// Start pcscd listening on `socket`, with one vpcd reader entry waiting on `port`.
    pub fn start(dir: &Path, socket: &Path, port: u16) -> io::Result<PrivatePcscd> {
        let pcscd = pcscd_binary().ok_or_else(|| io::Error::other("pcscd not installed"))?;
        let conf = dir.join("reader.conf.d");
        fs::create_dir_all(&conf)?;
        // Same entry as Debian's /etc/reader.conf.d/vpcd, with our own port: DEVICENAME
        // `/dev/null:<port>` makes vpcd listen (rather than connect out) on that port.
        fs::write(
            conf.join("vpcd"),
            format!(
                "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:{port}\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x{port:X}\n"
            ),
        )?;
        match fs::remove_file(socket) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(socket)?;
        let log = dir.join(format!("pcscd-{port}.log"));
        let out = fs::File::create(&log)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --foreground --debug --config "$1""#)
            .arg(&pcscd)
            .arg(&conf)
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()?;
        let daemon = PrivatePcscd { child, log };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if fs::read_to_string(&self.log).is_ok_and(|log| log.contains("daemon ready")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let hint = if log.contains("cannot create /run/pcscd") {
            "\nhint: pcscd needs /run/pcscd to exist even when socket-activated; \
             run `sudo install -d -m 0755 /run/pcscd` (scripts/pcsc-test-env.sh install does)"
        } else {
            ""
        };
        Err(io::Error::other(format!(
            "pcscd did not become ready{hint}; log:\n{log}"
        )))
    }

    /// SIGTERM, as systemd would stop it; SIGKILL if it lingers.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivatePcscd {
    fn drop(&mut self) {
        self.shutdown();
    }
}
