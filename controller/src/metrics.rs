//! Prometheus metrics: the counters `stats` and `uplink show` report, in
//! the text exposition format (version 0.0.4), and the small HTTP server
//! `macvswitch daemon --metrics ADDR:PORT` answers `GET /metrics` with.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use macvswitch_common::{DropReason, EndpointCounters};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    error::{Error, Result},
    ops::instance::Instance,
    report,
};

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value, escaped as the format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP and TYPE lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(key, value)| format!("{key}=\"{}\"", label(value)))
            .collect();
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name} {value}")
        } else {
            writeln!(self.out, "{name}{{{}}} {value}", labels.join(","))
        };
    }
}

/// The samples of one set of counters, by direction.
fn directions(counters: &EndpointCounters) -> [(&'static str, u64, u64); 2] {
    [
        (
            "to_guest",
            counters.to_guest_packets,
            counters.to_guest_bytes,
        ),
        (
            "from_guest",
            counters.from_guest_packets,
            counters.from_guest_bytes,
        ),
    ]
}

/// `PREFIX_frames_total` and `PREFIX_bytes_total` of each labelled set of
/// counters, by direction.
fn traffic(
    out: &mut String,
    prefix: &str,
    whose: &str,
    sets: &[(Vec<(&str, String)>, &EndpointCounters)],
) {
    for (unit, bytes) in [("frames", false), ("bytes", true)] {
        let name = format!("{prefix}_{unit}_total");
        let help = format!("{} passed by {whose} by direction.", capitalized(unit));
        let mut family = Family::new(out, &name, "counter", &help);
        for (labels, counters) in sets {
            for (direction, frames, octets) in directions(counters) {
                let labels = with(labels, ("direction", direction));
                family.sample(&name, &labels, if bytes { octets } else { frames });
            }
        }
    }
}

/// `labels` borrowed, and one more.
fn with<'a>(labels: &'a [(&'a str, String)], more: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(more);
    all
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map_or(String::new(), |c| c.to_uppercase().chain(chars).collect())
}

/// Every metric, read from the state and the pinned maps now.
pub fn render(instance: &Instance) -> Result<String> {
    let records = instance.list()?;
    let rows = report::stats_rows(instance, &records)?;
    let uplinks = instance.uplinks()?;
    let maps = instance.maps()?;
    let mut out = String::new();

    let name = "macvswitch_build_info";
    Family::new(&mut out, name, "gauge", "The running macvswitch's version.").sample(
        name,
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let name = "macvswitch_endpoints";
    Family::new(&mut out, name, "gauge", "Endpoints in the state.").sample(
        name,
        &[],
        records.len() as u64,
    );

    let name = "macvswitch_endpoint_info";
    let help = "One per endpoint: its lower device, mode, port kind and attach mode.";
    let mut family = Family::new(&mut out, name, "gauge", help);
    for record in &records {
        family.sample(
            name,
            &[
                ("endpoint", record.name.as_str()),
                ("lower", record.lower.as_str()),
                ("mode", record.mode.as_str()),
                ("port", record.vlans.kind()),
                (
                    "attach",
                    record.attach.map_or("unknown", |mode| mode.as_str()),
                ),
            ],
            1,
        );
    }

    // (labels, counters): one per endpoint, and one per VLAN of a trunk or
    // tunnel, each given as frames and bytes by direction. `stats_rows`
    // keeps the records' order.
    let endpoints: Vec<(Vec<(&str, String)>, &EndpointCounters)> = rows
        .iter()
        .zip(&records)
        .map(|(row, record)| {
            let labels = vec![
                ("endpoint", row.name.clone()),
                ("lower", record.lower.to_string()),
            ];
            (labels, &row.counters)
        })
        .collect();
    traffic(
        &mut out,
        "macvswitch_endpoint",
        "an endpoint's programs",
        &endpoints,
    );
    let drops = "macvswitch_endpoint_drops_total";
    let help = "Frames an endpoint's programs dropped, by reason (see `stats`).";
    let mut family = Family::new(&mut out, drops, "counter", help);
    for (labels, counters) in &endpoints {
        for reason in DropReason::ALL {
            let labels = with(labels, ("reason", reason.name()));
            family.sample(drops, &labels, counters.drops[*reason as usize]);
        }
    }
    // A trunk's or tunnel's VLANs: the endpoint's labels and the VLAN.
    let vlans: Vec<(Vec<(&str, String)>, &EndpointCounters)> = rows
        .iter()
        .zip(&endpoints)
        .flat_map(|(row, (labels, _))| {
            row.vlans.iter().flatten().map(move |(vid, counters)| {
                let mut labels = labels.clone();
                labels.push(("vlan", vid.to_string()));
                (labels, counters)
            })
        })
        .collect();
    traffic(
        &mut out,
        "macvswitch_vlan",
        "a trunk or tunnel endpoint, by VLAN (a tunnel's customer VLAN, 0 for untagged),",
        &vlans,
    );

    let mut relayed = Vec::new();
    for uplink in &uplinks {
        let counters = match &maps {
            Some(maps) => maps.uplink_counters(uplink.ifindex)?,
            None => Default::default(),
        };
        relayed.push((uplink.name.as_str(), "unicast", counters.relayed_unicast));
        relayed.push((
            uplink.name.as_str(),
            "multicast",
            counters.relayed_multicast,
        ));
    }
    let relay = "macvswitch_relay_frames_total";
    let help = "Frames reflective-relay emulation sent back into a lower device, by kind.";
    let mut family = Family::new(&mut out, relay, "counter", help);
    for (lower, kind, value) in relayed {
        family.sample(relay, &[("lower", lower), ("kind", kind)], value);
    }
    Ok(out)
}

/// A bound metrics endpoint.
pub struct Server {
    listener: TcpListener,
}

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::invalid("--metrics", addr, format!("cannot listen there: {e}")))?;
        log::info!("metrics: serving http://{addr}/metrics");
        Ok(Server { listener })
    }

    /// The next connection, once one arrives.
    pub async fn accept(&self) -> Option<TcpStream> {
        match self.listener.accept().await {
            Ok((stream, _)) => Some(stream),
            Err(error) => {
                log::warn!("metrics: accept: {error}");
                None
            }
        }
    }
}

/// Answers one HTTP request: `GET /metrics` gets the metrics, anything else
/// a 404. One request per connection (HTTP/1.0 style, `Connection: close`).
pub async fn answer(instance: &Instance, mut stream: TcpStream) {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let line = String::from_utf8_lossy(&request);
    let target = line.split_whitespace().take(2).collect::<Vec<_>>();
    let (status, content_type, body) = match target.as_slice() {
        ["GET", "/metrics"] => match render(instance) {
            Ok(body) => ("200 OK", CONTENT_TYPE, body),
            Err(error) => (
                "500 Internal Server Error",
                "text/plain",
                format!("{error}\n"),
            ),
        },
        _ => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
