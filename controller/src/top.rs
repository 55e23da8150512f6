//! `macvswitch top`: frames, bytes and drops per second per endpoint, from
//! two reads of the counters a sampling interval apart; live in a terminal
//! (ratatui), or one sample for scripts (`--once --json`).

use std::{
    io,
    time::{Duration, Instant},
};

use macvswitch_common::EndpointCounters;
use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::Constraint,
    style::{Modifier, Style},
    widgets::{Block, Cell, Row, Table},
};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    ops::instance::Instance,
    report::{self, StatsRow},
};

/// One endpoint's rates over one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    pub endpoint: String,
    pub from_guest_fps: f64,
    pub to_guest_fps: f64,
    pub from_guest_bps: f64,
    pub to_guest_bps: f64,
    pub drops_ps: f64,
}

impl Rates {
    pub fn json(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "from_guest_fps": self.from_guest_fps,
            "to_guest_fps": self.to_guest_fps,
            "from_guest_bps": self.from_guest_bps,
            "to_guest_bps": self.to_guest_bps,
            "drops_ps": self.drops_ps,
        })
    }
}

fn drops(counters: &EndpointCounters) -> u64 {
    counters.drops.iter().sum()
}

/// Rates from two samples `seconds` apart (endpoints in both; counters
/// that went backwards, after a reset, count as 0).
pub fn rates(before: &[StatsRow], after: &[StatsRow], seconds: f64) -> Vec<Rates> {
    after
        .iter()
        .filter_map(|now| {
            let then = before.iter().find(|b| b.name == now.name)?;
            let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
            let (a, b) = (&then.counters, &now.counters);
            Some(Rates {
                endpoint: now.name.clone(),
                from_guest_fps: per_s(a.from_guest_packets, b.from_guest_packets),
                to_guest_fps: per_s(a.to_guest_packets, b.to_guest_packets),
                // Bits, as link speeds are given.
                from_guest_bps: 8.0 * per_s(a.from_guest_bytes, b.from_guest_bytes),
                to_guest_bps: 8.0 * per_s(a.to_guest_bytes, b.to_guest_bytes),
                drops_ps: per_s(drops(a), drops(b)),
            })
        })
        .collect()
}

/// Every endpoint's counters now.
fn sample(instance: &Instance) -> Result<(Instant, Vec<StatsRow>)> {
    let records = instance.list()?;
    Ok((Instant::now(), report::stats_rows(instance, &records)?))
}

/// One sample of the rates over `interval`.
pub async fn once(instance: &Instance, interval: Duration) -> Result<Vec<Rates>> {
    let (t0, before) = sample(instance)?;
    tokio::time::sleep(interval).await;
    let (t1, after) = sample(instance)?;
    Ok(rates(&before, &after, (t1 - t0).as_secs_f64()))
}

/// The columns, and what `s` cycles the sort through.
const COLUMNS: [&str; 6] = [
    "ENDPOINT",
    "FROM GUEST f/s",
    "TO GUEST f/s",
    "FROM GUEST bit/s",
    "TO GUEST bit/s",
    "DROPS/s",
];

fn sort(rows: &mut [Rates], column: usize) {
    let key = |r: &Rates| match column {
        1 => r.from_guest_fps,
        2 => r.to_guest_fps,
        3 => r.from_guest_bps,
        4 => r.to_guest_bps,
        _ => r.drops_ps,
    };
    if column == 0 {
        rows.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    } else {
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)));
    }
}

/// `1.2k`, `3.4M`: rates as a person reads them.
fn human(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// The rates as a text table (`--once` without `--json`).
pub fn text(rows: &[Rates]) -> String {
    let mut out = format!(
        "{:<15} {:>14} {:>14} {:>16} {:>16} {:>9}\n",
        COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], COLUMNS[4], COLUMNS[5]
    );
    for r in rows {
        out += &format!(
            "{:<15} {:>14} {:>14} {:>16} {:>16} {:>9}\n",
            r.endpoint,
            human(r.from_guest_fps),
            human(r.to_guest_fps),
            human(r.from_guest_bps),
            human(r.to_guest_bps),
            human(r.drops_ps)
        );
    }
    out
}

/// The live view: refreshes every `interval`; `s` changes the sort column,
/// `q` (or Esc, or Ctrl-C) quits.
pub fn live(instance: &Instance, interval: Duration) -> Result<()> {
    let mut terminal = ratatui::try_init().map_err(|e| Error::io("opening the terminal", e))?;
    let result = (|| -> Result<()> {
        let mut column = 1;
        let mut last = sample(instance)?;
        let mut rows: Vec<Rates> = Vec::new();
        'view: loop {
            sort(&mut rows, column);
            terminal
                .draw(|frame| {
                    let header = Row::new(COLUMNS.iter().enumerate().map(|(i, name)| {
                        let style = if i == column {
                            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
                        } else {
                            Style::new().add_modifier(Modifier::BOLD)
                        };
                        Cell::from(*name).style(style)
                    }));
                    let body = rows.iter().map(|r| {
                        Row::new([
                            r.endpoint.clone(),
                            human(r.from_guest_fps),
                            human(r.to_guest_fps),
                            human(r.from_guest_bps),
                            human(r.to_guest_bps),
                            human(r.drops_ps),
                        ])
                    });
                    let widths = [
                        Constraint::Length(16),
                        Constraint::Length(15),
                        Constraint::Length(15),
                        Constraint::Length(17),
                        Constraint::Length(17),
                        Constraint::Length(10),
                    ];
                    let table = Table::new(body, widths)
                        .header(header)
                        .block(Block::bordered().title(" macvswitch top — s: sort, q: quit "));
                    frame.render_widget(table, frame.area());
                })
                .map_err(|e| Error::io("drawing", e))?;
            let deadline = last.0 + interval;
            // Keys until the next sample is due.
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if event::poll(left).map_err(|e| Error::io("reading keys", e))?
                    && let Event::Key(key) =
                        event::read().map_err(|e| Error::io("reading keys", e))?
                    && key.kind == KeyEventKind::Press
                {
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c')
                            if key
                                .modifiers
                                .contains(ratatui::crossterm::event::KeyModifiers::CONTROL) =>
                        {
                            return Ok(());
                        }
                        KeyCode::Char('s') => {
                            // Redrawn at once, in the new order; the next
                            // sample stays due when it was.
                            column = (column + 1) % COLUMNS.len();
                            continue 'view;
                        }
                        _ => {}
                    }
                }
            }
            let now = sample(instance)?;
            rows = rates(&last.1, &now.1, (now.0 - last.0).as_secs_f64());
            last = now;
        }
    })();
    ratatui::restore();
    result
}

/// The interval must be long enough to measure and short enough to watch.
pub fn check_interval(seconds: f64) -> Result<Duration> {
    if !(0.1..=60.0).contains(&seconds) {
        return Err(Error::invalid(
            "--interval",
            seconds,
            "must be between 0.1 and 60 seconds",
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Whether stdout is a terminal the live view can use.
pub fn interactive() -> bool {
    io::IsTerminal::is_terminal(&io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, from: u64, to: u64, dropped: u64) -> StatsRow {
        let mut counters = EndpointCounters::ZERO;
        counters.from_guest_packets = from;
        counters.from_guest_bytes = from * 100;
        counters.to_guest_packets = to;
        counters.to_guest_bytes = to * 100;
        counters.drops[4] = dropped;
        StatsRow {
            name: name.into(),
            counters,
            vlans: None,
        }
    }

    #[test]
    fn rates_are_differences_over_time() {
        let before = [row("a", 100, 0, 1), row("gone", 1, 1, 1)];
        let after = [row("a", 300, 50, 11), row("new", 5, 5, 5)];
        let r = rates(&before, &after, 2.0);
        assert_eq!(r.len(), 1, "only endpoints in both samples");
        assert_eq!(r[0].from_guest_fps, 100.0);
        assert_eq!(r[0].to_guest_fps, 25.0);
        assert_eq!(r[0].from_guest_bps, 8.0 * 100.0 * 100.0);
        assert_eq!(r[0].drops_ps, 5.0);
        // A reset in between counts as nothing, not as a negative rate.
        assert_eq!(rates(&after, &before, 1.0)[0].from_guest_fps, 0.0);
    }

    #[test]
    fn sorting_and_units() {
        let mut rows = rates(
            &[row("a", 0, 0, 0), row("b", 0, 0, 0)],
            &[row("a", 10, 0, 0), row("b", 20, 0, 0)],
            1.0,
        );
        sort(&mut rows, 1);
        assert_eq!(rows[0].endpoint, "b");
        sort(&mut rows, 0);
        assert_eq!(rows[0].endpoint, "a");
        assert_eq!(human(1_234.0), "1.2k");
        assert_eq!(human(3_400_000.0), "3.4M");
        assert_eq!(human(12.0), "12");
    }
}
