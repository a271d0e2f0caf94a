//! Starts real processes for end-to-end tests: the test back end, the `gatehouse` service,
//! registered connectors. Everything talks over loopback sockets; every process is killed
//! when the [`Stack`] is dropped.
#![allow(dead_code, unreachable_pub)]

pub mod oidc;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The external host names the tests publish (resolved to 127.0.0.1 by curl `--resolve`).
pub const APP_HOST: &str = "app.test";

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range (32768 and up here), so
/// that the many client connections the tests make cannot take it between this check and the
/// server's bind; each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        10_000 + (std::process::id() % 2_000) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "no free test port left");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `gatehouse` binary under test.
pub fn gatehouse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Kills at once (SIGKILL): an abrupt death, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks to stop (SIGTERM), then kills after a second: servers that fork (nginx) take
    /// their workers with them only when asked.
    pub fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg(self.pid().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(1);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts the Python test back end (tests/support/backend.py); returns it and its port.
pub fn backend(log: Option<&Path>) -> (Proc, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/backend.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["--host", "127.0.0.1", "--port", "0"]);
    if let Some(log) = log {
        cmd.arg("--log").arg(log);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("backend did not start: {line:?}"));
    (
        Proc {
            child,
            name: "backend".into(),
        },
        port,
    )
}

/// A stack with the echo back end as the passthrough app `echo` at [`APP_HOST`], the
/// configuration lines `extra`, and one connector, ready to serve.
pub fn echo_stack(name: &str, extra: &str) -> (Stack, Proc) {
    let (backend, port) = backend(None);
    let mut stack = Stack::start(name, &[passthrough_app("echo", port)], extra);
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    (stack, backend)
}

/// Starts nginx in `dir` (logs, pid and temporary files there) with `http` inside its
/// `http { }` block (the `server { }` blocks and any settings); the caller waits for its
/// ports. Killed on drop.
pub fn start_nginx(dir: &Path, http: &str) -> Proc {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed (scripts/test.sh installs it)");
    let conf = format!(
        "daemon off; worker_processes 1; error_log {d}/error.log; pid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log {d}/access.log; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
         fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
         {http} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc {
        child,
        name: "nginx".into(),
    }
}

/// One app of the service configuration.
pub struct AppSpec {
    pub name: &'static str,
    pub external: String,
    pub internal: String,
    pub group: &'static str,
    pub extra: String,
}

/// An app at [`APP_HOST`] in passthrough mode, in the default group.
pub fn passthrough_app(name: &'static str, backend_port: u16) -> AppSpec {
    AppSpec {
        name,
        external: format!("https://{APP_HOST}/"),
        internal: format!("http://127.0.0.1:{backend_port}/"),
        group: "default",
        extra: String::new(),
    }
}

/// Service, state and connectors of one test.
pub struct Stack {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub https_port: u16,
    pub tunnel_port: u16,
    pub service: Option<Proc>,
    pub connectors: Vec<Proc>,
    /// The root clients trust for the front when it serves a configured certificate (none:
    /// the service's own CA, which issues its development certificate).
    pub front_root: Option<PathBuf>,
}

impl Stack {
    /// Writes the service configuration and starts the service.
    pub fn start(name: &str, apps: &[AppSpec], extra: &str) -> Stack {
        Stack::start_on(name, apps, extra, free_port())
    }

    /// [`Stack::start`] with the front on `https_port` (for apps whose external URLs name it).
    pub fn start_on(name: &str, apps: &[AppSpec], extra: &str, https_port: u16) -> Stack {
        let dir = temp_dir(name);
        let tunnel_port = free_port();
        let mut text = format!(
            "state_dir = \"state\"\nworkers = 2\npublic_name = \"localhost\"\nevents_file = \"events.log\"\n{extra}\n[listen]\nhttps = \"127.0.0.1:{https_port}\"\ntunnel = \"127.0.0.1:{tunnel_port}\"\n"
        );
        for app in apps {
            text.push_str(&format!(
                "\n[[apps]]\nname = \"{}\"\nexternal_url = \"{}\"\ninternal_url = \"{}\"\nconnector_group = \"{}\"\n{}\n",
                app.name, app.external, app.internal, app.group, app.extra
            ));
        }
        let config = dir.join("service.toml");
        std::fs::write(&config, text).unwrap();
        let mut stack = Stack {
            dir,
            config,
            https_port,
            tunnel_port,
            service: None,
            connectors: Vec::new(),
            front_root: None,
        };
        stack.start_service();
        stack
    }

    pub fn start_service(&mut self) {
        let log = std::fs::File::create(self.dir.join("service.log")).unwrap();
        let child = gatehouse()
            .args(["service", "run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.service = Some(Proc {
            child,
            name: "service".into(),
        });
        wait_for_port(self.tunnel_port);
        wait_for_port(self.https_port);
    }

    /// `gatehouse service token create`; returns the token.
    pub fn token(&self, role: &str, ttl: &str) -> String {
        self.service_cli(&["token", "create", "--role", role, "--ttl", ttl])
            .trim()
            .to_owned()
    }

    /// `gatehouse service ARGS --config` of this stack; asserts it succeeded and returns
    /// its standard output.
    pub fn service_cli(&self, args: &[&str]) -> String {
        let out = gatehouse()
            .arg("service")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out)
    }

    /// Registers a connector with `token` (read from a file, never from argv).
    pub fn register(&self, name: &str, token: &str, group: &str) -> Output {
        let token_file = self.dir.join(format!("{name}.token"));
        std::fs::write(&token_file, token).unwrap();
        gatehouse()
            .args(["connector", "register", "--service"])
            .arg(format!("https://localhost:{}", self.tunnel_port))
            .arg("--token")
            .arg(format!("@{}", token_file.display()))
            .args(["--group", group, "--state-dir"])
            .arg(self.dir.join(name))
            .output()
            .unwrap()
    }

    /// Registers and starts a connector; returns its index in `connectors`.
    pub fn add_connector(&mut self, name: &str, group: &str) -> usize {
        let token = self.token("admin", "10m");
        let out = self.register(name, &token, group);
        assert!(
            out.status.success(),
            "register: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.run_connector(name)
    }

    pub fn run_connector(&mut self, name: &str) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = gatehouse()
            .args(["connector", "run", "--state-dir"])
            .arg(self.dir.join(name))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.connectors.push(Proc {
            child,
            name: name.into(),
        });
        self.connectors.len() - 1
    }

    /// The CA file clients trust for the front (the service's own CA in development).
    pub fn ca_file(&self) -> PathBuf {
        self.front_root
            .clone()
            .unwrap_or_else(|| self.dir.join("state/ca.pem"))
    }

    /// A curl command against the front with `host` resolved to loopback (add arguments,
    /// then run or spawn it).
    pub fn curl_command(&self, host: &str) -> Command {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "60", "--cacert"])
            .arg(self.ca_file())
            .arg("--resolve")
            .arg(format!("{host}:{}:127.0.0.1", self.https_port));
        command
    }

    /// curl against the front with `host` resolved to loopback.
    pub fn curl(&self, host: &str, args: &[&str]) -> Output {
        self.curl_command(host).args(args).output().unwrap()
    }

    /// The status code of `GET path` on `host` (a new connection each time).
    pub fn status(&self, host: &str, path: &str) -> String {
        let out = self.curl(
            host,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &self.url(host, path),
            ],
        );
        text(&out)
    }

    /// Runs a Python client script with the CA file, the HTTPS port and the app host as its
    /// arguments; asserts it succeeded and returns its stdout, trimmed.
    pub fn python_client(&self, script: &str) -> String {
        let out = python(
            script,
            &[
                self.ca_file().to_str().unwrap(),
                &self.https_port.to_string(),
                APP_HOST,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out).trim().to_owned()
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https_port)
    }

    /// Waits until `GET url` through the front answers 200 eight times in a row, each on a
    /// new connection (so every worker has its tunnels).
    pub fn wait_ready(&self, host: &str, path: &str) {
        let start = Instant::now();
        let mut in_a_row = 0;
        loop {
            let status = self.status(host, path);
            if status == "200" {
                in_a_row += 1;
                if in_a_row == 8 {
                    return;
                }
                continue;
            }
            in_a_row = 0;
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "not ready: {status} / service log:\n{}",
                    self.log("service")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn service_pid(&self) -> u32 {
        self.service.as_ref().unwrap().pid()
    }
}

pub fn wait_for_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a Python snippet (with `ssl`) and returns its stdout; used for raw-socket clients.
pub fn python(script: &str, args: &[&str]) -> Output {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"").unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Established IPv4 TCP connections whose remote end is `127.0.0.1:port`, as counted from
/// `/proc/net/tcp` (client sides only: the server's accepted sockets have it as local port).
pub fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2] == remote && fields[3] == "01"
        })
        .count()
}

/// A `[[dev_idp.users]] password_hash` for `password` (`gatehouse dev-idp hash`, few
/// iterations: tests sign in often).
pub fn dev_password_hash(password: &str) -> String {
    use std::io::Write as _;
    let mut hashing = gatehouse()
        .args(["dev-idp", "hash", "--iterations", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hashing
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    text(&hashing.wait_with_output().unwrap()).trim().to_owned()
}

/// Starts one etcd member (Debian's `etcd-server`, which `scripts/test.sh` installs) with its
/// data under `dir`; returns it and its client URL.
pub fn start_etcd(dir: &Path) -> (Proc, String) {
    start_etcd_in(dir, &format!("http://127.0.0.1:{}", free_port()))
}

/// [`start_etcd`] on a given client URL (to start a stopped member again, with its data).
pub fn start_etcd_in(dir: &Path, client_url: &str) -> (Proc, String) {
    let client: u16 = client_url.rsplit(':').next().unwrap().parse().unwrap();
    // The member keeps its peer address in its data: a restart uses the same one.
    let peer_file = dir.join("etcd-peer-port");
    let peer: u16 = match std::fs::read_to_string(&peer_file) {
        Ok(port) => port.trim().parse().unwrap(),
        Err(_) => {
            let port = free_port();
            std::fs::write(&peer_file, port.to_string()).unwrap();
            port
        }
    };
    let client_url = client_url.to_owned();
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "m1", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("m1={peer_url}")])
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("etcd.log"))
                .unwrap(),
        )
        .spawn()
        .expect("etcd is not installed (scripts/test.sh installs etcd-server)");
    wait_for_port(client);
    (
        Proc {
            child,
            name: "etcd".into(),
        },
        client_url,
    )
}
