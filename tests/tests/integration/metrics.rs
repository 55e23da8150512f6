//! `macvswitch daemon --metrics ADDR:PORT`: scraped over the namespace's
//! loopback, parsed by a Prometheus exposition-format parser, and held
//! against `stats --json` and `uplink show --json`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use macvswitch_tests::expect::on_wire;
use macvswitch_tests::frame::{Marker, marked};
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::{Harness, root_harness};
use prometheus_parse::{Sample, Scrape, Value};

/// Inside the harness's own namespace, so the port collides with nothing.
const ADDR: &str = "127.0.0.1:9748";

/// `GET path` over the host namespace's loopback: status line and body.
fn get(h: &Harness, path: &str) -> Option<(String, String)> {
    h.topo.host.enter_and(|| {
        let mut stream = TcpStream::connect(ADDR).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    })
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s: &&Sample| {
            s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_parse_and_match_stats() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    h.add("ep1", &["--trunk", "10,20"]);
    h.uplink_set(&["--reflective-relay", "on"]);
    // Traffic: frames from ep0's guest reach the wire.
    let tap = h.tap(&ep);
    let wire = macvswitch_tests::wire::WireSocket::open(
        &h.topo.switch,
        macvswitch_tests::topology::SWITCH_PORT,
    );
    for _ in 0..3 {
        let m = Marker::new();
        tap.write(&marked(SWITCH_MAC, ep.mac, &m));
        on_wire(&wire, &m, "ep0's frame");
    }

    let _daemon = Stopped(h.ctl.spawn(&["daemon", "--metrics", ADDR]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        if let Some(answer) = get(&h, "/metrics") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics at {ADDR} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e}\n{body}"));
    let stats = h.stats("ep0");
    let from_guest = stats["from_guest"]["packets"].as_f64().unwrap();
    assert!(from_guest >= 3.0, "{stats}");
    assert_eq!(
        value(
            &scrape,
            "macvswitch_endpoint_frames_total",
            &[("endpoint", "ep0"), ("direction", "from_guest")]
        ),
        Some(from_guest),
        "{body}"
    );
    assert_eq!(
        value(
            &scrape,
            "macvswitch_endpoint_bytes_total",
            &[("endpoint", "ep0"), ("direction", "from_guest")]
        ),
        stats["from_guest"]["bytes"].as_f64(),
    );
    assert_eq!(
        value(
            &scrape,
            "macvswitch_endpoint_drops_total",
            &[("endpoint", "ep0"), ("reason", "wrong-vlan")]
        ),
        Some(h.drops("ep0", "wrong-vlan") as f64),
    );
    assert_eq!(value(&scrape, "macvswitch_endpoints", &[]), Some(2.0));
    assert_eq!(
        value(
            &scrape,
            "macvswitch_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &scrape,
            "macvswitch_relay_frames_total",
            &[
                ("lower", macvswitch_tests::topology::LOWER),
                ("kind", "unicast")
            ]
        )
        .is_some(),
        "{body}"
    );
    // Every family the README and the dashboard name is there.
    for family in [
        "macvswitch_endpoint_frames_total",
        "macvswitch_endpoint_bytes_total",
        "macvswitch_endpoint_drops_total",
        "macvswitch_vlan_frames_total",
        "macvswitch_relay_frames_total",
        "macvswitch_build_info",
        "macvswitch_endpoint_info",
    ] {
        assert!(body.contains(&format!("# TYPE {family} ")), "{family}");
    }
    let dashboard = include_str!("../../../packaging/grafana/macvswitch.json");
    let dashboard: serde_json::Value = serde_json::from_str(dashboard).expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("macvswitch_"))
                    .all(|metric| body.contains(&format!("# TYPE {metric} "))),
                "the dashboard queries a metric we do not serve: {expr}"
            );
        }
    }
    let (status, _) = get(&h, "/nothing").expect("an answer");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

/// The daemon, killed when the test ends, also when it fails.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
