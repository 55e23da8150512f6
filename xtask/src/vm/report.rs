//! Reading libtest's output from a results directory and summing up per
//! kernel: which tests ran, passed, failed and were ignored, and why each
//! failure failed (the first line of its panic message).

use std::fs;
use std::path::Path;

use super::select::TestRun;

#[derive(Default)]
pub struct RunResult {
    pub name: String,
    /// None: the run never finished (the guest died or was cut off).
    pub rc: Option<i32>,
    pub passed: usize,
    pub ignored: usize,
    /// Test name and the first line of its panic message.
    pub failed: Vec<(String, String)>,
}

impl RunResult {
    pub fn ran(&self) -> usize {
        self.passed + self.failed.len()
    }

    /// Failed as a whole: a failed test, or a bad exit with none named
    /// (a crash, a time-out, an executable that did not start).
    pub fn broken(&self) -> Option<String> {
        match self.rc {
            None => Some("did not finish (guest died or was cut off)".into()),
            Some(0) => None,
            Some(_) if !self.failed.is_empty() => None,
            Some(124) => Some("timed out".into()),
            Some(rc) => Some(format!("exit {rc} without a failed test")),
        }
    }
}

pub fn read(results: &Path, runs: &[TestRun]) -> Vec<RunResult> {
    runs.iter()
        .map(|b| {
            let rc = fs::read_to_string(results.join(format!("{}.rc", b.stem())))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let out =
                fs::read_to_string(results.join(format!("{}.out", b.stem()))).unwrap_or_default();
            let mut r = parse(&out);
            r.name = b.name.clone();
            r.rc = rc;
            r
        })
        .collect()
}

/// libtest's plain output: `test NAME ... ok|FAILED|ignored` per test; at
/// the end a `failures:` list of names and `test result: ... N passed; M
/// failed; K ignored`, which win when present (a test's children may write
/// between a name and its verdict); a `---- NAME stdout ----` block holds
/// each failure's panic.
fn parse(out: &str) -> RunResult {
    let mut r = RunResult::default();
    let mut failed = Vec::new();
    for line in out.lines() {
        let Some((name, verdict)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        else {
            continue;
        };
        let verdict = verdict.trim();
        if verdict == "ok" {
            r.passed += 1;
        } else if verdict.starts_with("ignored") {
            r.ignored += 1;
        } else if verdict == "FAILED" {
            failed.push(name.trim().to_string());
        }
    }
    if let Some(listed) = failures_list(out) {
        failed = listed;
    }
    if let Some(summary) = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("test result: "))
    {
        let count = |what: &str| {
            summary.split(';').find_map(|part| {
                let (n, w) = part.trim().rsplit_once(' ')?;
                let n = n.rsplit(' ').next()?;
                (w == what).then(|| n.parse().ok()).flatten()
            })
        };
        r.passed = count("passed").unwrap_or(r.passed);
        r.ignored = count("ignored").unwrap_or(r.ignored);
    }
    r.failed = failed
        .into_iter()
        .map(|name| {
            let why = panic_line(out, &name).unwrap_or_else(|| "no panic message found".into());
            (name, why)
        })
        .collect();
    r
}

/// The names under the last `failures:` heading (the second one; the first
/// heads the panic blocks).
fn failures_list(out: &str) -> Option<Vec<String>> {
    let at = out.rfind("\nfailures:\n")?;
    let names: Vec<String> = out[at..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The first line of a failure's panic message, and where the message
/// quotes the controller's `error:` line, that too; of a verifier log only
/// its end, which says what the verifier refused.
fn panic_line(out: &str, test: &str) -> Option<String> {
    let header = format!("---- {test} stdout ----");
    let start = out.find(&header)? + header.len();
    let block = &out[start..];
    let block = &block[..block.find("\n---- ").unwrap_or(block.len())];
    let mut lines = block.lines().skip_while(|l| !l.contains("panicked at"));
    let at = lines.next()?;
    // Since Rust 1.73 the message follows on the next line; before, on the
    // same one after the location.
    let msg = lines
        .clone()
        .find(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace:"))
        .unwrap_or(at)
        .trim();
    let Some(error) = lines.find_map(|l| l.find("error: ").map(|i| &l[i..])) else {
        return Some(shorten(msg, 200));
    };
    let error = match error.split_once("Verifier output:") {
        Some((head, log)) => {
            let log = log.split(" verification time").next().unwrap_or(log).trim();
            let skip = log.chars().count().saturating_sub(120);
            let tail: String = log.chars().skip(skip).collect();
            format!("{} verifier: …{tail}", head.trim_end())
        }
        None => shorten(error, 200),
    };
    Some(format!("{} {error}", shorten(msg, 120)))
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_verdicts_and_panics() {
        let out = "\
running 4 tests
test a::one ... ok
test two ... FAILED
test three ... ignored, needs a NIC
test four ... stray output of a child
ok

failures:

---- two stdout ----

thread 'two' panicked at tests/tests/x.rs:10:5:
macvswitch endpoint add vm1 failed (exit status: 1):
stderr: error: eBPF: loading program p: Verifier output: 0: (bf) r7 = r1 invalid read from stack R10 off=-296 size=8 verification time 856388 usec stack depth 296
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

failures:
    two

test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out
";
        let r = parse(out);
        assert_eq!(r.passed, 2);
        assert_eq!(r.ignored, 1);
        assert_eq!(
            r.failed,
            vec![(
                "two".to_string(),
                "macvswitch endpoint add vm1 failed (exit status: 1): error: eBPF: loading \
                 program p: verifier: …0: (bf) r7 = r1 invalid read from stack R10 off=-296 size=8"
                    .to_string()
            )]
        );
    }
}
