//! `macvswitch top`: one sample's rates against a stream paced at a known
//! rate, and the live view in a real terminal (tmux).

use std::process::Command;
use std::time::{Duration, Instant};

use macvswitch_tests::frame::{ETHERTYPE_TEST, Marker, TPID_8021Q, tagged};
use macvswitch_tests::topology::{SWITCH_MAC, SWITCH_PORT};
use macvswitch_tests::wire::WireSocket;
use macvswitch_tests::{controller, root_harness};

/// Frames per second of the paced stream.
const RATE: f64 = 400.0;

#[test]
fn once_json_rates_match_a_paced_stream() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    h.add("ep1", &[]);
    let wire = WireSocket::open(&h.topo.switch, SWITCH_PORT);
    let frame = tagged(
        ep.mac,
        SWITCH_MAC,
        TPID_8021Q,
        10,
        ETHERTYPE_TEST,
        &Marker::new().0,
    );
    let top = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            // Bounded: 5 s at RATE, on an absolute schedule.
            let start = Instant::now();
            for k in 0..(5.0 * RATE) as u32 {
                let due = start + Duration::from_secs_f64(f64::from(k) / RATE);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                wire.send(&frame);
            }
        });
        std::thread::sleep(Duration::from_millis(1000));
        let out = h.ctl.json(&["top", "--once", "--json", "--interval", "2"]);
        sender.join().unwrap();
        out
    });
    let rows = top.as_array().expect("an array");
    let ep0 = rows.iter().find(|r| r["endpoint"] == "ep0").expect("ep0");
    let fps = ep0["to_guest_fps"].as_f64().unwrap();
    assert!(
        (fps - RATE).abs() <= 0.1 * RATE,
        "to_guest_fps {fps}, paced at {RATE}: {top}"
    );
    let bps = ep0["to_guest_bps"].as_f64().unwrap();
    assert!(
        bps > 8.0 * 50.0 * fps,
        "bits per second {bps} for {fps} f/s"
    );
    assert_eq!(ep0["from_guest_fps"], 0.0, "{top}");
    let ep1 = rows.iter().find(|r| r["endpoint"] == "ep1").expect("ep1");
    assert_eq!(ep1["to_guest_fps"], 0.0, "{top}");
    for key in ["drops_ps", "from_guest_bps"] {
        assert!(ep0[key].is_number(), "{key}: {top}");
    }
}

fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .output()
        .expect("tmux")
}

#[test]
fn the_live_view_runs_in_a_terminal_and_quits_on_q() {
    let h = root_harness!();
    h.add("ep0", &["--vlan", "10"]);
    // A tmux server of this test's own, on its own socket.
    let socket = format!("msw-top-{}", std::process::id());
    let command = format!(
        "ip netns exec {} {} --state-dir {} --bpffs {} top",
        h.topo.host.name(),
        controller::binary().display(),
        h.state.path().display(),
        h.bpffs.path().display()
    );
    let started = tmux(
        &socket,
        &["new-session", "-d", "-x", "120", "-y", "20", &command],
    );
    assert!(started.status.success(), "{started:?}");
    let _server = KillServer(socket.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    let screen = loop {
        let shown = tmux(&socket, &["capture-pane", "-p"]);
        let text = String::from_utf8_lossy(&shown.stdout).into_owned();
        if text.contains("ep0") {
            break text;
        }
        assert!(Instant::now() < deadline, "top never showed ep0:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for column in [
        "ENDPOINT",
        "FROM GUEST f/s",
        "TO GUEST f/s",
        "DROPS/s",
        "q: quit",
    ] {
        assert!(screen.contains(column), "{column} not on screen:\n{screen}");
    }
    tmux(&socket, &["send-keys", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&socket, &["has-session"]).status.success() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ends the test's tmux server, also when the test fails.
struct KillServer(String);

impl Drop for KillServer {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
}
