//! Handing an endpoint to a guest: `exec` gives a command the tap as fds,
//! one open per queue; `libvirt-xml` prints an `<interface>` only when the
//! global `/dev/tapN` libvirt opens is the endpoint's own. Both refuse a
//! tap another process holds.

use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Output};

use std::time::Duration;

use macvswitch_tests::expect::assert_refused;
use macvswitch_tests::frame::{Marker, marked};
use macvswitch_tests::topology::{SWITCH_MAC, SWITCH_PORT};
use macvswitch_tests::wire::WireSocket;
use macvswitch_tests::{Harness, controller, root_harness};

/// (major, minor) of the tap node `macvswitch` made for the endpoint.
fn tap_dev(h: &Harness, name: &str) -> (u64, u64) {
    let rdev = std::fs::metadata(&h.show(name).tap)
        .expect("tap node")
        .rdev();
    (libc::major(rdev) as u64, libc::minor(rdev) as u64)
}

#[test]
fn exec_gives_the_command_one_fd_per_queue() {
    let h = root_harness!();
    h.add("ep0", &["--vlan", "10"]);
    let (major, minor) = tap_dev(&h, "ep0");
    // Every fd the command has, with the device it is (hex, as stat -L).
    let listing = "for f in /proc/self/fd/*; do stat -L -c '%n %F %t:%T' \"$f\" 2>/dev/null; done";
    let out = h.ctl.ok(&[
        "exec", "ep0", "--fd", "5", "--queues", "3", "--", "sh", "-c", listing,
    ]);
    let ours = format!("{major:x}:{minor:x}");
    let mut tap_fds: Vec<u32> = out
        .lines()
        .filter(|l| l.ends_with(&format!("character special file {ours}")))
        .map(|l| {
            l.split_whitespace().next().unwrap()["/proc/self/fd/".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    tap_fds.sort();
    assert_eq!(tap_fds, [5, 6, 7], "the tap's fds, in:\n{out}");

    // `endpoint show` gives the QEMU fragment, with the endpoint's MAC.
    let mac = h.show("ep0").raw["mac"].as_str().unwrap().to_string();
    let shown = h.ctl.ok(&["endpoint", "show", "ep0"]);
    assert!(
        shown.contains("qemu: macvswitch exec ep0 -- qemu-system-x86_64")
            && shown.contains(&format!("netdev=n0,mac={mac}")),
        "{shown}"
    );
}

#[test]
fn exec_runs_the_command_as_another_user_with_the_tap_open() {
    let h = root_harness!();
    h.add("ep0", &[]);
    let ep = h.show("ep0");
    // The command cannot open the node itself, but has it as fd 3: a frame
    // it writes there (after the virtio-net header the tap expects)
    // reaches the wire.
    let marker = Marker::new();
    let frame = marked(SWITCH_MAC, ep.mac, &marker);
    let bytes: String = [0u8; 10]
        .iter()
        .chain(&frame)
        .map(|b| format!("\\{b:03o}"))
        .collect();
    let wire = WireSocket::open(&h.topo.switch, SWITCH_PORT);
    let out = h.ctl.ok(&[
        "exec",
        "ep0",
        "--user",
        "nobody",
        "--",
        "sh",
        "-c",
        &format!("id -u; id -G; printf '{bytes}' >&3"),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["65534", "65534"],
        "uid and no supplementary groups: {out}"
    );
    let sent = wire.recv_matching(Duration::from_secs(2), |f| marker.is_in(&f.bytes));
    assert!(
        sent.is_some(),
        "the frame written to fd 3 as nobody never reached the wire"
    );
    let out = h
        .ctl
        .run(&["exec", "ep0", "--user", "no-such-user-here", "--", "true"]);
    assert_refused(&out, "--user no-such-user-here");
}

#[test]
fn exec_refuses_a_tap_held_by_another_process() {
    let h = root_harness!();
    let ep = h.add("ep0", &[]);
    let _guest = h.tap(&ep);
    let ran = h.state.path().join("ran");
    let out = h
        .ctl
        .run(&["exec", "ep0", "--", "touch", ran.to_str().unwrap()]);
    assert_refused(&out, &format!("process {}", std::process::id()));
    assert!(!ran.exists(), "the command ran although the tap is held");
    let out = h.ctl.run(&["libvirt-xml", "ep0"]);
    assert_refused(&out, &format!("process {}", std::process::id()));
}

#[test]
fn exec_refuses_bad_input_in_one_line() {
    let h = root_harness!();
    h.add("ep0", &[]);
    for (args, needle) in [
        (&["exec", "ep0", "--fd", "2", "--", "true"][..], "--fd 2"),
        (
            &["exec", "ep0", "--queues", "0", "--", "true"],
            "--queues 0",
        ),
        (
            &["exec", "ep0", "--queues", "257", "--", "true"],
            "--queues 257",
        ),
        (&["exec", "nope", "--", "true"], "nope: no such endpoint"),
        (&["exec", "ep0"], "COMMAND"),
    ] {
        assert_refused(&h.ctl.run(args), needle);
    }
}

/// `libvirt-xml ep0` with `/dev` replaced, in a private mount namespace of
/// the command's own, by a tmpfs holding `tapN` as given (nothing on the
/// host changes): `None` makes no node.
fn libvirt_xml_with_dev_tap(h: &Harness, node: Option<(u64, u64)>) -> Output {
    let ifindex = h.show("ep0").ifindex;
    let mut script = String::from("mount -t tmpfs msw-test /dev && ");
    if let Some((major, minor)) = node {
        script += &format!("mknod /dev/tap{ifindex} c {major} {minor} && ");
    }
    script += "exec \"$@\"";
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(["ip", "netns", "exec", h.topo.host.name()])
        .arg(controller::binary())
        .arg("--state-dir")
        .arg(h.state.path())
        .arg("--bpffs")
        .arg(h.bpffs.path())
        .args(["libvirt-xml", "ep0"])
        .output()
        .expect("running unshare")
}

#[test]
fn libvirt_xml_only_for_the_endpoints_own_dev_tap() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    let (major, minor) = tap_dev(&h, "ep0");

    let out = libvirt_xml_with_dev_tap(&h, Some((major, minor)));
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8_lossy(&out.stdout);
    let mac = ep.raw["mac"].as_str().unwrap();
    for line in [
        "<interface type='ethernet'>",
        &format!("<mac address='{mac}'/>"),
        "<target dev='ep0' managed='no'/>",
        "<model type='virtio'/>",
        "</interface>",
    ] {
        assert!(xml.contains(line), "{line} not in:\n{xml}");
    }

    // Another namespace's macvtap with the same ifindex registered the
    // node: the guest would land on someone else's port.
    let out = libvirt_xml_with_dev_tap(&h, Some((major, minor + 1)));
    assert_refused(&out, "another network namespace's macvtap");
    let out = libvirt_xml_with_dev_tap(&h, None);
    assert_refused(&out, "does not exist");
}
