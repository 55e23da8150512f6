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
//! the next invocation adopts what is there. Where the kernel has no TCX
//! (or `--attach clsact`), the programs sit in `bpf` filters on a clsact
//! qdisc instead, which outlive the process by themselves and are found
//! again by their fixed priority, handle and name (see `clsact.rs`).

use std::{fs, path::PathBuf};

use aya::programs::{SchedClassifier, TcAttachType};
use macvswitch_common::names;

mod attach;
pub mod clsact;
mod compat;
mod features;
mod maps;
pub mod monitor;
mod object;
mod pins;
pub mod trace;

pub use attach::{ATTACH_ENV, Attached, attach_choice, set_attach_choice};
pub use maps::{Maps, wait_for_readers};
pub use object::{
    check_embedded, classifier, load_object, loader, object_counters, reset_object_counters,
    set_object_policy, set_object_uplink,
};
pub use pins::{Hook, PinLayout};
use pins::{create_dir, remove_dir_if_exists};

use crate::{
    EBPF_OBJECT,
    error::{Error, Result},
    model::types::AttachMode,
};

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
        check_embedded()?;
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
        let mut loader = loader();
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
            let program = classifier(&mut ebpf, name)?;
            program
                .load()
                .map_err(|e| Error::bpf(format!("loading program {name}"), e))?;
            program
                .pin(pins.prog(name))
                .map_err(|e| Error::bpf(format!("pinning program {name}"), e))?;
            SchedClassifier::from_pin(pins.prog(name))
                .map_err(|e| Error::bpf(format!("reopening program {name}"), e))
        };
        let from_guest = take_program(names::PROG_FROM_GUEST)?;
        let to_guest = take_program(names::PROG_TO_GUEST)?;
        let uplink_egress = take_program(names::PROG_UPLINK_EGRESS)?;
        monitor::install_publisher(&mut ebpf)?;
        pins.remove_other_builds()?;
        let mut taken = Vec::with_capacity(maps::MAP_NAMES.len());
        for name in maps::MAP_NAMES {
            taken.push(
                ebpf.take_map(name)
                    .ok_or_else(|| Error::Refused(format!("the eBPF object lacks map {name}")))?,
            );
        }
        let Ok(taken) = <[aya::maps::Map; maps::MAP_NAMES.len()]>::try_from(taken) else {
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

    /// Attaches both programs to the endpoint `name` (TCX links pinned, or
    /// our clsact filters), each hook keeping what it carries of ours, a
    /// bare hook taking the device's recorded mode `prefer` (`None` for a
    /// new device: `--attach` decides); returns the mode its hooks carry.
    pub fn attach(&mut self, name: &str, prefer: Option<AttachMode>) -> Result<AttachMode> {
        self.attach_hooks(name, name, &Hook::ALL, prefer)
    }

    /// As `attach`, for a device called `ifname` in this thread's
    /// namespace whose pins go under endpoint `name` (a CNI endpoint's
    /// device is renamed in the container's namespace; its pins keep the
    /// endpoint's name).
    pub fn attach_as(
        &mut self,
        name: &str,
        ifname: &str,
        prefer: Option<AttachMode>,
    ) -> Result<AttachMode> {
        self.attach_hooks(name, ifname, &Hook::ALL, prefer)
    }

    /// Attaches (or swaps in) the program of one hook only: re-wiring a
    /// port to a freshly loaded data path goes hook by hook (frames towards
    /// the guest first).
    pub fn attach_hook(
        &mut self,
        name: &str,
        hook: Hook,
        prefer: Option<AttachMode>,
    ) -> Result<AttachMode> {
        self.attach_hooks(name, name, &[hook], prefer)
    }

    /// `attach_hook` for a device called `ifname` in this thread's
    /// namespace (see `attach_as`).
    pub fn attach_hook_as(
        &mut self,
        name: &str,
        ifname: &str,
        hook: Hook,
        prefer: Option<AttachMode>,
    ) -> Result<AttachMode> {
        self.attach_hooks(name, ifname, &[hook], prefer)
    }

    fn attach_hooks(
        &mut self,
        name: &str,
        ifname: &str,
        hooks: &[Hook],
        prefer: Option<AttachMode>,
    ) -> Result<AttachMode> {
        let mut mode = AttachMode::Tcx;
        for &hook in hooks {
            let (program, prog_name) = match hook {
                Hook::FromGuest => (&mut self.from_guest, names::PROG_FROM_GUEST),
                Hook::ToGuest => (&mut self.to_guest, names::PROG_TO_GUEST),
            };
            let pin = self.pins.link(name, hook);
            mode =
                attach::attach(program, prog_name, ifname, hook.attach_type(), &pin, prefer)?.mode;
        }
        if mode == AttachMode::Clsact {
            // Nothing pinned for clsact: the empty directory goes.
            remove_dir_if_exists(&self.pins.links_of(name))?;
        }
        Ok(mode)
    }

    /// Removes the programs from endpoint `name`: its link pins (the links
    /// detach once unpinned, or when the macvtap goes) and our clsact
    /// filters if the device is still there.
    pub fn detach(pins: &PinLayout, name: &str) -> Result<()> {
        for hook in Hook::ALL {
            attach::detach(name, hook.attach_type(), &pins.link(name, hook))?;
        }
        remove_dir_if_exists(&pins.links_of(name))
    }

    /// Whether both hooks of endpoint `name` carry our programs (a pinned
    /// TCX link or our clsact filter).
    pub fn is_attached(pins: &PinLayout, name: &str) -> bool {
        Self::is_attached_as(pins, name, name)
    }

    /// `is_attached` for endpoint `name` whose device is called `ifname`
    /// in this thread's namespace.
    pub fn is_attached_as(pins: &PinLayout, name: &str, ifname: &str) -> bool {
        Hook::ALL.iter().all(|hook| {
            attach::current(ifname, hook.attach_type(), &pins.link(name, *hook)).is_some()
        })
    }

    /// Whether the lower device's egress program is on `lower`.
    pub fn is_uplink_attached(pins: &PinLayout, lower: &str) -> bool {
        Self::uplink_mode(pins, lower).is_some()
    }

    /// How the lower device's egress program is attached to `lower`, if it is.
    pub fn uplink_mode(pins: &PinLayout, lower: &str) -> Option<AttachMode> {
        attach::current(lower, TcAttachType::Egress, &pins.uplink_link(lower))
    }

    /// Whether attaching the lower device's egress program to `lower` now would create a
    /// clsact qdisc there: the caller records that it will be ours first,
    /// so a kill half-way cannot leave a qdisc nobody knows is ours.
    pub fn uplink_would_create_qdisc(
        &self,
        lower: &str,
        prefer: Option<AttachMode>,
    ) -> Result<bool> {
        attach::would_create_qdisc(
            &self.uplink_egress,
            lower,
            TcAttachType::Egress,
            &self.pins.uplink_link(lower),
            prefer,
        )
    }

    /// Attaches the lower device's egress program (tags carried in the
    /// mark, relay emulation), in its recorded mode `prefer` (as `attach`).
    pub fn attach_uplink(&mut self, lower: &str, prefer: Option<AttachMode>) -> Result<Attached> {
        let pin = self.pins.uplink_link(lower);
        let attached = attach::attach(
            &mut self.uplink_egress,
            names::PROG_UPLINK_EGRESS,
            lower,
            TcAttachType::Egress,
            &pin,
            prefer,
        )?;
        if attached.mode == AttachMode::Clsact
            && let Some(dir) = pin.parent()
        {
            remove_dir_if_exists(dir)?;
        }
        Ok(attached)
    }

    /// Detaches the lower device's egress program, and removes the
    /// clsact qdisc there if macvswitch created it (`own_qdisc`) and
    /// nothing else is on it. An operator's filters and qdiscs stay.
    pub fn detach_uplink(pins: &PinLayout, lower: &str, own_qdisc: bool) -> Result<()> {
        let pin = pins.uplink_link(lower);
        attach::detach(lower, TcAttachType::Egress, &pin)?;
        if let Some(dir) = pin.parent() {
            remove_dir_if_exists(dir)?;
        }
        if own_qdisc {
            attach::remove_qdisc_if_empty(lower)?;
        }
        Ok(())
    }

    /// Checks, before anything is loaded or changed, that the kernel has
    /// what every data path needs (BTF, macvtap).
    pub fn check_kernel() -> Result<()> {
        features::check_base()
    }

    /// Checks that the kernel has what new attachments will use: TCX
    /// where forced, clsact and the bpf classifier where they will go.
    pub fn check_attach_path(&self) -> Result<()> {
        match attach::fresh_mode(&self.from_guest)? {
            AttachMode::Clsact => features::check_clsact(),
            AttachMode::Tcx => Ok(()),
        }
    }

    /// Removes every pin (for `reset`).
    pub fn remove_all_pins(pins: &PinLayout) -> Result<()> {
        for dir in ["links", "uplinks", "progs", "maps"] {
            remove_dir_if_exists(&pins.root().join(dir))?;
        }
        Ok(())
    }
}
