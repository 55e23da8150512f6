//! Debian kernels for the VM matrix: which package each entry means, fetched
//! with `apt-get download` and unpacked with `dpkg -x` under
//! `target/vm-cache/kernels/PACKAGE/`, where later runs find them.
//!
//! bookworm's kernels come through the system's own apt sources. bullseye's
//! come through a private apt configuration (its own sources list, lists and
//! cache under `target/vm-cache/apt-bullseye/`) whose source lines point at
//! the same mirror the system uses, so the system's sources stay untouched
//! and no host name is written down here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

/// Where a kernel package comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The system's apt sources (bookworm here).
    System,
    /// A private apt configuration with bullseye's suites.
    Bullseye,
}

/// Which package of a source an entry means.
#[derive(Clone, Copy)]
pub enum Pick {
    /// The image the `linux-image-amd64` metapackage depends on: the
    /// suite's stock kernel.
    Stock,
    /// The highest-versioned `linux-image-X.Y...-amd64` the source offers.
    Newest,
    /// The image the `linux-image-cloud-amd64` metapackage depends on: the
    /// suite's kernel for virtual machines, with few drivers to probe, so
    /// it boots fastest (`cargo xtask guest-test`).
    // vm.rs's copy of this module never picks it (see guest_test.rs).
    #[allow(dead_code)]
    Cloud,
}

/// An unpacked kernel package.
pub struct Kernel {
    pub package: String,
    /// `uname -r` of the kernel, the name of its `lib/modules/` directory.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

pub struct Apt {
    cache: PathBuf,
    updated_system: bool,
    updated_bullseye: bool,
}

impl Apt {
    pub fn new(cache: &Path) -> Apt {
        Apt {
            cache: cache.to_path_buf(),
            updated_system: false,
            updated_bullseye: false,
        }
    }

    /// The package `pick` means in `source`, unpacked (from the cache when
    /// it is there). Runs `apt-get update` (once per run and source) only
    /// when the package lists do not name it or its download fails.
    pub fn kernel(&mut self, source: Source, pick: Pick) -> Result<Kernel> {
        let package = self.package(source, pick)?;
        let dir = self.cache.join("kernels").join(&package);
        if !dir.join(".complete").is_file() {
            let deb = match self.download(source, &package) {
                Ok(deb) => deb,
                Err(_) => {
                    // Stale lists name a version the mirror no longer has.
                    self.update(source)?;
                    self.download(source, &package)?
                }
            };
            unpack(&deb, &dir)?;
            let _ = fs::remove_file(&deb);
        }
        Kernel::from_dir(&package, &dir)
    }

    /// The package `pick` means in `source`, from the current package
    /// lists, or from fresh ones when those do not name one.
    pub fn package(&mut self, source: Source, pick: Pick) -> Result<String> {
        if let Some(p) = self.resolve(source, pick) {
            return Ok(p);
        }
        self.update(source)?;
        self.resolve(source, pick).with_context(|| {
            format!(
                "the {} apt sources offer no {}",
                source.name(),
                pick.describe()
            )
        })
    }

    fn resolve(&self, source: Source, pick: Pick) -> Option<String> {
        match pick {
            Pick::Stock | Pick::Cloud => {
                let out = run::output(
                    self.apt_cache(source)
                        .args(["depends", "--no-recommends", "--no-suggests"])
                        .arg(pick.describe()),
                )?;
                out.lines()
                    .filter_map(|l| l.trim().strip_prefix("Depends:"))
                    .map(str::trim)
                    .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
                    .map(str::to_string)
            }
            Pick::Newest => {
                let out = run::output(self.apt_cache(source).args([
                    "search",
                    "--names-only",
                    r"^linux-image-[0-9].*-amd64$",
                ]))?;
                out.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter_map(|p| Some((image_version(p)?, p)))
                    .max()
                    .map(|(_, p)| p.to_string())
            }
        }
    }

    fn update(&mut self, source: Source) -> Result<()> {
        let done = match source {
            Source::System => &mut self.updated_system,
            Source::Bullseye => &mut self.updated_bullseye,
        };
        if *done {
            return Ok(());
        }
        *done = true;
        let mut cmd = self.apt_get(source)?;
        cmd.arg("update");
        run::check(&mut cmd)
    }

    fn download(&self, source: Source, package: &str) -> Result<PathBuf> {
        let debs = self.cache.join("debs");
        fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
        let mut cmd = self.apt_get(source)?;
        cmd.current_dir(&debs).args(["download", package]);
        run::check(&mut cmd)?;
        let prefix = format!("{package}_");
        fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .with_context(|| {
                format!(
                    "apt-get download {package} left no .deb in {}",
                    debs.display()
                )
            })
    }

    fn apt_get(&self, source: Source) -> Result<Command> {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "-q",
            "-y",
            // Downloads land in target/, which the _apt user may not write.
            "-o",
            "APT::Sandbox::User=root",
        ]);
        if source == Source::Bullseye {
            cmd.args(self.bullseye_options()?);
        }
        Ok(cmd)
    }

    fn apt_cache(&self, source: Source) -> Command {
        let mut cmd = Command::new("apt-cache");
        if source == Source::Bullseye {
            // Before the first update the private configuration may not
            // exist yet: apt-cache then fails and the caller updates.
            if let Ok(opts) = self.bullseye_options() {
                cmd.args(opts);
            }
        }
        cmd
    }

    /// `-o` options for the private bullseye configuration, which is
    /// written (again) on every call: the mirror comes from the system's
    /// current configuration.
    fn bullseye_options(&self) -> Result<Vec<String>> {
        let root = self.cache.join("apt-bullseye");
        let (state, cache, parts) = (root.join("state"), root.join("cache"), root.join("parts"));
        for d in [
            state.join("lists").join("partial"),
            cache.join("archives").join("partial"),
            parts.clone(),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let list = root.join("sources.list");
        fs::write(&list, bullseye_sources()?)
            .with_context(|| format!("cannot write {}", list.display()))?;
        let opt = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
        Ok([
            opt("Dir::Etc::sourcelist", &list),
            opt("Dir::Etc::sourceparts", &parts),
            opt("Dir::State", &state),
            opt("Dir::Cache", &cache),
        ]
        .concat())
    }
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::System => "system's",
            Source::Bullseye => "private bullseye",
        }
    }
}

impl Pick {
    fn describe(self) -> &'static str {
        match self {
            Pick::Stock => "linux-image-amd64",
            Pick::Newest => "linux-image-*-amd64",
            Pick::Cloud => "linux-image-cloud-amd64",
        }
    }
}

impl Kernel {
    fn from_dir(package: &str, dir: &Path) -> Result<Kernel> {
        let modules_root = dir.join("lib").join("modules");
        let release = fs::read_dir(&modules_root)
            .with_context(|| format!("{package} has no lib/modules ({})", modules_root.display()))?
            .filter_map(|e| e.ok())
            .find(|e| e.path().is_dir())
            .and_then(|e| e.file_name().into_string().ok())
            .with_context(|| format!("{} is empty", modules_root.display()))?;
        let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
        if !vmlinuz.is_file() {
            bail!("{package} has no {}", vmlinuz.display());
        }
        Ok(Kernel {
            package: package.to_string(),
            modules: modules_root.join(&release),
            release,
            vmlinuz,
        })
    }

    /// "5.10" from "5.10.0-46-amd64".
    pub fn major_minor(&self) -> String {
        self.release
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// `dpkg -x` into a scratch directory, renamed into place when complete.
fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    let partial = dir.with_extension("partial");
    if run::exists(&partial) {
        fs::remove_dir_all(&partial)?;
    }
    if run::exists(dir) {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(&partial)?;
    let mut cmd = Command::new("dpkg");
    cmd.arg("-x").arg(deb).arg(&partial);
    run::check(&mut cmd)?;
    fs::write(partial.join(".complete"), b"")?;
    fs::rename(&partial, dir).with_context(|| format!("cannot rename to {}", dir.display()))
}

/// The numbers of a kernel image package's version, for ordering:
/// `linux-image-6.12.118+deb12-amd64` → [6, 12, 118, 12],
/// `linux-image-6.1.0-57-amd64` → [6, 1, 0, 57]. Other flavours (cloud,
/// rt) and the unsigned, debug and metapackages give `None`.
fn image_version(package: &str) -> Option<Vec<u64>> {
    let rest = package
        .strip_prefix("linux-image-")?
        .strip_suffix("-amd64")?;
    // A flavour sits right before "-amd64".
    if rest.ends_with("-cloud")
        || rest.ends_with("-rt")
        || !rest.starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let nums: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (nums.len() >= 2).then_some(nums)
}

/// Whether two image packages are the same X.Y series.
pub fn same_series(a: &str, b: &str) -> bool {
    match (image_version(a), image_version(b)) {
        (Some(a), Some(b)) => a[..2] == b[..2],
        _ => false,
    }
}

/// bullseye and bullseye-security source lines on the mirrors the system
/// uses for its own Debian suites, read from `apt-cache policy`, which
/// covers both the one-line and the deb822 formats.
fn bullseye_sources() -> Result<String> {
    let policy = run::output(Command::new("apt-cache").arg("policy"))
        .context("`apt-cache policy` failed: cannot find the system's Debian mirror")?;
    let codename = os_codename().context("/etc/os-release has no VERSION_CODENAME")?;
    let mirror_for = |suite: &str| {
        policy.lines().find_map(|l| {
            // " 500 http://HOST/debian bookworm/main amd64 Packages"
            let mut f = l.split_whitespace();
            let (_prio, uri, dist) = (f.next()?, f.next()?, f.next()?);
            let dist_suite = dist.split('/').next()?;
            (dist_suite == suite && uri.contains("://")).then(|| uri.to_string())
        })
    };
    let main = mirror_for(&codename).with_context(|| {
        format!("the system's apt sources have no {codename} suite to take the Debian mirror from")
    })?;
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let mut lines = format!("deb [signed-by={keyring}] {main} bullseye main\n");
    if let Some(security) = mirror_for(&format!("{codename}-security")) {
        lines.push_str(&format!(
            "deb [signed-by={keyring}] {security} bullseye-security main\n"
        ));
    }
    Ok(lines)
}

fn os_codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::image_version;

    #[test]
    fn image_versions_order_and_flavours() {
        let v = |p| image_version(p);
        assert_eq!(v("linux-image-6.1.0-57-amd64"), Some(vec![6, 1, 0, 57]));
        assert_eq!(
            v("linux-image-6.12.118+deb12-amd64"),
            Some(vec![6, 12, 118, 12])
        );
        assert!(v("linux-image-6.12.118+deb12-amd64") > v("linux-image-6.1.0-57-amd64"));
        assert_eq!(v("linux-image-6.12.118+deb12-cloud-amd64"), None);
        assert_eq!(v("linux-image-6.12.118+deb12-rt-amd64"), None);
        assert_eq!(v("linux-image-6.12-amd64-dbg"), None);
        assert_eq!(v("linux-image-amd64"), None);
    }
}
