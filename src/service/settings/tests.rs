//! Tests of the configuration: loading, precedence, validation, secrets,
//! TLS files, reload.

use super::*;

const SHIPPED: &str = include_str!("../../../config/dosetrack.toml");

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_shipped_file_is_the_defaults() {
    let mut cfg = Config::from_toml_str(SHIPPED, Path::new("config/dosetrack.toml")).unwrap();
    let mut expected = Config::default();
    expected.database.path = PathBuf::from("/var/lib/dosetrack/dosetrack.db");
    // The built-in default has no listener; the shipped file turns it on
    // (loopback).
    expected.http.listen = Some("127.0.0.1:9187".to_owned());
    // The shipped file turns the device allow-list on (the hardening the
    // package ships, item 13 of issue #13).
    expected.devices.allow_file = Some(PathBuf::from("/etc/dosetrack/devices.allow"));
    assert_eq!(cfg, expected);
    // As shipped, the list names no device: the daemon does not start
    // until the ward's devices are listed, and says so.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("devices.allow");
    std::fs::write(&list, include_str!("../../../config/devices.allow")).unwrap();
    cfg.devices.allow_file = Some(list.clone());
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("lists no device"), "{err}");
    // With one device listed, the shipped file is valid.
    std::fs::write(&list, "pump-bed-01\n").unwrap();
    cfg.validate().unwrap();
}

#[test]
fn precedence_is_defaults_file_env_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[broker]\nhost = \"broker.ward\"\nport = 8883\nusername = \"file\"\n",
    )
    .unwrap();
    let env = |k: &str| match k {
        ENV_USERNAME => Some("env-user".to_owned()),
        ENV_PASSWORD => Some("s3cret".to_owned()),
        _ => None,
    };
    let cfg = Config::load(
        Some(&path),
        env,
        &Overrides {
            broker: Some("mqtt://127.0.0.1:1999".into()),
            database: Some("/tmp/x.db".into()),
            topic_prefix: Some("test-1".into()),
            client_id: Some("dt-test".into()),
            log_format: Some(LogFormat::Json),
        },
    )
    .unwrap();
    assert_eq!(
        (cfg.broker.host.as_str(), cfg.broker.port),
        ("127.0.0.1", 1999)
    );
    assert_eq!(cfg.broker.username.as_deref(), Some("env-user"));
    assert_eq!(cfg.broker.password.as_deref(), Some("s3cret"));
    assert_eq!(cfg.topics.prefix, "test-1");
    assert_eq!(cfg.broker.client_id, "dt-test");
    assert_eq!(cfg.database.path, PathBuf::from("/tmp/x.db"));
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert!(
        !format!("{cfg:?}").contains("s3cret"),
        "password must not be printed"
    );
}

#[test]
fn typos_and_bad_values_are_errors_naming_the_key() {
    let typo = Config::from_toml_str("[broker]\nhots = \"x\"\n", Path::new("c.toml"));
    assert!(matches!(typo, Err(ConfigError::Parse { message, .. }) if message.contains("hots")));
    for (text, key) in [
        ("[broker]\nport = 0\n", "broker.port"),
        ("[broker]\nclient_id = \"has space\"\n", "broker.client_id"),
        (
            "[broker]\nmax_packet_bytes = 1000\n",
            "broker.max_packet_bytes",
        ),
        ("[topics]\nprefix = \"a/#\"\n", "topics.prefix"),
        (
            "[state]\nforecast_horizon_h = 0\n",
            "state.forecast_horizon_h",
        ),
        ("[database]\nbatch_max = 0\n", "database.batch_max"),
        ("[http]\nlisten = \"localhost\"\n", "http.listen"),
        ("[http]\nmax_unacked_age_s = 0\n", "http.max_unacked_age_s"),
        ("[log]\nlevel = \"dosetrack=loud\"\n", "log.level"),
        ("[limits]\nmax_past_age_h = 0\n", "limits.max_past_age_h"),
        ("[devices]\nallow = [\"pump 1\"]\n", "devices.allow"),
        (
            "[database]\nhistory_retention_days = 36501\n",
            "database.history_retention_days",
        ),
        (
            "[database]\nmaintenance_interval_h = 0\n",
            "database.maintenance_interval_h",
        ),
        (
            "[database]\nmaintenance_interval_h = 169\n",
            "database.maintenance_interval_h",
        ),
    ] {
        let cfg = Config::from_toml_str(text, Path::new("c.toml")).unwrap();
        match cfg.validate() {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn the_device_allow_list_is_the_union_of_allow_and_allow_file() {
    assert_eq!(DevicesSection::default().allowed().unwrap(), None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices.allow");
    std::fs::write(&file, "# ward 7 pumps\npump-1\n\n  pump-2  # bed 2\n").unwrap();
    let text = format!(
        "[devices]\nallow = [\"patch-9\"]\nallow_file = {:?}\n",
        file.to_str().unwrap()
    );
    let cfg = Config::from_toml_str(&text, Path::new("c.toml")).unwrap();
    cfg.validate().unwrap();
    let allowed = cfg.devices.allowed().unwrap().unwrap();
    let mut ids: Vec<_> = allowed.into_iter().collect();
    ids.sort();
    assert_eq!(ids, ["patch-9", "pump-1", "pump-2"]);
    // An empty file, a bad id, a missing file: errors, never "allow all".
    for (content, what) in [("# none\n", "no device"), ("pump 3\n", "line 1")] {
        std::fs::write(&file, content).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(cfg.validate(), Err(ConfigError::Io { .. })));
}

#[test]
fn the_password_credential_wins_over_the_environment_and_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().to_str().unwrap().to_owned();
    let env = |k: &str| match k {
        ENV_PASSWORD => Some("from-env".to_owned()),
        ENV_CREDENTIALS_DIRECTORY => Some(creds.clone()),
        _ => None,
    };
    // Absent credential: the environment's.
    let cfg = Config::load(None, env, &Overrides::default()).unwrap();
    assert_eq!(cfg.broker.password.as_deref(), Some("from-env"));
    std::fs::write(dir.path().join(CREDENTIAL_PASSWORD), "cred-s3cret\n").unwrap();
    let cfg = Config::load(None, env, &Overrides::default()).unwrap();
    assert_eq!(cfg.broker.password.as_deref(), Some("cred-s3cret"));
    assert!(!format!("{cfg:?}").contains("cred-s3cret"));
}

#[test]
fn the_password_file_is_read_at_start_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "file-s3cret\n").unwrap();
    let path = dir.path().join("c.toml");
    let text = format!(
        "[broker]\nusername = \"dt\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    std::fs::write(&path, &text).unwrap();
    let cfg = Config::load(Some(&path), no_env, &Overrides::default()).unwrap();
    assert_eq!(cfg.broker.password.as_deref(), Some("file-s3cret"));
    assert!(!format!("{cfg:?}").contains("file-s3cret"));
    // Missing, or set together with `password`: errors naming the key.
    std::fs::remove_file(&pw).unwrap();
    let missing = Config::load(Some(&path), no_env, &Overrides::default());
    assert!(
        matches!(
            missing,
            Err(ConfigError::Invalid {
                key: "broker.password_file",
                ..
            })
        ),
        "{missing:?}"
    );
    std::fs::write(&path, format!("{text}password = \"x\"\n")).unwrap();
    let both = Config::load(Some(&path), no_env, &Overrides::default());
    assert!(
        matches!(
            both,
            Err(ConfigError::Invalid {
                key: "broker.password_file",
                ..
            })
        ),
        "{both:?}"
    );
}

#[test]
fn tls_settings_are_checked_and_their_files_read_at_start() {
    for (text, key) in [
        ("[broker]\ntls = true\n", "broker.ca_file"),
        ("[broker]\nca_file = \"/x/ca.crt\"\n", "broker.ca_file"),
        (
            "[broker]\ntls = true\nca_file = \"/x/ca.crt\"\nclient_key_file = \"/x/k\"\n",
            "broker.client_cert_file",
        ),
    ] {
        let cfg = Config::from_toml_str(text, Path::new("c.toml")).unwrap();
        match cfg.validate() {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let ca = dir.path().join("nope.crt");
    std::fs::write(
        &path,
        format!("[broker]\ntls = true\nca_file = \"{}\"\n", ca.display()),
    )
    .unwrap();
    match Config::load(Some(&path), no_env, &Overrides::default()) {
        Err(
            e @ ConfigError::Invalid {
                key: "broker.ca_file",
                ..
            },
        ) => {
            assert!(e.to_string().contains("nope.crt"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // A client certificate needs a key (file or credential).
    std::fs::write(&ca, "not pem").unwrap();
    std::fs::write(
        &path,
        format!(
            "[broker]\ntls = true\nca_file = \"{}\"\nclient_cert_file = \"{}\"\n",
            ca.display(),
            ca.display()
        ),
    )
    .unwrap();
    let no_key = Config::load(Some(&path), no_env, &Overrides::default());
    assert!(
        matches!(
            no_key,
            Err(ConfigError::Invalid {
                key: "broker.client_key_file",
                ..
            })
        ),
        "{no_key:?}"
    );
}

#[test]
fn broker_urls() {
    assert_eq!(
        parse_broker_url("mqtt://127.0.0.1:1883").unwrap(),
        ("127.0.0.1".into(), 1883)
    );
    assert_eq!(
        parse_broker_url("broker:1999").unwrap(),
        ("broker".into(), 1999)
    );
    assert_eq!(
        parse_broker_url("mqtt://broker").unwrap(),
        ("broker".into(), 1883)
    );
    assert!(parse_broker_url("mqtts://broker:8883").is_err());
    assert!(parse_broker_url("mqtt://:1883").is_err());
    assert!(parse_broker_url("mqtt://h:0").is_err());
    assert!(parse_broker_url("mqtt://h:99999").is_err());
    assert!(Config::load(None, no_env, &Overrides::default()).is_ok());
}

fn t(text: &str) -> toml::Table {
    text.parse().unwrap()
}

#[test]
fn command_line_keys_are_left_out() {
    let old = t("[broker]\nport = 1883\n[topics]\nprefix = \"a\"\n");
    let new = t("[broker]\nport = 1884\n[topics]\nprefix = \"b\"\n");
    let o = Overrides {
        broker: Some("mqtt://h:1".into()),
        ..Overrides::default()
    };
    let c = dosetrack_core::reload::classify(&old, &new, &overridden_keys(&o), &t(""), &t(""));
    assert!(c.applied.is_empty());
    assert_eq!(c.refused.len(), 1);
    assert_eq!(c.refused[0].key, "topics.prefix");
}

#[test]
fn apply_takes_only_the_reloadable_sections() {
    let running = Config::default();
    let mut new = Config::default();
    new.broker.port = 1884;
    new.topics.prefix = "other".into();
    new.alerts.high_lead_min = 5.0;
    new.state.interval_s = 7;
    new.limits.max_future_skew_s = 1;
    new.log.level = "debug".into();
    new.log.format = LogFormat::Json;
    let cfg = reload_apply(&running, &new);
    assert_eq!(cfg.broker, running.broker);
    assert_eq!(cfg.topics, running.topics);
    assert_eq!(cfg.log.format, running.log.format);
    assert_eq!(cfg.alerts.high_lead_min, 5.0);
    assert_eq!(cfg.state.interval_s, 7);
    assert_eq!(cfg.limits.max_future_skew_s, 1);
    assert_eq!(cfg.log.level, "debug");
}

#[test]
fn time_zone_names_are_checked_for_form() {
    for ok in [
        "UTC",
        "Europe/Paris",
        "America/Argentina/Buenos_Aires",
        "Etc/GMT+2",
    ] {
        assert!(super::is_time_zone_name(ok), "{ok}");
    }
    for bad in [
        "",
        "/etc/passwd",
        "Europe//Paris",
        "../x",
        "Europe/Paris\"><script>",
        "UTC ",
        "1/2",
    ] {
        assert!(!super::is_time_zone_name(bad), "{bad}");
    }
}

#[test]
fn acknowledging_from_the_page_is_checked_and_its_tokens_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let tokens = dir.path().join("tokens");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), no_env, &Overrides::default())
    };
    let key_of = |r: Result<Config, ConfigError>| match r {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    };
    // Off by default, and off needs nothing.
    assert!(!Config::default().http.acknowledge.enabled);
    load("[http]\nlisten = \"127.0.0.1:9187\"\n").unwrap();
    // On needs the listener.
    assert_eq!(
        key_of(load("[http.acknowledge]\nenabled = true\n")),
        "http.acknowledge.enabled"
    );
    // The proxy's header only on loopback (elsewhere anyone could set it).
    assert_eq!(
        key_of(load(
            "[http]\nlisten = \"0.0.0.0:9187\"\n[http.acknowledge]\nenabled = true\n"
        )),
        "http.acknowledge.identity"
    );
    let proxy = load(
        "[http]\nlisten = \"127.0.0.1:9187\"\n[http.acknowledge]\nenabled = true\n\
         header = \"X-Forwarded-User\"\n",
    )
    .unwrap();
    assert_eq!(
        proxy.http.acknowledge.identity,
        OperatorIdentity::ProxyHeader
    );
    assert_eq!(
        key_of(load(
            "[http]\nlisten = \"127.0.0.1:9187\"\n[http.acknowledge]\nenabled = true\n\
             header = \"X User\"\n"
        )),
        "http.acknowledge.header"
    );
    // Tokens: a file is needed, read at start, checked, never printed.
    let token_cfg = format!(
        "[http]\nlisten = \"0.0.0.0:9187\"\n[http.acknowledge]\nenabled = true\n\
         identity = \"token\"\ntokens_file = \"{}\"\n",
        tokens.display()
    );
    assert_eq!(
        key_of(load(
            "[http]\nlisten = \"127.0.0.1:9187\"\n[http.acknowledge]\nenabled = true\n\
             identity = \"token\"\n"
        )),
        "http.acknowledge.tokens_file"
    );
    assert!(matches!(load(&token_cfg), Err(ConfigError::Io { .. })));
    for bad in [
        "rn-4471 short\n",
        "rn-4471\n",
        "rn 4471 aaaaaaaaaaaaaaaaaaaaaaaa\n",
        "rn-4471 aaaaaaaaaaaaaaaaaaaaaaaa\nrn-4472 aaaaaaaaaaaaaaaaaaaaaaaa\n",
        "# nobody\n",
    ] {
        std::fs::write(&tokens, bad).unwrap();
        assert_eq!(
            key_of(load(&token_cfg)),
            "http.acknowledge.tokens_file",
            "{bad}"
        );
    }
    std::fs::write(&tokens, "# ward 7\nrn-4471 s3cret-token-of-rn-4471-xyz\n").unwrap();
    let cfg = load(&token_cfg).unwrap();
    assert_eq!(cfg.http.acknowledge.tokens.len(), 1);
    assert_eq!(
        cfg.http
            .acknowledge
            .tokens
            .operator_of("s3cret-token-of-rn-4471-xyz"),
        Some("rn-4471")
    );
    assert_eq!(
        cfg.http
            .acknowledge
            .tokens
            .operator_of("s3cret-token-of-rn-4471-xy"),
        None
    );
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("rn-4471"), "{shown}");
}
