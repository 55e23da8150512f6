//! Which tests a vm-test entry runs, and in which pieces. The integration
//! tests are one binary with a module per area; each area module (its path,
//! e.g. `port::trunk` or `relay`) is one run, named by that path, with its
//! own time limit, output and exit status, and the tests it runs named
//! exactly (`--exact`). Any other test executable of the package (the
//! support library's self-tests) is one run named after its target.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::run::{self, Workspace};

/// The cargo target of the integration-test binary (tests/tests/integration).
const INTEGRATION: &str = "integration";

/// The CI subset (`--quick`), as module paths of the integration binary:
/// access, trunk and tunnel ports, relay, the host port, upgrade and
/// reload, del and reset, the attach modes and tags carried in the mark,
/// the port-security guards' frames and the drop monitor.
pub const QUICK: &[&str] = &[
    "attach",
    "carriage",
    "endpoint::access",
    "port::trunk",
    "port::tunnel",
    "relay",
    "host_port",
    "lifecycle::upgrade",
    "endpoint::lifecycle",
    "guards::frames",
    "monitor",
];

/// libtest options that take the next argument as their value.
const WITH_VALUE: &[&str] = &[
    "--test-threads",
    "--logfile",
    "--format",
    "--color",
    "--shuffle-seed",
    "-Z",
];

/// One run of a test executable.
pub struct TestRun {
    /// The area's module path (`port::trunk`) or the target's name.
    pub name: String,
    pub path: PathBuf,
    /// The full names of the tests it runs, passed with `--exact`.
    pub tests: Vec<String>,
}

impl TestRun {
    /// The run's file names in a results directory: NAME.out, NAME.rc.
    pub fn stem(&self) -> String {
        self.name.replace("::", ".")
    }

    /// The executable's arguments: the options, then exactly its tests.
    pub fn args(&self, options: &[String]) -> Vec<String> {
        let mut args = options.to_vec();
        args.push("--exact".into());
        args.extend(self.tests.iter().cloned());
        args
    }
}

/// The arguments after `--`, split: name filters (a test runs when its
/// name contains one of them, as libtest would filter) and `--skip`
/// patterns, both applied here since each run names its tests exactly,
/// and the other options, passed on to every run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestArgs {
    pub filters: Vec<String>,
    pub skip: Vec<String>,
    pub options: Vec<String>,
}

impl TestArgs {
    pub fn parse(args: &[String]) -> TestArgs {
        let mut out = TestArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--skip" {
                out.skip.extend(it.next().cloned());
            } else if let Some(p) = a.strip_prefix("--skip=") {
                out.skip.push(p.into());
            } else if WITH_VALUE.contains(&a.as_str()) {
                out.options.push(a.clone());
                out.options.extend(it.next().cloned());
            } else if a.starts_with('-') {
                out.options.push(a.clone());
            } else {
                out.filters.push(a.clone());
            }
        }
        out
    }

    fn wants(&self, test: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|f| test.contains(f.as_str())))
            && !self.skip.iter().any(|s| test.contains(s.as_str()))
    }
}

/// Every run of the package's test executables, built by
/// `cargo test -p macvswitch-tests --no-run`, sorted by name.
pub fn test_runs(ws: &Workspace) -> Result<Vec<TestRun>> {
    let mut cmd = ws.cargo();
    cmd.args([
        "test",
        "-p",
        "macvswitch-tests",
        "--no-run",
        "--message-format=json",
    ])
    .stdout(Stdio::piped());
    println!("$ {}", run::show(&cmd));
    let out = cmd.output().context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "`cargo test -p macvswitch-tests --no-run` failed ({})",
            out.status
        );
    }
    let mut runs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(target), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        let exe = PathBuf::from(exe);
        let target = target.replace('-', "_");
        for test in list(&exe)? {
            let name = match (target.as_str(), test.rsplit_once("::")) {
                (INTEGRATION, Some((module, _))) => module.to_string(),
                _ => target.clone(),
            };
            match runs.iter_mut().find(|r: &&mut TestRun| r.name == name) {
                Some(r) => r.tests.push(test),
                None => runs.push(TestRun {
                    name,
                    path: exe.clone(),
                    tests: vec![test],
                }),
            }
        }
    }
    if runs.is_empty() {
        bail!("`cargo test -p macvswitch-tests --no-run` built no tests");
    }
    runs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(runs)
}

/// The tests of one executable (`--list`, which needs neither root nor a
/// particular kernel).
fn list(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .with_context(|| format!("cannot run {} --list", exe.display()))?;
    if !out.status.success() {
        bail!("{} --list failed ({})", exe.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// The runs `--quick` and `--tests` pick (an area and everything below
/// it: `port` picks `port::trunk` and the rest), with the tests the
/// filters after `--` keep; all runs when nothing is picked.
pub fn select(
    runs: Vec<TestRun>,
    picked: &[String],
    quick: bool,
    args: &TestArgs,
) -> Result<Vec<TestRun>> {
    let mut wanted: Vec<String> = picked.to_vec();
    if quick {
        wanted.extend(QUICK.iter().map(|s| s.to_string()));
    }
    let under = |run: &TestRun, w: &str| {
        run.name == w
            || run
                .name
                .strip_prefix(w)
                .is_some_and(|rest| rest.starts_with("::"))
    };
    for w in &wanted {
        if !runs.iter().any(|r| under(r, w)) {
            bail!(
                "--tests {w}: no such test module; there are {}",
                runs.iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut out: Vec<TestRun> = runs
        .into_iter()
        .filter(|r| wanted.is_empty() || wanted.iter().any(|w| under(r, w)))
        .map(|mut r| {
            r.tests.retain(|t| args.wants(t));
            r
        })
        .filter(|r| !r.tests.is_empty())
        .collect();
    if out.is_empty() {
        bail!("the filters after -- leave no test to run");
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, tests: &[&str]) -> TestRun {
        TestRun {
            name: name.into(),
            path: PathBuf::from("/x"),
            tests: tests.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filters_skips_and_options_are_told_apart() {
        let a = TestArgs::parse(&strings(&[
            "native",
            "--test-threads",
            "1",
            "--skip",
            "tagged",
            "--nocapture",
            "--skip=slow",
        ]));
        assert_eq!(a.filters, ["native"]);
        assert_eq!(a.skip, ["tagged", "slow"]);
        assert_eq!(a.options, ["--test-threads", "1", "--nocapture"]);
    }

    #[test]
    fn an_area_picks_its_modules_and_filters_keep_tests() {
        let runs = vec![
            run("port::trunk", &["port::trunk::native_a", "port::trunk::b"]),
            run("port::tunnel", &["port::tunnel::c"]),
            run("host_port", &["host_port::d"]),
            run("relay", &["relay::e"]),
        ];
        let args = TestArgs::parse(&strings(&["native", "::e"]));
        let got = select(runs, &strings(&["port", "relay"]), false, &args).unwrap();
        let names: Vec<(&str, &[String])> = got
            .iter()
            .map(|r| (r.name.as_str(), r.tests.as_slice()))
            .collect();
        assert_eq!(
            names,
            [
                ("port::trunk", &strings(&["port::trunk::native_a"])[..]),
                ("relay", &strings(&["relay::e"])[..]),
            ]
        );
        // `port` does not pick `host_port`; an unknown area is an error.
        let runs = vec![run("host_port", &["host_port::d"])];
        assert!(select(runs, &strings(&["port"]), false, &TestArgs::default()).is_err());
    }

    #[test]
    fn a_run_names_its_tests_exactly_after_the_options() {
        let r = run("relay", &["relay::a", "relay::b"]);
        assert_eq!(
            r.args(&strings(&["--test-threads=1"])),
            ["--test-threads=1", "--exact", "relay::a", "relay::b"]
        );
        assert_eq!(run("port::trunk", &[]).stem(), "port.trunk");
    }
}
