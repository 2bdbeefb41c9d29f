//! What tlsfleetctl does without a control plane (`completion`, `man`) and where it reads its
//! settings (flags, environment, `~/.config/tlsfleet/tlsfleetctl.toml`, `--config`), as the binary.

use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlsfleetctl"))
        .args(args)
        .env_remove("TLSFLEET_ACCESS_KEY_ID")
        .env_remove("TLSFLEET_ACCESS_KEY_SECRET")
        .output()
        .expect("run tlsfleetctl")
}

/// What bash completes after `words` (the last one being typed).
fn bash_completes(words: &str) -> Vec<String> {
    let script = ctl(&["completion", "bash"]);
    assert!(script.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tlsfleetctl.bash");
    std::fs::write(&path, &script.stdout).expect("write");
    let list: Vec<&str> = words.split(' ').collect();
    let n = list.len() - 1;
    let (cur, prev) = (list[n], list[n - 1]);
    // As bash calls a completion function: the command, the word typed, the one before.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={n}; \
             _tlsfleetctl tlsfleetctl '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_subcommands_and_flags() {
    let got = bash_completes("tlsfleetctl ro");
    assert_eq!(got, ["rollout"], "{got:?}");
    let got = bash_completes("tlsfleetctl rollout pro");
    assert_eq!(got, ["promote"], "{got:?}");
    let got = bash_completes("tlsfleetctl put --tls-v");
    assert!(got.contains(&"--tls-versions".to_owned()), "{got:?}");
    // The settings flag is there too.
    let got = bash_completes("tlsfleetctl --conf");
    assert_eq!(got, ["--config"], "{got:?}");
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ctl(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("rollout") && text.contains("access-key-id"),
            "{shell}"
        );
    }
    let out = ctl(&["completion", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_manual_documents_every_command_and_writes_a_page_each() {
    let out = ctl(&["man"]);
    assert!(out.status.success());
    // (roff writes a hyphen as \-)
    let page = String::from_utf8_lossy(&out.stdout).replace("\\-", "-");
    assert!(
        page.starts_with(".ie") || page.contains(".TH tlsfleetctl 1"),
        "{page}"
    );
    for word in [
        "put",
        "rollout",
        "history",
        "--access-key-secret",
        "TLSFLEET_CONTROL",
    ] {
        assert!(page.contains(word), "{word} not in the manual");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ctl(&["man", "--dir", dir.path().to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "tlsfleetctl.1",
        "tlsfleetctl-put.1",
        "tlsfleetctl-rollout-status.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name)).expect(name);
        let title = name.trim_end_matches(".1");
        assert!(text.contains(&format!(".TH {title} 1")), "{name}: {text}");
    }
}

/// tlsfleetctl with only `envs` (and its config dir) set.
fn ctl_env(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlsfleetctl"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run tlsfleetctl")
}

#[test]
fn settings_come_from_flags_then_the_environment_then_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("tlsfleet");
    std::fs::create_dir_all(&conf).expect("mkdir");
    let file = conf.join("tlsfleetctl.toml");
    // Nothing listens on port 1: the error names the URL the command used.
    std::fs::write(
        &file,
        "control = \"http://127.0.0.1:1\"\naccess-key-id = \"AKIDFILE\"\naccess-key-secret = \"s\"\n",
    )
    .expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let xdg = dir.path().to_str().expect("path");
    let said = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // The per-user file, found through XDG_CONFIG_HOME.
    let out = ctl_env(&["agents"], &[("XDG_CONFIG_HOME", xdg)]);
    assert_eq!(out.status.code(), Some(5), "{}", said(&out));
    assert!(said(&out).contains("http://127.0.0.1:1/"), "{}", said(&out));
    // The environment over the file, the flag over both.
    let out = ctl_env(
        &["agents"],
        &[
            ("XDG_CONFIG_HOME", xdg),
            ("TLSFLEET_CONTROL", "http://127.0.0.1:2"),
        ],
    );
    assert!(said(&out).contains("http://127.0.0.1:2/"), "{}", said(&out));
    let out = ctl_env(
        &["agents", "--control", "http://127.0.0.1:3"],
        &[
            ("XDG_CONFIG_HOME", xdg),
            ("TLSFLEET_CONTROL", "http://127.0.0.1:2"),
        ],
    );
    assert!(said(&out).contains("http://127.0.0.1:3/"), "{}", said(&out));
    // --config names another file; an unknown key there is a usage error naming it.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "contrl = \"http://127.0.0.1:4\"\n").expect("write");
    let out = ctl_env(
        &["--config", other.to_str().expect("path"), "agents"],
        &[("XDG_CONFIG_HOME", xdg)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("unknown setting \"contrl\"") && said(&out).contains("other.toml"),
        "{}",
        said(&out)
    );
    // Without a key anywhere: the usage error of old.
    let out = ctl_env(&["agents"], &[("XDG_CONFIG_HOME", "/nonexistent")]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
}
