//! A published frame as `monitor` shows it: a line of text or a JSON
//! object, its time on the wall clock.

use macvswitch_common::{
    DropReason, Tag,
    monitor::{MONITOR_TO_GUEST, MonitorEvent},
};
use serde_json::{Value, json};

use crate::model::frame::{Summary, TagPlace};

/// An event as shown.
pub(super) struct Shown {
    wall_ns: i128,
    pub(super) endpoint: String,
    ifindex: u32,
    to_guest: bool,
    pub(super) reason: Option<DropReason>,
    /// The reason's number when this build does not know it.
    unknown_reason: Option<u8>,
    len: u32,
    pub(super) summary: Option<Summary>,
}

impl Shown {
    pub(super) fn new(event: &MonitorEvent, endpoint: String, clock_offset: i128) -> Self {
        let mut outside = Vec::new();
        if event.carried_tpid != 0 {
            outside.push((
                Tag {
                    tpid: event.carried_tpid,
                    tci: event.carried_tci,
                },
                TagPlace::Mark,
            ));
        }
        if event.meta_tpid != 0 {
            outside.push((
                Tag {
                    tpid: event.meta_tpid,
                    tci: event.meta_tci,
                },
                TagPlace::Metadata,
            ));
        }
        let captured = usize::from(event.captured).min(event.bytes.len());
        let reason = DropReason::from_u32(u32::from(event.reason));
        Self {
            wall_ns: i128::from(event.time_ns) + clock_offset,
            endpoint,
            ifindex: event.ifindex,
            to_guest: event.direction == MONITOR_TO_GUEST,
            unknown_reason: (event.reason != 0 && reason.is_none()).then_some(event.reason),
            reason,
            len: event.len,
            summary: Summary::read(event.len, &event.bytes[..captured], &outside),
        }
    }

    fn verdict(&self) -> &'static str {
        if self.reason.is_some() || self.unknown_reason.is_some() {
            "drop"
        } else {
            "pass"
        }
    }

    fn reason_name(&self) -> Option<String> {
        match (self.reason, self.unknown_reason) {
            (Some(reason), _) => Some(reason.name().to_string()),
            (None, Some(n)) => Some(format!("reason-{n}")),
            (None, None) => None,
        }
    }

    fn direction(&self) -> &'static str {
        if self.to_guest {
            "to_guest"
        } else {
            "from_guest"
        }
    }

    pub(super) fn json(&self) -> Value {
        let mut value = match &self.summary {
            Some(summary) => summary.json(),
            None => json!({ "len": self.len }),
        };
        value["time"] = json!(rfc3339(self.wall_ns));
        value["endpoint"] = json!(self.endpoint);
        value["ifindex"] = json!(self.ifindex);
        value["direction"] = json!(self.direction());
        value["verdict"] = json!(self.verdict());
        value["reason"] = json!(self.reason_name());
        value
    }

    pub(super) fn text(&self) -> String {
        let fate = match self.reason_name() {
            Some(reason) => format!("drop {reason}"),
            None => "pass".into(),
        };
        let frame = match &self.summary {
            Some(summary) => summary.to_string(),
            None => format!("runt len {}", self.len),
        };
        format!(
            "{} {} {} {fate} {frame}",
            clock_text(self.wall_ns),
            self.endpoint,
            self.direction().replace('_', "-"),
        )
    }
}

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `16:40:01.123456` (UTC).
fn clock_text(wall_ns: i128) -> String {
    let micros = wall_ns.div_euclid(1000);
    let secs = micros.div_euclid(1_000_000);
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        micros.rem_euclid(1_000_000)
    )
}

/// `2026-12-03T16:40:01.123456Z`.
fn rfc3339(wall_ns: i128) -> String {
    let secs = wall_ns.div_euclid(1_000_000_000);
    let (year, month, day) = civil(secs.div_euclid(86_400) as i64);
    format!("{year:04}-{month:02}-{day:02}T{}Z", clock_text(wall_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_text() {
        let ns = (1_796_316_001_i128 * 1_000_000_000) + 123_456_789;
        assert_eq!(rfc3339(ns), "2026-12-03T16:40:01.123456Z");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_514), (2026, 3, 2));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
