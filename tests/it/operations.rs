//! Operator commands of the service, through the real binary:
//! `dosetrack check-config` (the shipped config, a bad value, a bad drug
//! file), `dosetrack db backup` (an online copy while the store's writer
//! is writing; refusing to overwrite) and the hidden `dosetrack generate`
//! (shell completions and man pages for the package).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dosetrack::store::{HistoryRow, StoreConfig, WriteOp, Writer};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn dosetrack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("DOSETRACK_BROKER_PASSWORD")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dosetrack.toml");

/// The shipped config with its device allow-list (`allow_file`) pointed at
/// `list` in `dir`; the path of the copy.
fn shipped_with_allow_file(dir: &Path, list: &str) -> std::path::PathBuf {
    let allow = dir.join("devices.allow");
    std::fs::write(&allow, list).unwrap();
    let text = std::fs::read_to_string(SHIPPED).unwrap();
    let line = "allow_file = \"/etc/dosetrack/devices.allow\"";
    assert!(
        text.contains(line),
        "the shipped config turns the allow-list on"
    );
    let copy = dir.join("dosetrack.toml");
    std::fs::write(
        &copy,
        text.replace(line, &format!("allow_file = {:?}", allow.to_str().unwrap())),
    )
    .unwrap();
    copy
}

#[test]
fn check_config_accepts_the_shipped_config() {
    // As installed, the allow-list names no device: check-config says what
    // to do, and the daemon would not start.
    let dir = tempfile::tempdir().unwrap();
    let shipped_list = include_str!("../../config/devices.allow");
    let cfg = shipped_with_allow_file(dir.path(), shipped_list);
    let o = dosetrack(&["check-config", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("lists no device"), "{err}");
    // With the ward's devices listed, it is valid.
    let cfg = shipped_with_allow_file(dir.path(), "pump-bed-01\npatch-bed-01\n");
    let o = dosetrack(&["check-config", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("dosetrack.toml: valid"), "{out}");
    assert!(out.contains("2 on the allow-list"), "{out}");
    assert!(out.contains("drug file: built-in"), "{out}");
    assert!(out.contains("127.0.0.1:1883"), "{out}");
    assert!(out.contains("/var/lib/dosetrack/dosetrack.db"), "{out}");
    assert!(out.contains("password          not set"), "{out}");
    assert!(out.contains("history 90 days, every 6 h"), "{out}");
}

#[test]
fn check_config_names_the_bad_key_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[broker]\nport = 0\n").unwrap();
    let o = dosetrack(&["check-config", bad.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("broker.port"), "{err}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[database]\npaht = \"x.db\"\n").unwrap();
    let o = dosetrack(&["check-config", typo.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("paht"), "{err}");

    // A password from the credential is reported as set, never printed.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[broker]\nusername = \"dt\"\n").unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("broker-password"), "hunter2-s3cret\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .args(["check-config", good.to_str().unwrap()])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("set (systemd credential)"), "{out}");
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
}

#[test]
fn check_config_checks_the_drug_file_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/drugs/ketamine.toml"
    ))
    .unwrap();
    // An unknown key in the drug file.
    let drug = dir.path().join("drug.toml");
    std::fs::write(&drug, format!("not_a_key = 1\n{builtin}")).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[drug]\nfile = {:?}\n", drug.to_str().unwrap()),
    )
    .unwrap();
    let o = dosetrack(&["check-config", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("drug file") && err.contains("not_a_key"),
        "{err}"
    );

    // A missing drug file.
    std::fs::write(&cfg, "[drug]\nfile = \"/nonexistent/drug.toml\"\n").unwrap();
    let o = dosetrack(&["check-config", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("/nonexistent/drug.toml"), "{err}");

    // The good copy passes.
    std::fs::write(&drug, &builtin).unwrap();
    std::fs::write(
        &cfg,
        format!("[drug]\nfile = {:?}\n", drug.to_str().unwrap()),
    )
    .unwrap();
    let o = dosetrack(&["check-config", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("drug.toml: valid"), "{out}");
}

fn row(t_ms: i64) -> HistoryRow {
    HistoryRow {
        patient_id: "P-1".to_owned(),
        t_ms,
        cp_ng_per_ml: 1.0,
        ce_ng_per_ml: 2.0,
    }
}

fn history_times(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT t_ms FROM concentration_history ORDER BY t_ms")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn db_backup_is_consistent_while_the_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let (writer, thread) = Writer::open(StoreConfig::new(&db)).unwrap();

    // A writer committing one point at a time, as fast as it can.
    let committed = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer.clone();
    let (c, s) = (committed.clone(), stop.clone());
    let load = std::thread::spawn(move || {
        let mut t = 0;
        while !s.load(Ordering::Relaxed) {
            t += 1;
            w.write_blocking(WriteOp::History(vec![row(t)])).unwrap();
            c.store(t, Ordering::SeqCst);
        }
        t
    });
    while committed.load(Ordering::SeqCst) < 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }

    let copy = dir.path().join("copy.db");
    let before = committed.load(Ordering::SeqCst);
    let o = dosetrack(&[
        "db",
        "backup",
        copy.to_str().unwrap(),
        "--database",
        db.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("integrity ok"), "{out}");
    // Still writing during and after the backup.
    let during = committed.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let last = load.join().unwrap();
    drop(writer);
    thread.shutdown().unwrap();
    assert!(last > during, "the writer kept writing");

    // The copy: one file, sound, every point committed before the backup
    // began, and a gap-free prefix (a snapshot, not a mixture).
    assert!(!dir.path().join("copy.db-wal").exists());
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let times = history_times(&copy);
    let n = i64::try_from(times.len()).unwrap();
    assert!(
        n >= before,
        "copy has {n} points, {before} committed before"
    );
    assert!(n <= last);
    assert_eq!(times, (1..=n).collect::<Vec<_>>());
    eprintln!("{before} committed before the backup, {n} in the copy, {last} in the end");

    // An existing file is refused without --force, replaced with it.
    let o = dosetrack(&[
        "db",
        "backup",
        copy.to_str().unwrap(),
        "--database",
        db.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(history_times(&copy).len(), times.len(), "untouched");
    let o = dosetrack(&[
        "db",
        "backup",
        copy.to_str().unwrap(),
        "--database",
        db.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(i64::try_from(history_times(&copy).len()).unwrap(), last);

    // No database: exit 2.
    let o = dosetrack(&[
        "db",
        "backup",
        dir.path().join("x.db").to_str().unwrap(),
        "--database",
        dir.path().join("missing.db").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}

#[test]
fn generate_writes_completions_and_man_pages_and_stays_hidden() {
    let o = dosetrack(&["--help"]);
    let (out, _) = text(&o);
    assert!(out.contains("check-config"), "{out}");
    assert!(!out.contains("generate"), "hidden from --help: {out}");

    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let o = dosetrack(&["generate", "completions", shell]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{shell}: {err}");
        // fish spells options `-l drug-file`.
        for word in ["check-config", "backup", "drug-file"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
        if shell == "bash" {
            let file = dir.path().join("dosetrack.bash");
            std::fs::write(&file, &out).unwrap();
            let bash = Command::new("bash").arg("-n").arg(&file).output().unwrap();
            assert!(bash.status.success(), "{:?}", text(&bash));
        }
    }
    let o = dosetrack(&["generate", "completions", "tcsh"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let man = dir.path().join("man");
    let o = dosetrack(&["generate", "man", man.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    for page in [
        "dosetrack.1",
        "dosetrack-run.1",
        "dosetrack-check-config.1",
        "dosetrack-db-backup.1",
    ] {
        let path = man.join(page);
        assert!(
            out.contains(path.to_str().unwrap()),
            "{page} not listed: {out}"
        );
        let roff = std::fs::read_to_string(&path).unwrap();
        assert!(roff.contains(".TH "), "{page} is not a man page");
    }
    let main = std::fs::read_to_string(man.join("dosetrack.1")).unwrap();
    assert!(
        main.contains("check\\-config"),
        "dosetrack.1 lists the subcommands"
    );
    assert!(
        !man.join("dosetrack-generate.1").exists(),
        "no page for the hidden command"
    );
}
