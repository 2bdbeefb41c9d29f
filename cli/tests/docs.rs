//! `tlsfleetctl completion` and `tlsfleetctl man`, run as the binary: no control plane, no key.

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
