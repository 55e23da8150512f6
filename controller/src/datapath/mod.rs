//! The kernel side: loading, pinning and attaching the TC programs, and
//! reading and writing their maps.
//!
//! Layout under the bpffs directory:
//! - `progs/BUILD/{from_guest,to_guest,uplink_egress}`: the programs of
//!   build BUILD (a hash of the embedded object), loaded once per build;
//! - `maps/NAME`: policies, counters, senders, uplinks, logs; shared by all
//!   endpoints and kept across builds when their layout matches;
//! - `links/NAME/{egress,ingress}`: the TCX links of endpoint NAME (escaped:
//!   bpffs refuses '.' in names, interface names allow it);
//! - `uplinks/DEV/egress`: the link of the lower device's egress program
//!   (tags carried in the mark, relay emulation) on lower device DEV.
//!
//! Everything is pinned, so forwarding goes on after the process exits and
//! the next invocation adopts what is there.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
    },
    util::KernelVersion,
};
use macvswitch_common::names;

mod compat;
mod maps;
mod pins;

pub use maps::{Maps, set_object_policy, set_object_uplink, wait_for_readers};
pub use pins::PinLayout;
use pins::{Hook, create_dir, remove_dir_if_exists, unpin_link};

use crate::{
    EBPF_OBJECT,
    error::{Error, Result},
};

/// aya-log level compiled into the programs at load: info, so that the
/// per-drop debug logs cost a compare and nothing more.
const EBPF_LOG_LEVEL: u8 = 3;

/// Every program of the object that the controller loads.
const PROGRAMS: [&str; 3] = [
    names::PROG_FROM_GUEST,
    names::PROG_TO_GUEST,
    names::PROG_UPLINK_EGRESS,
];

/// Programs and maps, ready to attach endpoints.
pub struct Datapath {
    pins: PinLayout,
    from_guest: SchedClassifier,
    to_guest: SchedClassifier,
    uplink_egress: SchedClassifier,
    pub maps: Maps,
    /// Loaded by this process rather than adopted from pins: endpoints
    /// attached earlier still run older programs (or use older maps) and
    /// must be re-attached, which swaps their links atomically.
    pub fresh: bool,
}

impl Datapath {
    /// Adopts the pinned programs and maps of this build, or loads this
    /// build's object: the first time, after a reset, or when the pins are
    /// another build's (an upgrade).
    pub fn open_or_load(pins: PinLayout) -> Result<Self> {
        if pins.is_loaded()
            && let Some(maps) = Maps::open(&pins)?
        {
            let from_pin = |name: &str| {
                SchedClassifier::from_pin(pins.prog(name))
                    .map_err(|e| Error::bpf(format!("opening pinned program {name}"), e))
            };
            return Ok(Self {
                from_guest: from_pin(names::PROG_FROM_GUEST)?,
                to_guest: from_pin(names::PROG_TO_GUEST)?,
                uplink_egress: from_pin(names::PROG_UPLINK_EGRESS)?,
                maps,
                pins,
                fresh: false,
            });
        }
        Self::load(pins)
    }

    /// Loads this build's object even if its programs are pinned already:
    /// a fresh copy of every program, the compatible maps kept. Attaching
    /// endpoints afterwards swaps their links to the new programs, as an
    /// upgrade does.
    pub fn load(pins: PinLayout) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            return Err(Error::Refused(
                "this binary was built with AYA_BUILD_SKIP=1 and carries no eBPF object".into(),
            ));
        }
        create_dir(&pins.root().join("maps"))?;
        // Pinned maps that match this build are reused, so policies and
        // counters survive an upgrade; the others are recreated, loudly.
        let expected = compat::expected_maps_cached()?;
        for spec in expected {
            let path = pins.map(&spec.name);
            if let Some(mismatch) = compat::check_pinned(&path, spec) {
                log::warn!(
                    "pinned map {}: {mismatch}; this build recreates it (its contents are lost)",
                    spec.name
                );
                fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            }
        }
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &EBPF_LOG_LEVEL, false);
        let map_paths: Vec<(String, PathBuf)> = expected
            .iter()
            .map(|spec| (spec.name.clone(), pins.map(&spec.name)))
            .collect();
        for (name, path) in &map_paths {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| Error::bpf("loading the eBPF object", e))?;

        // This build's programs go in their own directory; older builds'
        // stay alive as long as a link uses them, and their pins go.
        let progs = pins.progs_dir();
        remove_dir_if_exists(&progs)?;
        create_dir(&progs)?;
        let mut take_program = |name: &str| -> Result<SchedClassifier> {
            let program = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Refused(format!("the eBPF object lacks program {name}")))?;
            let classifier: &mut SchedClassifier = program
                .try_into()
                .map_err(|e| Error::bpf(format!("program {name}"), e))?;
            classifier
                .load()
                .map_err(|e| Error::bpf(format!("loading program {name}"), e))?;
            classifier
                .pin(pins.prog(name))
                .map_err(|e| Error::bpf(format!("pinning program {name}"), e))?;
            SchedClassifier::from_pin(pins.prog(name))
                .map_err(|e| Error::bpf(format!("reopening program {name}"), e))
        };
        let from_guest = take_program(names::PROG_FROM_GUEST)?;
        let to_guest = take_program(names::PROG_TO_GUEST)?;
        let uplink_egress = take_program(names::PROG_UPLINK_EGRESS)?;
        pins.remove_other_builds()?;
        let mut taken = Vec::with_capacity(maps::MAP_NAMES.len());
        for name in maps::MAP_NAMES {
            taken.push(
                ebpf.take_map(name)
                    .ok_or_else(|| Error::Refused(format!("the eBPF object lacks map {name}")))?,
            );
        }
        let Ok(taken) = <[aya::maps::Map; 10]>::try_from(taken) else {
            unreachable!("one map per name in MAP_NAMES")
        };
        let maps = Maps::from_maps(taken)?;
        log::info!(
            "loaded and pinned the data path (build {}) under {}",
            pins.build(),
            pins.root().display()
        );
        Ok(Self {
            pins,
            from_guest,
            to_guest,
            uplink_egress,
            maps,
            fresh: true,
        })
    }

    /// Attaches both programs to the endpoint `name` and pins the links:
    /// the ingress first, so that by the time the endpoint sends, it also
    /// understands tags carried in the mark.
    pub fn attach(&mut self, name: &str) -> Result<()> {
        self.attach_to_guest(name)?;
        self.attach_from_guest(name)
    }

    /// Attaches (or swaps in) the program for frames towards the guest.
    pub fn attach_to_guest(&mut self, name: &str) -> Result<()> {
        attach_hook(&mut self.to_guest, &self.pins, name, Hook::ToGuest)
    }

    /// Attaches (or swaps in) the program for frames from the guest.
    pub fn attach_from_guest(&mut self, name: &str) -> Result<()> {
        attach_hook(&mut self.from_guest, &self.pins, name, Hook::FromGuest)
    }

    /// Removes the link pins of `name`; the links detach once unpinned (or
    /// when the macvtap goes).
    pub fn detach(pins: &PinLayout, name: &str) -> Result<()> {
        for hook in Hook::ALL {
            unpin_link(&pins.link(name, hook))?;
        }
        remove_dir_if_exists(&pins.links_of(name))
    }

    /// Whether both links of endpoint `name` are pinned.
    pub fn is_attached(pins: &PinLayout, name: &str) -> bool {
        Hook::ALL.iter().all(|hook| pins.link(name, *hook).exists())
    }

    /// Whether the lower device's egress program link on `lower` is pinned.
    pub fn is_uplink_attached(pins: &PinLayout, lower: &str) -> bool {
        pins.uplink_link(lower).exists()
    }

    /// Attaches the lower device's egress program (tags from the mark,
    /// relay emulation).
    pub fn attach_uplink(&mut self, lower: &str) -> Result<()> {
        let pin = self.pins.uplink_link(lower);
        if let Some(dir) = pin.parent() {
            create_dir(dir)?;
        }
        attach_one(&mut self.uplink_egress, lower, TcAttachType::Egress, &pin)
    }

    /// Detaches the lower device's egress program.
    pub fn detach_uplink(pins: &PinLayout, lower: &str) -> Result<()> {
        let pin = pins.uplink_link(lower);
        unpin_link(&pin)?;
        if let Some(dir) = pin.parent() {
            remove_dir_if_exists(dir)?;
        }
        Ok(())
    }

    /// Removes every pin (for `reset`).
    pub fn remove_all_pins(pins: &PinLayout) -> Result<()> {
        for dir in ["links", "uplinks", "progs", "maps"] {
            remove_dir_if_exists(&pins.root().join(dir))?;
        }
        Ok(())
    }
}

/// Attaches one program of an endpoint and pins its link.
fn attach_hook(
    program: &mut SchedClassifier,
    pins: &PinLayout,
    name: &str,
    hook: Hook,
) -> Result<()> {
    create_dir(&pins.links_of(name))?;
    attach_one(program, name, hook.attach_type(), &pins.link(name, hook))
}

/// TCX with a pinned link where the kernel has it (>= 6.6); clsact and a
/// netlink filter, which outlives the process by itself, elsewhere. A link
/// already pinned at `pin` gets the program swapped in atomically (one
/// `bpf_link_update`: no frame sees no program), which is how an upgrade
/// or a reload takes over running endpoints.
fn attach_one(
    program: &mut SchedClassifier,
    ifname: &str,
    attach_type: TcAttachType,
    pin: &Path,
) -> Result<()> {
    let context = || format!("attaching a program to {ifname} {attach_type:?}");
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if !tcx {
        // An existing clsact qdisc is fine.
        let _ = tc::qdisc_add_clsact(ifname);
        let id = program
            .attach_with_options(
                ifname,
                attach_type,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(|e| Error::bpf(context(), e))?;
        let link = program
            .take_link(id)
            .map_err(|e| Error::bpf(context(), e))?;
        // Dropping the link would detach the filter; it lives with the device.
        std::mem::forget(link);
        return Ok(());
    }
    if let Ok(pinned) = PinnedLink::from_pin(pin) {
        let swapped = SchedClassifierLink::try_from(FdLink::from(pinned))
            .map_err(|e| Error::bpf(context(), e))
            .and_then(|link| {
                program
                    .attach_to_link(link)
                    .map_err(|e| Error::bpf(context(), e))
            });
        match swapped {
            Ok(id) => {
                // The link stays pinned; our handle may go.
                let link = program
                    .take_link(id)
                    .map_err(|e| Error::bpf(context(), e))?;
                let _: FdLink = link.try_into().map_err(|e| Error::bpf(context(), e))?;
                return Ok(());
            }
            // A link whose device is gone cannot be updated: make a new one.
            Err(e) => log::info!("{}: {e}; attaching anew", pin.display()),
        }
    }
    let id = program
        .attach_with_options(
            ifname,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| Error::bpf(context(), e))?;
    let link = program
        .take_link(id)
        .map_err(|e| Error::bpf(context(), e))?;
    let link: FdLink = link.try_into().map_err(|e| Error::bpf(context(), e))?;
    if pin.exists() {
        fs::remove_file(pin).map_err(|e| Error::io(format!("replacing {}", pin.display()), e))?;
    }
    link.pin(pin)
        .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
    Ok(())
}
