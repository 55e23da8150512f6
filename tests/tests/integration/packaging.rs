//! What ships around the binary: the systemd unit verifies, the bash
//! completion completes, the man pages render. None of it needs root.

use std::path::Path;
use std::process::Command;

use macvswitch_tests::{TempStateDir, controller};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/systemd/macvswitch.service"
);
/// Where the unit expects the binary (its install lines put it there).
const INSTALLED: &str = "/usr/local/bin/macvswitch";

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_systemd_unit_verifies() {
    if !found("systemd-analyze") {
        eprintln!("skipping: no systemd-analyze (`cargo xtask setup` installs systemd)");
        return;
    }
    // The unit as installed, with this build's binary where it names the
    // installed one (verify checks that the commands exist).
    let unit = std::fs::read_to_string(UNIT).expect("the unit file");
    assert!(
        unit.contains(&format!("ExecStart={INSTALLED} daemon")),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("ExecStartPre=-{INSTALLED} restore")),
        "{unit}"
    );
    assert!(
        unit.contains("Before=libvirtd.service virtqemud.service"),
        "{unit}"
    );
    let bin = controller::binary();
    let dir = TempStateDir::new();
    let copy = dir.path().join("macvswitch.service");
    std::fs::write(&copy, unit.replace(INSTALLED, bin.to_str().unwrap())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: none may appear.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    // The commands the unit runs are the binary's.
    for command in ["daemon", "restore"] {
        let status = Command::new(&bin)
            .args([command, "--help"])
            .output()
            .unwrap()
            .status;
        assert!(status.success(), "macvswitch {command} --help");
    }
}

/// What bash completes for the words of `line` (the last one partial).
fn complete(script: &Path, line: &[&str]) -> Vec<String> {
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _macvswitch macvswitch '{}' '{}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.join(" "),
        line.len() - 1,
        line[line.len() - 1],
        line[line.len().saturating_sub(2)],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("bash");
    macvswitch_tests::netns::check(&out, "bash");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_options() {
    let bin = controller::binary();
    let out = Command::new(&bin)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = TempStateDir::new();
    let script = dir.path().join("macvswitch.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    assert_eq!(complete(&script, &["macvswitch", "endp"]), ["endpoint"]);
    let subcommands = complete(&script, &["macvswitch", "endpoint", ""]);
    for sub in ["add", "set", "del", "list", "show"] {
        assert!(
            subcommands.iter().any(|s| s == sub),
            "{sub}: {subcommands:?}"
        );
    }
    let options = complete(&script, &["macvswitch", "endpoint", "add", "--"]);
    for option in ["--lower", "--vlan", "--trunk", "--mac"] {
        assert!(options.iter().any(|o| o == option), "{option}: {options:?}");
    }
    assert_eq!(
        complete(&script, &["macvswitch", "exec", "--que"]),
        ["--queues"]
    );
    for shell in ["zsh", "fish"] {
        let out = Command::new(&bin)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn man_pages_cover_every_subcommand_and_render() {
    let bin = controller::binary();
    let dir = TempStateDir::new();
    let out = Command::new(&bin)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "macvswitch",
        "macvswitch-endpoint",
        "macvswitch-endpoint-add",
        "macvswitch-endpoint-set",
        "macvswitch-uplink-set",
        "macvswitch-apply",
        "macvswitch-exec",
        "macvswitch-libvirt-xml",
        "macvswitch-completions",
    ] {
        let path = dir.path().join(format!("{page}.1"));
        assert!(path.is_file(), "no {}", path.display());
    }
    // The hidden `man` command has no page of its own.
    assert!(!dir.path().join("macvswitch-man.1").exists());
    if !found("man") {
        eprintln!("skipping the rendering check: no man");
        return;
    }
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("macvswitch-exec.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .expect("man");
    let text = String::from_utf8_lossy(&rendered.stdout);
    for needle in ["NAME", "SYNOPSIS", "--queues", "--fd"] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
}
