//! Broker security end to end: the real binary against a Mosquitto of the
//! test's own with a TLS listener (`require_certificate true`), a password
//! file made with `mosquitto_passwd`, `allow_anonymous false`, and the
//! shipped ACL (`config/mosquitto/acl`). The CA, the broker's certificate
//! (SAN 127.0.0.1 and localhost), the client certificate and a second,
//! unrelated CA are generated per test with the `openssl` CLI.
//!
//! Checked:
//! * over TLS with a client certificate and a password file, an admit and a
//!   dose published by a TLS client are stored in SQLite and the state is
//!   published; the password appears in no log and not in `check-config`;
//! * the ACL: a device user's own events reach the daemon; its publishes to
//!   another device's events or to a state topic reach neither the daemon
//!   nor a dashboard;
//! * a wrong CA: the daemon logs the specific handshake error (once per
//!   connection, not per attempt), shows it in the systemd status, stores
//!   nothing, keeps retrying and stops cleanly;
//! * a wrong password in the password file: "not authorized", likewise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use dosetrack::mqtt::tls::{ClientIdentity, TlsClient};
use dosetrack::store::Reader;
use dosetrack::vocab::format_rfc3339;
use mqtt_common::daemon::{derefs_to_process, DaemonProcess, NotifySocket};
use mqtt_common::{free_port, poll_until, OwnBroker};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DAEMON_PASSWORD: &str = "dt-S3cret-pw";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A self-signed CA `{name}.crt`/`{name}.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `{name}.crt`/`{name}.key` signed by `ca`, with extensions `ext`.
fn make_cert(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// The test's PKI and a secured Mosquitto, killed on drop.
struct SecureBroker {
    broker: OwnBroker,
    port: u16,
}

/// Broker users and their passwords.
const USERS: &[(&str, &str)] = &[
    ("dosetrack", DAEMON_PASSWORD),
    ("medrecord", "mr-pw"),
    ("dashboard", "db-pw"),
    ("pump-a", "pa-pw"),
];

impl SecureBroker {
    fn start() -> SecureBroker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_ca(d, "ca");
        make_ca(d, "other-ca");
        make_cert(
            d,
            "ca",
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        make_cert(
            d,
            "ca",
            "client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        let passwd = d.join("passwd");
        for (i, (user, pw)) in USERS.iter().enumerate() {
            let mut cmd = Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            run(cmd.arg("-b").arg(&passwd).args([user, pw]));
        }
        let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mosquitto/acl");
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\n\
             cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
             require_certificate true\n\
             allow_anonymous false\npassword_file {d}/passwd\nacl_file {acl}\n\
             user root\npersistence false\n\
             log_dest file {d}/mosquitto.log\nlog_type all\n",
            d = d.display(),
            acl = acl.display()
        );
        SecureBroker {
            broker: OwnBroker::start_config(port, dir, &conf),
            port,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.broker.dir.path().join(name)
    }

    fn log(&self) -> String {
        self.broker.log()
    }
}

/// The real daemon, started with a config file this test writes, under a
/// simulated systemd notify socket (for its STATUS lines).
struct Daemon {
    process: DaemonProcess,
    db: PathBuf,
    notify: NotifySocket,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// `ca`: the CA file to trust; `password`: the password file's content.
    fn start(broker: &SecureBroker, ca: &str, password: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let db = d.join("dosetrack.db");
        std::fs::write(d.join("password"), format!("{password}\n")).unwrap();
        let config = format!(
            "[broker]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"dosetrack-{pid}\"\n\
             username = \"dosetrack\"\npassword_file = \"{d}/password\"\n\
             tls = true\nca_file = \"{ca}\"\nclient_cert_file = \"{cert}\"\n\
             client_key_file = \"{key}\"\n\
             [database]\npath = \"{db}\"\n",
            port = broker.port,
            pid = std::process::id(),
            d = d.display(),
            ca = broker.path(ca).display(),
            cert = broker.path("client.crt").display(),
            key = broker.path("client.key").display(),
            db = db.display(),
        );
        std::fs::write(d.join("dosetrack.toml"), config).unwrap();

        let notify = NotifySocket::bind(d);
        let mut process = DaemonProcess::new(
            [
                "run",
                "--config",
                d.join("dosetrack.toml").to_str().unwrap(),
            ],
            d,
        )
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("DOSETRACK_BROKER_PASSWORD")
        .env_remove("DOSETRACK_BROKER_USERNAME")
        .env_remove("WATCHDOG_USEC");
        process.spawn();
        let daemon = Daemon {
            process,
            db,
            notify,
            dir,
        };
        poll_until("READY=1", Duration::from_secs(20), || {
            daemon.notified().iter().any(|l| l == "READY=1")
        });
        daemon
    }

    /// A file in the daemon's directory (its config is `dosetrack.toml`).
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn notified(&self) -> Vec<String> {
        self.notify.texts()
    }

    fn stored_topics(&self) -> Vec<String> {
        Reader::open(&self.db)
            .unwrap()
            .inputs(0)
            .unwrap()
            .into_iter()
            .map(|s| s.record.topic)
            .collect()
    }

    fn assert_running(&mut self) {
        assert!(self.process.running(), "daemon exited: {}", self.log_text());
    }

    /// SIGTERM; the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate_within(Duration::from_secs(20))
    }
}

derefs_to_process!(Daemon, process);

/// A TLS client (client certificate + username/password) that publishes and
/// records what its subscriptions deliver.
struct Client {
    rt: tokio::runtime::Runtime,
    client: AsyncClient,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    pubacks: Arc<AtomicUsize>,
}

impl Client {
    fn connect(broker: &SecureBroker, user: &str, filters: &[&str]) -> Client {
        let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
        let tls = TlsClient::load(
            &broker.path("ca.crt"),
            Some(ClientIdentity {
                cert_file: &broker.path("client.crt"),
                key_file: &broker.path("client.key"),
                key_setting: "test",
            }),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let id = format!("{user}-test-{}", std::process::id());
        let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_credentials(user, password)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.config(),
            )));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let pubacks = Arc::new(AtomicUsize::new(0));
        let subacks = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicUsize::new(0));
        let (sink, p, s, c) = (
            seen.clone(),
            pubacks.clone(),
            subacks.clone(),
            connected.clone(),
        );
        rt.spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        p.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(m))) => {
                        let text = String::from_utf8_lossy(&m.payload).into_owned();
                        sink.lock().unwrap().push((m.topic.clone(), text));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        poll_until(
            &format!("{user} connected over TLS"),
            Duration::from_secs(10),
            || connected.load(Ordering::SeqCst) > 0,
        );
        for f in filters {
            let cl = client.clone();
            let f = f.to_string();
            rt.block_on(async move { cl.subscribe(f, QoS::AtLeastOnce).await })
                .unwrap();
        }
        poll_until("SUBACKs", Duration::from_secs(10), || {
            subacks.load(Ordering::SeqCst) >= filters.len()
        });
        Client {
            rt,
            client,
            seen,
            pubacks,
        }
    }

    /// Publish at QoS 1 and wait for the broker's PUBACK (also sent when the
    /// ACL drops the message: MQTT 3.1.1 cannot refuse a publish).
    fn publish(&self, topic: &str, payload: String) {
        let before = self.pubacks.load(Ordering::SeqCst);
        let c = self.client.clone();
        let topic = topic.to_owned();
        self.rt
            .block_on(async move { c.publish(topic, QoS::AtLeastOnce, false, payload).await })
            .unwrap();
        poll_until("PUBACK", Duration::from_secs(10), || {
            self.pubacks.load(Ordering::SeqCst) > before
        });
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

fn minutes_ago(m: i64) -> String {
    format_rfc3339(chrono::Utc::now().timestamp_millis() - m * 60_000)
}

#[test]
fn tls_with_client_certificate_and_password_file_and_the_acl() {
    let broker = SecureBroker::start();
    let mut daemon = Daemon::start(&broker, "ca.crt", DAEMON_PASSWORD);
    let dashboard = Client::connect(
        &broker,
        "dashboard",
        &["dosetrack/v1/patients/+/state", "dosetrack/v1/status"],
    );
    poll_until("status online", Duration::from_secs(15), || {
        dashboard
            .seen()
            .iter()
            .any(|(t, p)| t == "dosetrack/v1/status" && p.contains("\"online\""))
    });

    // The medication record admits a patient and gives a dose, over TLS.
    let medrecord = Client::connect(&broker, "medrecord", &[]);
    let t0 = minutes_ago(30);
    medrecord.publish(
        "dosetrack/v1/patients/P-1/admit",
        json!({"id": "adm-1", "time": t0, "weight_kg": 70, "age_years": 40}).to_string(),
    );
    medrecord.publish(
        "dosetrack/v1/patients/P-1/doses",
        json!({"id": "mar-1", "time": t0, "route": "iv_bolus", "amount_mg": 20}).to_string(),
    );
    poll_until("admit and dose stored", Duration::from_secs(15), || {
        daemon.stored_topics().len() >= 2
    });
    assert_eq!(
        daemon.stored_topics(),
        [
            "dosetrack/v1/patients/P-1/admit",
            "dosetrack/v1/patients/P-1/doses"
        ]
    );
    poll_until("a state with the dose", Duration::from_secs(15), || {
        dashboard.seen().iter().any(|(t, p)| {
            t == "dosetrack/v1/patients/P-1/state"
                && serde_json::from_str::<serde_json::Value>(p)
                    .is_ok_and(|v| v["cp_ng_per_ml"].as_f64().is_some_and(|c| c > 0.0))
        })
    });

    // The ACL: pump-a may publish only its own events. Forged first, then
    // its own: once its own event is stored, the forged ones (sent before
    // on the same connection) would have arrived too.
    let pump = Client::connect(&broker, "pump-a", &[]);
    let t1 = minutes_ago(20);
    let event = |id: &str| {
        json!({"id": id, "time": t1, "kind": "infusion_started", "patient_id": "P-1", "rate_mg_per_h": 10})
            .to_string()
    };
    pump.publish("dosetrack/v1/devices/pump-b/events", event("forged-1"));
    pump.publish(
        "dosetrack/v1/patients/P-1/state",
        json!({"forged": true, "cp_ng_per_ml": 9999}).to_string(),
    );
    pump.publish("dosetrack/v1/devices/pump-a/events", event("own-1"));
    poll_until("pump-a's own event stored", Duration::from_secs(15), || {
        daemon.stored_topics().len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        daemon.stored_topics(),
        [
            "dosetrack/v1/patients/P-1/admit",
            "dosetrack/v1/patients/P-1/doses",
            "dosetrack/v1/devices/pump-a/events"
        ],
        "only pump-a's own topic reaches dosetrack"
    );
    assert!(
        !dashboard.seen().iter().any(|(_, p)| p.contains("forged")),
        "a forged state reached the dashboard: {:?}",
        dashboard.seen()
    );
    let mlog = broker.log();
    assert!(
        mlog.contains("Denied PUBLISH") && mlog.contains("'dosetrack/v1/devices/pump-b/events'"),
        "{mlog}"
    );

    // The daemon's view: TLS on, the secret nowhere.
    let check = Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .arg("check-config")
        .arg(daemon.path("dosetrack.toml"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("DOSETRACK_BROKER_PASSWORD")
        .output()
        .unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{check_out}");
    assert!(
        check_out.contains("tls               on: CA ")
            && check_out.contains("client certificate")
            && check_out.contains("password          set (password_file"),
        "{check_out}"
    );
    // A key file that is not there: a config error naming the key, at
    // start (`run` would refuse to start the same way).
    let toml = std::fs::read_to_string(daemon.path("dosetrack.toml")).unwrap();
    let key = broker.path("client.key").display().to_string();
    let bad = daemon.path("bad.toml");
    std::fs::write(&bad, toml.replace(&key, "/nonexistent/client.key")).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .arg("check-config")
        .arg(&bad)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr).into_owned();
    assert_eq!(check.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config broker.client_key_file: cannot read /nonexistent/client.key"),
        "{err}"
    );
    daemon.assert_running();
    assert!(daemon.terminate().success());
    let log = daemon.log_text();
    for secret in [&check_out, &log] {
        assert!(!secret.contains(DAEMON_PASSWORD), "password printed");
        assert!(!secret.contains("PRIVATE KEY"), "key printed");
    }
}

/// Wait for the daemon's specific message, then check it is said once per
/// connection (ingest, publisher) although it keeps retrying, nothing is
/// stored, the status shows it, and SIGTERM stops it cleanly.
fn refused_clearly(broker: &SecureBroker, daemon: &mut Daemon, message: &str, mosquitto: &str) {
    poll_until(message, Duration::from_secs(15), || {
        daemon.log_text().contains(message)
    });
    // Retries go on with back-off (about 5 attempts per connection in 3 s).
    std::thread::sleep(Duration::from_secs(3));
    daemon.assert_running();
    let attempts = broker.log().matches(mosquitto).count();
    assert!(
        attempts >= 4,
        "{attempts} refused attempts at the broker: {}",
        broker.log()
    );
    let log = daemon.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("ERROR") && l.contains(message))
            .count(),
        2,
        "once for the ingest, once for the publisher: {log}"
    );
    assert!(daemon.stored_topics().is_empty());
    let status = daemon
        .notified()
        .into_iter()
        .rev()
        .find(|l| l.starts_with("STATUS="))
        .unwrap();
    assert!(
        status.contains("broker disconnected (reconnecting)") && status.contains(message),
        "{status}"
    );
    assert!(daemon.terminate().success(), "{log}");
    assert!(!log.contains(DAEMON_PASSWORD) && !log.contains("wrong-pw"));
}

#[test]
fn a_wrong_ca_is_a_clear_error_and_the_daemon_keeps_retrying() {
    let broker = SecureBroker::start();
    let mut daemon = Daemon::start(&broker, "other-ca.crt", DAEMON_PASSWORD);
    let message = format!(
        "TLS handshake with broker 127.0.0.1:{} failed: invalid peer certificate: UnknownIssuer — check broker.ca_file",
        broker.port
    );
    refused_clearly(&broker, &mut daemon, &message, "unknown ca");
}

#[test]
fn a_wrong_password_in_the_password_file_is_refused_clearly() {
    let broker = SecureBroker::start();
    let mut daemon = Daemon::start(&broker, "ca.crt", "wrong-pw");
    let message = format!(
        "MQTT broker 127.0.0.1:{} refused the login as user \"dosetrack\": not authorized",
        broker.port
    );
    refused_clearly(&broker, &mut daemon, &message, "not authorised");
}
