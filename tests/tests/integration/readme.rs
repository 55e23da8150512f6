//! The README's examples, run as written: every `sh` block's commands in a
//! fresh topology (the README's `eth0` is the test's lower device), every
//! `toml` block applied. A line the test cannot run here (it would change
//! the host, or needs a guest or a hypervisor) must match a rule below that
//! says why, so a new example cannot slip past unexercised.

use std::path::Path;
use std::time::Duration;

use macvswitch_tests::{Harness, TempStateDir, require_root, topology::LOWER};

const README: &str = include_str!("../../../README.md");

/// Lines not run here, and why. Matched as prefixes of a command line.
const NOT_RUN: &[(&str, &str)] = &[
    ("cargo ", "CI runs the cargo commands itself (.ci/run)"),
    (
        "AYA_BUILD_SKIP=1 cargo ",
        "CI runs the cargo commands itself (.ci/run)",
    ),
    ("install ", "installs on the host"),
    (
        "systemctl ",
        "changes the host's services (the unit is verified by the packaging tests)",
    ),
    ("virsh ", "needs libvirt and a domain"),
    (
        "ping ",
        "needs a guest on the VLAN (the host-port tests ping one)",
    ),
    ("ip netns add ", "the harness makes its own namespaces"),
    (
        "mkdir -p /run/msw/bpffs && mount ",
        "the harness mounts its own bpffs",
    ),
];

/// A README code block: its info string and its logical lines
/// (continuations joined, comments and blank lines dropped).
pub(crate) struct Block {
    pub(crate) lang: String,
    pub(crate) first_line: usize,
    pub(crate) text: String,
}

pub(crate) fn blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (n, line) in README.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => {
                    current = Some(Block {
                        lang: info.trim().to_string(),
                        first_line: n + 2,
                        text: String::new(),
                    })
                }
            }
        } else if let Some(block) = &mut current {
            block.text += line;
            block.text += "\n";
        }
    }
    blocks
}

/// Commands of a shell block: continuations joined, comments dropped.
fn commands(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .map(|line| match line.find(" #") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// The README's configuration file, written where its commands name it.
fn config_file(dir: &Path) -> std::path::PathBuf {
    let toml = blocks()
        .into_iter()
        .find(|b| b.lang == "toml")
        .expect("the README has a configuration example");
    let path = dir.join("macvswitch.toml");
    std::fs::write(
        &path,
        toml.text.replace("\"eth0\"", &format!("\"{LOWER}\"")),
    )
    .unwrap();
    path
}

/// Runs one `macvswitch …` line of the README in the harness, with
/// `config` where it names the configuration file; `> FILE` goes to a
/// scratch file.
fn run_line(h: &Harness, scratch: &TempStateDir, config: &Path, line: &str) {
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    // `ip netns exec host macvswitch --bpffs B --state-dir S …`: the
    // harness has its own namespace, bpffs and state directory.
    if words.starts_with(&["ip".into(), "netns".into(), "exec".into()]) {
        words.drain(..4);
    }
    assert_eq!(words[0], "macvswitch", "{line}");
    words.remove(0);
    let mut args = Vec::new();
    let mut out_file = None;
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        match word.as_str() {
            "--bpffs" | "--state-dir" => {
                iter.next();
            }
            ">" => out_file = iter.next(),
            "eth0" => args.push(LOWER.to_string()),
            "/etc/macvswitch.toml" => args.push(config.display().to_string()),
            // Stand-ins for the hypervisor: the same arguments, to `true`.
            "qemu-system-x86_64" => args.push("true".into()),
            _ => args.push(word),
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if args == ["daemon"] || args[0] == "monitor" {
        // Runs until stopped: it must still be running after a while.
        let mut child = h.ctl.spawn(&args);
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            child.try_wait().unwrap().is_none(),
            "README line `{line}`: the daemon exited"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        return;
    }
    let out = h.ctl.run(&args);
    if args[0] == "libvirt-xml" && !out.status.success() {
        // /dev/tapN is global: in a test namespace it may well be another
        // namespace's macvtap, which libvirt-xml refuses as documented.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("another network namespace's macvtap") || err.contains("does not exist"),
            "README line `{line}`: {err}"
        );
        return;
    }
    assert!(
        out.status.success(),
        "README line `{line}` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(file) = out_file {
        let name = Path::new(&file).file_name().unwrap();
        std::fs::write(scratch.path().join(name), &out.stdout).unwrap();
    }
}

fn not_run(line: &str) -> Option<&'static str> {
    NOT_RUN
        .iter()
        .find(|(prefix, _)| line.starts_with(prefix))
        .map(|&(_, why)| why)
}

#[test]
fn every_readme_example_runs_as_written() {
    require_root!();
    let mut ran = 0;
    for block in blocks().iter().filter(|b| b.lang == "sh") {
        let h = Harness::new();
        let scratch = TempStateDir::new();
        let config = config_file(scratch.path());
        let lines = commands(&block.text);
        // A block that uses an endpoint made in an earlier block (the
        // README reads top to bottom) gets it made first.
        for name in used_not_added(&lines) {
            h.add(&name, &["--vlan", "10"]);
        }
        for line in lines {
            if let Some(why) = not_run(&line) {
                eprintln!("README:{}: not run ({why}): {line}", block.first_line);
                continue;
            }
            let line = if line.contains("mac=MAC") {
                line.replace("mac=MAC", &format!("mac={}", vm_mac(&h)))
            } else {
                line
            };
            run_line(&h, &scratch, &config, &line);
            ran += 1;
        }
    }
    assert!(ran >= 40, "only {ran} README commands ran");
}

/// Endpoints the block's commands name but do not add.
fn used_not_added(lines: &[String]) -> Vec<String> {
    let mut used: Vec<String> = Vec::new();
    let mut added: Vec<String> = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, pair) in words.windows(2).enumerate() {
            let before = i.checked_sub(1).map(|at| words[at]);
            let (verb, name) = (pair[0], pair[1]);
            if verb == "add" && before == Some("endpoint") {
                added.push(name.to_string());
                continue;
            }
            let names_endpoint = [
                "exec",
                "libvirt-xml",
                "set",
                "show",
                "del",
                "stats",
                "trace",
            ]
            .contains(&verb)
                && !(verb == "set" && before == Some("uplink"))
                && !name.starts_with('-');
            if names_endpoint && !added.iter().chain(&used).any(|known| known == name) {
                used.push(name.to_string());
            }
        }
    }
    used
}

/// The MAC of `vm1` where the examples use the placeholder `MAC`.
fn vm_mac(h: &Harness) -> String {
    let out = h.ctl.run(&["endpoint", "show", "vm1", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["mac"].as_str().map(str::to_string))
        .unwrap_or_else(|| "02:00:00:00:00:01".into())
}

#[test]
fn the_readme_names_what_it_does_not_run() {
    // Every line of every shell block is run or has a reason: checked
    // without root, so it holds on any machine.
    for block in blocks().iter().filter(|b| b.lang == "sh") {
        for line in commands(&block.text) {
            let runnable = line.starts_with("macvswitch ")
                || line.starts_with("ip netns exec host macvswitch ");
            assert!(
                runnable || not_run(&line).is_some(),
                "README:{}: `{line}` is neither run by this test nor listed in NOT_RUN",
                block.first_line
            );
        }
    }
}
