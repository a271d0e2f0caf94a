//! The etcd store against a real etcd (Debian's `etcd-server`, which `scripts/test.sh`
//! installs) on loopback: the transactions that shared control state relies on, leases that
//! end with their holder, and watches across an etcd restart.
#![cfg(feature = "etcd")]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use gatehouse_service::etcd::{Change, Created, EtcdSettings, EtcdStore, EtcdTlsPem, StoreError};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member with its data in a fresh directory; killed on drop.
struct Etcd {
    child: Child,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Serves clients over TLS and asks for client certificates (files in `dir`).
    tls: bool,
}

impl Etcd {
    fn start(name: &str) -> Etcd {
        Etcd::start_with(name, false)
    }

    fn start_with(name: &str, tls: bool) -> Etcd {
        let dir =
            std::env::temp_dir().join(format!("gatehouse-etcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let mut etcd = Etcd {
            child: Command::new("true").spawn().unwrap(),
            dir,
            client_port,
            peer_port,
            tls,
        };
        if tls {
            etcd.make_certificates();
        }
        etcd.run();
        etcd
    }

    /// With OpenSSL: a CA, the member's certificate for 127.0.0.1, a client certificate,
    /// and an unrelated CA.
    fn make_certificates(&self) {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (out, subject) = (format!("{ca}.pem"), format!("/CN={ca}"));
            let keyout = format!("{ca}.key");
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
            args.extend(key);
            args.extend(["-keyout", &keyout, "-out", &out]);
            openssl(&args);
        }
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let ext = format!("{name}.ext");
            std::fs::write(
                self.dir.join(&ext),
                format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
            )
            .unwrap();
            let (csr, keyout, subject) = (
                format!("{name}.csr"),
                format!("{name}.key"),
                format!("/CN={name}"),
            );
            let mut args = vec!["req", "-subj", &subject, "-keyout", &keyout, "-out", &csr];
            args.extend(key);
            openssl(&args);
            let out = format!("{name}.pem");
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &out,
            ]);
        }
    }

    fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Starts (or starts again) the member on its data directory and ports.
    fn run(&mut self) {
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let file = |name: &str| self.dir.join(name).display().to_string();
        let tls = if self.tls {
            vec![
                "--cert-file".to_owned(),
                file("server.pem"),
                "--key-file".to_owned(),
                file("server.key"),
                "--client-cert-auth".to_owned(),
                "--trusted-ca-file".to_owned(),
                file("ca.pem"),
            ]
        } else {
            Vec::new()
        };
        self.child = Command::new("etcd")
            .args(tls)
            .args(["--name", "m1", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("m1={peer}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd is not installed (scripts/test.sh installs etcd-server)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn store(&self, prefix: &str) -> EtcdStore {
        self.connect(prefix, None).expect("connects to etcd")
    }

    fn connect(&self, prefix: &str, tls: Option<EtcdTlsPem>) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(&EtcdSettings {
            endpoints: vec![self.client_url()],
            prefix: prefix.to_owned(),
            credentials: None,
            tls,
        })
    }

    /// TLS settings trusting the CA named `ca`, with the client certificate when `client`.
    fn tls(&self, ca: &str, client: bool) -> EtcdTlsPem {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap();
        EtcdTlsPem {
            ca: read(&format!("{ca}.pem")),
            client: client.then(|| (read("client.pem"), read("client.key"))),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f(i)` on `n` threads released at once; returns their results.
fn race<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let (barrier, f) = (Arc::new(Barrier::new(n)), Arc::new(f));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, f) = (barrier.clone(), f.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn values_are_created_once_and_taken_once() {
    let etcd = Etcd::start("once");
    // Two instances, each with its own connection, racing on the same keys.
    let stores = Arc::new([etcd.store("/gh/once"), etcd.store("/gh/once")]);
    let created = {
        let stores = stores.clone();
        race(8, move |i| {
            stores[i % 2]
                .create("ca", format!("ca-of-{i}").as_bytes())
                .unwrap()
        })
    };
    let winners: Vec<usize> = (0..8).filter(|i| created[*i] == Created::New).collect();
    assert_eq!(winners.len(), 1, "{created:?}");
    let winner = format!("ca-of-{}", winners[0]).into_bytes();
    for result in &created {
        assert!(matches!(result, Created::New) || *result == Created::Existing(winner.clone()));
    }
    assert_eq!(stores[1].get("ca").unwrap(), Some(winner));

    stores[0].put("tokens/t1", b"hash").unwrap();
    let taken = {
        let stores = stores.clone();
        race(8, move |i| stores[i % 2].take("tokens/t1").unwrap())
    };
    assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 1, "{taken:?}");
    assert_eq!(stores[0].get("tokens/t1").unwrap(), None);

    stores[0].put("connectors/a", b"1").unwrap();
    stores[0].put("connectors/b", b"2").unwrap();
    let mut listed = stores[1].list("connectors/").unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec())
        ]
    );
    assert!(stores[1].delete("connectors/a").unwrap());
    assert!(!stores[1].delete("connectors/a").unwrap());
}

#[test]
fn conditional_puts_and_expiring_creates() {
    let etcd = Etcd::start("cas");
    let store = etcd.store("/gh/cas");
    // Written only over the revision it was read at.
    assert!(store.put_if_unchanged("keys", b"1", 0).unwrap().is_some());
    assert_eq!(store.put_if_unchanged("keys", b"x", 0).unwrap(), None);
    let (value, revision) = store.get_versioned("keys").unwrap().unwrap();
    assert_eq!(value, b"1");
    let next = store.put_if_unchanged("keys", b"2", revision).unwrap();
    assert!(next.is_some_and(|r| r > revision));
    assert_eq!(
        store.put_if_unchanged("keys", b"y", revision).unwrap(),
        None
    );
    assert_eq!(store.get("keys").unwrap().unwrap(), b"2");
    // Created once, gone after its time.
    let ttl = Duration::from_secs(1);
    assert_eq!(
        store.create_expiring("used/x", b"1", ttl).unwrap(),
        Created::New
    );
    assert_eq!(
        store.create_expiring("used/x", b"2", ttl).unwrap(),
        Created::Existing(b"1".to_vec())
    );
    let start = Instant::now();
    while store.get("used/x").unwrap().is_some() {
        assert!(start.elapsed() < Duration::from_secs(5), "never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A member that serves TLS and checks client certificates: the store talks to it with the
/// CA and a client certificate, and gets nowhere without either.
#[test]
fn tls_with_client_certificates() {
    let etcd = Etcd::start_with("tls", true);
    let store = etcd
        .connect("/gh/tls", Some(etcd.tls("ca", true)))
        .expect("connects over TLS");
    store.put("k", b"v").unwrap();
    assert_eq!(store.get("k").unwrap().unwrap(), b"v");
    let state = gatehouse_service::etcd::EtcdState::new(store);
    use gatehouse_service::ControlState;
    assert!(state.load_or_create_ca(1_700_000_000).is_ok());
    // Without a client certificate, or trusting another CA, nothing is read or written.
    for (ca, client) in [("ca", false), ("other-ca", true)] {
        let refused = etcd
            .connect("/gh/tls", Some(etcd.tls(ca, client)))
            .and_then(|store| store.get("k"));
        assert!(refused.is_err(), "{ca} {client}: {refused:?}");
    }
    // Nor in clear.
    let clear = EtcdStore::connect(&EtcdSettings {
        endpoints: vec![etcd.client_url().replace("https", "http")],
        prefix: "/gh/tls".into(),
        credentials: None,
        tls: None,
    })
    .and_then(|store| store.get("k"));
    assert!(clear.is_err(), "{clear:?}");
}

#[test]
fn kept_keys_end_with_their_holder_and_watches_see_it() {
    let etcd = Etcd::start("lease");
    let (a, b) = (etcd.store("/gh/lease"), etcd.store("/gh/lease"));
    let changes = b.watch("instances/").unwrap();
    let kept = a
        .keep("instances/a", b"10.0.0.1:9443", Duration::from_secs(2))
        .unwrap();
    let next = |what: &str| {
        changes
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no change: {what}"))
    };
    assert_eq!(
        next("registration"),
        Change::Put("a".into(), b"10.0.0.1:9443".to_vec())
    );
    // Renewals keep it past its TTL.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.list("instances/").unwrap().len(), 1);
    // A crash: renewals stop, etcd deletes the key once the TTL runs out.
    let crashed = Instant::now();
    kept.abandon();
    assert_eq!(next("expiry"), Change::Delete("a".into()));
    let noticed = crashed.elapsed();
    assert!(noticed <= Duration::from_secs(4), "{noticed:?}");
    eprintln!("an abandoned 2 s lease ended after {noticed:?}");
    // A clean stop revokes at once.
    let kept = a
        .keep("instances/a", b"x", Duration::from_secs(30))
        .unwrap();
    assert!(matches!(next("again"), Change::Put(..)));
    let stopped = Instant::now();
    drop(kept);
    assert_eq!(next("revoked"), Change::Delete("a".into()));
    assert!(stopped.elapsed() < Duration::from_secs(2));
}

#[test]
fn watches_and_kept_keys_survive_an_etcd_restart() {
    let mut etcd = Etcd::start("restart");
    let (a, b) = (etcd.store("/gh/restart"), etcd.store("/gh/restart"));
    let changes = b.watch("instances/").unwrap();
    let _kept = a.keep("instances/a", b"v", Duration::from_secs(2)).unwrap();
    assert!(matches!(
        changes.recv_timeout(Duration::from_secs(5)),
        Ok(Change::Put(..))
    ));
    etcd.stop();
    // While etcd is down, calls fail in bounded time rather than hang.
    let started = Instant::now();
    assert!(a.get("instances/a").is_err());
    assert!(started.elapsed() < Duration::from_secs(8));
    etcd.run();
    // The watch comes back (and says it may have missed changes); the key is there, kept
    // by its holder through the restart.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut resynced = false;
    while Instant::now() < deadline && !resynced {
        resynced = matches!(
            changes.recv_timeout(Duration::from_millis(500)),
            Ok(Change::Resync)
        );
    }
    assert!(resynced, "the watch did not come back");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        b.list("instances/").unwrap(),
        [("a".to_owned(), b"v".to_vec())]
    );
}

#[test]
fn instances_share_one_ca_tokens_connectors_and_revocations() {
    use gatehouse_service::etcd::EtcdState;
    use gatehouse_service::{ControlState, Role, TokenRefusal};
    let mut etcd = Etcd::start("state");
    let instances = Arc::new([
        EtcdState::new(etcd.store("/gh/state")),
        EtcdState::new(etcd.store("/gh/state")),
    ]);
    // Four starts at once, two per instance: one CA for all.
    let pins = {
        let instances = instances.clone();
        race(4, move |i| {
            let ca = instances[i % 2].load_or_create_ca(1_800_000_000).unwrap();
            gatehouse_service::state::ca_pin(&ca)
        })
    };
    assert!(pins.iter().all(|p| *p == pins[0]), "{pins:?}");
    let (a, b) = (&instances[0], &instances[1]);
    let ca = a.load_or_create_ca(1_800_000_000).unwrap();

    // A token made through one instance is checked on the other.
    let now = gatehouse_service::unix_now();
    let token = a.create_token(Role::Admin, 60, false, &ca, now).unwrap();
    assert_eq!(b.token_role(&token, now), Ok(Role::Admin));
    assert_eq!(b.token_role(&token, now + 61), Err(TokenRefusal::Expired));
    // The same id with another secret is refused.
    let parts: Vec<&str> = token.split('.').collect();
    let wrong_secret = format!("{}.{}.{}.{}", parts[0], parts[1], "0".repeat(48), parts[3]);
    assert_eq!(b.token_role(&wrong_secret, now), Err(TokenRefusal::Invalid));

    // A single-use token registers once across instances racing for it.
    let once = a.create_token(Role::Admin, 60, true, &ca, now).unwrap();
    let used = {
        let (instances, once) = (instances.clone(), once.clone());
        race(6, move |i| instances[i % 2].check_token(&once, now).is_ok())
    };
    assert_eq!(used.iter().filter(|ok| **ok).count(), 1, "{used:?}");
    assert!(b.check_token(&once, now).is_err());

    // A connector registered on one is listed, and revoked, on the other.
    a.record_connector("c-1", "default", "host one!", now)
        .unwrap();
    let listed = b.connectors();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].hostname.as_str(), listed[0].revoked),
        ("hostone", false)
    );
    assert!(b.revoke("c-1").unwrap());
    assert!(!b.revoke("c-9").unwrap());
    assert!(a.revoked().contains("c-1"));
    assert!(a.connectors()[0].revoked);

    // etcd down: reads give the last state (instances keep serving); writes fail.
    etcd.stop();
    assert_eq!(a.connectors().len(), 1);
    assert!(a.revoked().contains("c-1"));
    assert!(a.record_connector("c-2", "default", "h", now).is_err());
}
