//! `gatehouse demo`: the whole product on one machine with nothing else installed. Starts a
//! sample internal app, the service (with a development CA and certificates), registers a
//! connector with a fresh bootstrap token and runs it, and prints where to go.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use gatehouse_http1::rt::{Conn, ConnError};
use gatehouse_http1::{BodyDecoder, Limits};
use gatehouse_service::pages::escape;

/// Host name the demo app is published at (`*.localhost` resolves to loopback everywhere).
const DEMO_HOST: &str = "app.localhost";
/// The same app, published with multi-factor sign-in required.
const SECURE_HOST: &str = "secure.localhost";
/// The same app, published in passthrough mode (no sign-in at the edge).
const PUBLIC_HOST: &str = "public.localhost";

/// The demo's users of the development identity provider: name, password, groups, TOTP.
const DEMO_USERS: [(&str, &str, &[&str], Option<&str>); 3] = [
    ("alice", "alice-demo", &["staff"], None),
    // A well-known example secret: this is a demo; real users get their own.
    (
        "bob",
        "bob-demo",
        &["staff", "admins"],
        Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
    ),
    ("carol", "carol-demo", &["sales"], None),
];

/// PBKDF2 iterations for the demo users: few, so that a debug build signs in quickly.
const DEMO_HASH_ITERATIONS: u32 = 10_000;

/// The `[dev_idp]` table and the apps of the demo's configuration.
fn demo_config(app_port: u16) -> String {
    let mut text = String::from("[dev_idp]\n");
    for (user, password, groups, totp) in DEMO_USERS {
        let hash = gatehouse_service::devidp::hash_password(password, DEMO_HASH_ITERATIONS);
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        text.push_str(&format!(
            "[[dev_idp.users]]\nusername = \"{user}\"\npassword_hash = \"{hash}\"\n\
             email = \"{user}@example.com\"\ngroups = [{}]\n",
            groups.join(", ")
        ));
        if let Some(secret) = totp {
            text.push_str(&format!("totp_secret = \"{secret}\"\n"));
        }
    }
    let internal = format!("http://127.0.0.1:{app_port}/");
    text.push_str(&format!(
        "\n[[apps]]\nname = \"demo\"\nexternal_url = \"https://{DEMO_HOST}/\"\n\
         internal_url = \"{internal}\"\nmode = \"preauth\"\nprovider = \"dev\"\n\
         [apps.access]\ngroups = [\"staff\"]\n\n\
         [[apps]]\nname = \"secure\"\nexternal_url = \"https://{SECURE_HOST}/\"\n\
         internal_url = \"{internal}\"\nmode = \"preauth\"\nprovider = \"dev\"\n\
         [apps.access]\ngroups = [\"admins\"]\nrequire_mfa = true\n\n\
         [[apps]]\nname = \"public\"\nexternal_url = \"https://{PUBLIC_HOST}/\"\n\
         internal_url = \"{internal}\"\nmode = \"passthrough\"\n"
    ));
    text
}

/// Options of the demo.
#[derive(Debug)]
pub(crate) struct DemoOptions {
    /// HTTPS port of the front.
    pub(crate) https_port: u16,
    /// Port of the tunnel listener.
    pub(crate) tunnel_port: u16,
    /// Port of the sample internal app.
    pub(crate) app_port: u16,
    /// Where the demo keeps its files (a fresh temporary directory by default).
    pub(crate) dir: Option<PathBuf>,
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn run(options: DemoOptions) -> anyhow::Result<()> {
    let dir = options.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("gatehouse-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A port in use is said at once, with which one and how to choose another: the service
    // would otherwise fail in its log while the demo waits.
    for (port, what, flag) in [
        (options.https_port, "the HTTPS front", "--https-port"),
        (options.tunnel_port, "the tunnel listener", "--tunnel-port"),
        (options.app_port, "the sample internal app", "--app-port"),
    ] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            bail!("port {port}, for {what}, cannot be used: {e}; choose another with {flag}");
        }
    }
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());

    // The sample internal app, on loopback only: reachable through the connector.
    children.0.push(
        Command::new(&exe)
            .args(["demo-app", "--port", &options.app_port.to_string()])
            .spawn()?,
    );
    let config = dir.join("service.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by `gatehouse demo`.\nstate_dir = \"state\"\npublic_name = \"localhost\"\n\
             events_file = \"events.jsonl\"\n\n\
             [listen]\nhttps = \"127.0.0.1:{https}\"\ntunnel = \"127.0.0.1:{tunnel}\"\n\n{apps}",
            https = options.https_port,
            tunnel = options.tunnel_port,
            apps = demo_config(options.app_port),
        ),
    )?;
    let service_log_path = dir.join("service.log");
    let service_log = std::fs::File::create(&service_log_path)?;
    children.0.push(
        Command::new(&exe)
            .args(["service", "run", "--config"])
            .arg(&config)
            .stderr(service_log)
            .spawn()?,
    );
    wait_for_port(options.tunnel_port, &mut children, &service_log_path)?;

    let token = Command::new(&exe)
        .args([
            "service", "token", "create", "--role", "admin", "--ttl", "10m", "--config",
        ])
        .arg(&config)
        .output()?;
    if !token.status.success() {
        bail!("token: {}", String::from_utf8_lossy(&token.stderr));
    }
    let state = dir.join("connector");
    let _ = std::fs::remove_dir_all(&state);
    let mut register = Command::new(&exe)
        .args([
            "connector",
            "register",
            "--token",
            "-",
            "--group",
            "default",
            "--service",
        ])
        .arg(format!("https://localhost:{}", options.tunnel_port))
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        register
            .stdin
            .take()
            .context("stdin")?
            .write_all(&token.stdout)?;
    }
    if !register.wait()?.success() {
        bail!("the connector could not register (see above)");
    }
    let connector_log_path = dir.join("connector.log");
    let connector_log = std::fs::File::create(&connector_log_path)?;
    children.0.push(
        Command::new(&exe)
            .args(["connector", "run", "--state-dir"])
            .arg(&state)
            .stderr(connector_log)
            .spawn()?,
    );
    // Ready means served: each app answers through the front (the passthrough one through the
    // connector and the sample app, the others with their sign-in redirect).
    wait_until_served(
        options.https_port,
        &dir.join("state/ca.pem"),
        &mut children,
        &[&service_log_path, &connector_log_path],
    )?;

    let url = format!("https://{DEMO_HOST}:{}/", options.https_port);
    let port = options.https_port;
    println!();
    println!("Gatehouse demo is running (files in {}).", dir.display());
    println!("  Open {url}  (sign-in required; group staff)");
    println!("       https://{SECURE_HOST}:{port}/  (group admins, with a one-time code)");
    println!("       https://{PUBLIC_HOST}:{port}/  (passthrough: no sign-in at the edge)");
    println!("  Demo users of the built-in development identity provider:");
    for (user, password, groups, totp) in DEMO_USERS {
        println!(
            "    {user} / {password}  (groups: {}){}",
            groups.join(", "),
            match totp {
                Some(secret) => format!(
                    "; one-time codes from TOTP secret {secret} \
                     (`gatehouse dev-idp code --secret {secret}`)"
                ),
                None => String::new(),
            }
        );
    }
    println!(
        "  The certificate comes from the demo's own CA: {}",
        dir.join("state/ca.pem").display()
    );
    println!(
        "  e.g. curl --cacert {} {url}",
        dir.join("state/ca.pem").display()
    );
    println!(
        "  Request and sign-in events: {}",
        dir.join("events.jsonl").display()
    );
    println!("Ctrl-C stops everything.");

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    while !stop.load(Ordering::Acquire) {
        for child in &mut children.0 {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "a demo process ended ({status}); logs are in {}",
                    dir.display()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("stopping");
    Ok(())
}

/// Fails at once, naming `log`, if a demo process has ended.
fn check_alive(children: &mut Children, log: &std::path::Path) -> anyhow::Result<()> {
    for child in &mut children.0 {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let last: Vec<&str> = text.lines().rev().take(5).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            bail!(
                "a demo process ended ({status}) before the demo was ready; {}:\n{}",
                log.display(),
                last.join("\n")
            );
        }
    }
    Ok(())
}

/// Waits until the service listens on `port`, failing at once if a demo process ends.
fn wait_for_port(port: u16, children: &mut Children, log: &std::path::Path) -> anyhow::Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        check_alive(children, log)?;
        if start.elapsed() > Duration::from_secs(20) {
            bail!("port {port} never opened; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits until a request to each demo app through the front on `port` succeeds: 200 from the
/// sample app for the passthrough one, the redirect to sign in for the others.
fn wait_until_served(
    port: u16,
    ca: &std::path::Path,
    children: &mut Children,
    logs: &[&std::path::Path],
) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(cert?)?;
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(gatehouse_http1::rt::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut runtime = gatehouse_http1::rt::runtime()?;
    let start = Instant::now();
    for (host, wanted) in [(PUBLIC_HOST, 200), (DEMO_HOST, 302), (SECURE_HOST, 302)] {
        loop {
            let status = runtime.block_on(async {
                let deadline = Instant::now() + Duration::from_secs(5);
                let tcp = gatehouse_http1::rt::connect(format!("127.0.0.1:{port}"), deadline)
                    .await
                    .ok()?;
                let name = ServerName::try_from(host).ok()?;
                let tls = gatehouse_http1::rt::TlsStream::connect(
                    tcp,
                    config.clone(),
                    name,
                    Some(deadline),
                )
                .await
                .ok()?;
                let request = gatehouse_http1::rt::ClientRequest {
                    method: "GET",
                    target: "/",
                    host,
                    fields: &[],
                    body: b"",
                };
                let response = gatehouse_http1::rt::fetch(tls, &request, 1 << 20, Some(deadline))
                    .await
                    .ok()?;
                Some(response.status)
            });
            if status == Some(wanted) {
                break;
            }
            for log in logs {
                check_alive(children, log)?;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "https://{host}:{port}/ did not answer {wanted} (last: {status:?}); see {}",
                    logs.iter()
                        .map(|l| l.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The sample internal app: a page that shows the request it received (method, target and
/// every header), so a user sees what the back end gets through Gatehouse.
pub(crate) fn app(port: u16) -> anyhow::Result<()> {
    let mut runtime = gatehouse_http1::rt::runtime()?;
    runtime.block_on(async move {
        let listener = monoio::net::TcpListener::bind(("127.0.0.1", port))?;
        loop {
            let (tcp, _) = listener.accept().await?;
            monoio::spawn(async move {
                let mut conn = Conn::new(tcp, BytesMut::with_capacity(8192), Limits::default());
                loop {
                    let page = conn
                        .read_request_head(None, |head| {
                            let mut rows = String::new();
                            for f in head.fields.as_slice() {
                                rows.push_str(&format!(
                                    "<tr><td>{}</td><td>{}</td></tr>",
                                    escape(&String::from_utf8_lossy(f.name)),
                                    escape(&String::from_utf8_lossy(f.value))
                                ));
                            }
                            let who = match head.fields.get("x-gatehouse-user") {
                                Some(user) => format!(
                                    "<p id=\"user\">Signed in as <strong>{}</strong> \
                                     (groups: {}). <a href=\"/.gatehouse/logout\">Sign out</a></p>",
                                    escape(&String::from_utf8_lossy(user)),
                                    escape(&String::from_utf8_lossy(
                                        head.fields.get("x-gatehouse-groups").unwrap_or(b"none")
                                    ))
                                ),
                                None => "<p id=\"user\">No one signed in at the edge \
                                         (passthrough mode).</p>"
                                    .to_owned(),
                            };
                            let page = format!(
                                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Gatehouse demo app</title></head>\
                                 <body><h1>Hello from the internal app</h1>{who}<p>This page is served by an app on 127.0.0.1 \
                                 that accepts no connection from outside; you reached it through Gatehouse.</p>\
                                 <p><code>{} {}</code></p><table border=\"1\">{rows}</table></body></html>\n",
                                escape(head.method_str()),
                                escape(head.target_str())
                            );
                            (page, head.body)
                        })
                        .await;
                    let (page, body) = match page {
                        Ok(p) => p,
                        Err(ConnError::Closed) | Err(_) => return,
                    };
                    // The body is not shown; read past it to the next request.
                    let mut decoder = BodyDecoder::new(body, &Limits::default());
                    while let Ok(Some(_)) = conn.next_body_chunk(&mut decoder, None).await {}
                    let mut out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                        page.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(page.as_bytes());
                    if conn.write_vec(out).await.0.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
