use std::{ffi::OsString, io::Write as _};

use clap::{CommandFactory, Parser};

use super::*;

/// A binary's flags, as the servers declare theirs.
#[derive(Parser, Debug)]
#[command(name = "demo")]
struct Demo {
    #[arg(long, default_value = "127.0.0.1:1")]
    listen: String,
    #[arg(long = "domain")]
    domains: Vec<String>,
    #[arg(long, required = true)]
    store: String,
    #[arg(long)]
    insecure: bool,
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<String>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<String>,
    #[arg(long, default_value_t = 4)]
    workers: u32,
    #[arg(long)]
    access_key_secret: Option<String>,
}

fn sources() -> Sources {
    Sources {
        config_env: "TLSFLEET_DEMO_TEST_CONFIG_UNSET",
        default_file: None,
        print_config: true,
    }
}

fn argv(args: &[&str]) -> Vec<OsString> {
    std::iter::once("demo")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn load_demo(args: &[&str]) -> Result<Loaded<Demo>, SettingsError> {
    load_from(Demo::command(), argv(args), &sources())
}

#[test]
fn the_file_fills_what_the_command_line_leaves_unset() {
    let f = file(
        "store = \"file:/var/lib/x\"\nlisten = \"0.0.0.0:9\"\ndomain = [\"a.test\", \"b.test\"]\n\
         insecure = true\nworkers = 8\n",
    );
    let path = f.path().to_str().expect("utf-8 path");
    let got = load_demo(&["--config", path, "--listen", "127.0.0.1:2"]).expect("load");
    assert_eq!(got.args.listen, "127.0.0.1:2", "the command line wins");
    assert_eq!(
        got.args.store, "file:/var/lib/x",
        "a required flag from the file"
    );
    assert_eq!(got.args.domains, ["a.test", "b.test"]);
    assert!(got.args.insecure);
    assert_eq!(got.args.workers, 8);
    assert_eq!(got.file.as_deref(), Some(f.path()));
    // A repeatable flag given on the command line replaces the file's list.
    let got = load_demo(&["--config", path, "--domain", "c.test"]).expect("load");
    assert_eq!(got.args.domains, ["c.test"]);
}

#[test]
fn snake_case_keys_are_the_same_settings() {
    let f = file("store = \"s\"\ntls_cert = \"c.pem\"\ntls-key = \"k.pem\"\n");
    let got = load_demo(&["--config", f.path().to_str().expect("path")]).expect("load");
    assert_eq!(got.args.tls_cert.as_deref(), Some("c.pem"));
    assert_eq!(got.args.tls_key.as_deref(), Some("k.pem"));
}

#[test]
fn unknown_keys_and_wrong_kinds_are_errors_naming_the_file_and_key() {
    let f = file("store = \"s\"\nlisten-adress = \"0.0.0.0:1\"\n");
    let err = load_demo(&["--config", f.path().to_str().expect("path")]).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, SettingsError::UnknownKey { key, .. } if key == "listen-adress"),
        "{text}"
    );
    assert!(
        text.contains(&f.path().display().to_string()) && text.contains("listen"),
        "{text}"
    );

    for (bad, why) in [
        ("insecure = \"yes\"", "true or false"),
        ("listen = [\"a\", \"b\"]", "not repeatable"),
        ("listen = { host = \"a\" }", "string, number or boolean"),
        ("domain = [[\"a\"]]", "string, number or boolean"),
    ] {
        let f = file(&format!("store = \"s\"\n{bad}\n"));
        let err = load_demo(&["--config", f.path().to_str().expect("path")]).unwrap_err();
        assert!(
            matches!(&err, SettingsError::BadValue { .. }) && err.to_string().contains(why),
            "{bad}: {err}"
        );
    }
    let f = file("store = \n");
    let err = load_demo(&["--config", f.path().to_str().expect("path")]).unwrap_err();
    assert!(matches!(err, SettingsError::Toml { .. }), "{err}");
    let err = load_demo(&["--config", "/nonexistent/tlsfleet.toml"]).unwrap_err();
    assert!(matches!(err, SettingsError::Read { .. }), "{err}");
}

#[test]
fn file_values_get_the_flags_own_checks() {
    // A value the flag's parser refuses.
    let f = file("store = \"s\"\nworkers = -1\n");
    let err = load_demo(&["--config", f.path().to_str().expect("path")]).unwrap_err();
    assert!(matches!(err, SettingsError::Clap(_)), "{err}");
    // A flag that requires another, set alone in the file.
    let f = file("store = \"s\"\ntls-cert = \"c.pem\"\n");
    let err = load_demo(&["--config", f.path().to_str().expect("path")]).unwrap_err();
    assert!(err.to_string().contains("tls-key"), "{err}");
    // Without the file, the required flag is missing.
    assert!(load_demo(&[]).is_err());
}

#[test]
fn print_config_reads_back_to_the_same_settings_with_secrets_masked() {
    let f = file("store = \"file:/srv\"\ndomain = [\"a.test\"]\naccess-key-secret = \"s3cr3t\"\n");
    let got = load_demo(&[
        "--config",
        f.path().to_str().expect("path"),
        "--print-config",
        "--workers",
        "6",
    ])
    .expect("load");
    let text = got.print.expect("printed");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(
        text.contains(&format!("access-key-secret = \"{MASK}\"")),
        "{text}"
    );
    assert!(text.contains("workers = 6  # command line"), "{text}");
    assert!(text.contains("store = \"file:/srv\"  # file"), "{text}");
    assert!(
        text.contains("# tls-cert ="),
        "unset flags are listed: {text}"
    );
    // Read back, it gives the same settings (but the masked secret).
    let back = file(&text);
    let again = load_demo(&["--config", back.path().to_str().expect("path")]).expect("load");
    assert_eq!(
        (
            again.args.store.as_str(),
            again.args.domains.clone(),
            again.args.workers
        ),
        ("file:/srv", vec!["a.test".to_owned()], 6)
    );
    assert_eq!(again.args.access_key_secret.as_deref(), Some(MASK));
    assert!(again.print.is_none());
}

#[test]
fn every_long_flag_has_its_environment_variable() {
    let cmd = with_settings_flags(Demo::command(), &sources());
    let envs: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|a| takes_setting(a))
        .map(|a| {
            (
                a.get_long().unwrap_or_default().to_owned(),
                a.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        envs.contains(&("tls-cert".into(), "TLSFLEET_TLS_CERT".into())),
        "{envs:?}"
    );
    assert!(
        envs.iter().all(|(_, e)| e.starts_with(ENV_PREFIX)),
        "{envs:?}"
    );
}
