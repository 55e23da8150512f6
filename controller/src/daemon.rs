//! `macvswitch daemon`: keeps the kernel converged to the state file while
//! the host does what hosts do.
//!
//! - At start, and after every burst of link events (RTNLGRP_LINK) that
//!   concerns a recorded endpoint, host port or lower device, it opens a
//!   fresh session and runs [`Session::restore`](crate::ops::session::Session):
//!   endpoints deleted out of band are cleaned up, endpoints whose lower
//!   device went wait for it and come back with it, a macvtap recreated by
//!   hand under a recorded name is re-adopted. The state lock is held only
//!   inside that session, so CLI commands run alongside the daemon; a
//!   periodic resync covers events the kernel dropped.
//! - The programs do not log; `macvswitch monitor` shows their drops,
//!   switched on at run time.
//! - SIGTERM and SIGINT end it with status 0. Everything it manages is
//!   pinned, so the data path goes on forwarding without it.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage},
    },
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
};

use crate::{
    error::{Error, Result},
    model::state::State,
    ops::instance::Instance,
    ops::reconcile::RestoreReport,
};

/// Quiet time after the last relevant link event before reacting: a lower
/// device's removal and its macvtaps' removals arrive as one burst.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A burst that never goes quiet is acted on after this long anyway.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// A restore even without events: the kernel drops multicast events when
/// the socket's buffer overflows, and a failed restore is retried.
const RESYNC: Duration = Duration::from_secs(60);
/// Receive buffer of the event socket.
const EVENT_BUFFER: usize = 4 << 20;

/// Runs until SIGTERM or SIGINT; serves `/metrics` on `metrics` if given.
pub async fn run(instance: &Instance, metrics: Option<std::net::SocketAddr>) -> Result<()> {
    let signal_stream = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::io(format!("handling {name}"), e))
    };
    let mut sigterm = signal_stream(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = signal_stream(SignalKind::interrupt(), "SIGINT")?;
    // Subscribe before the first restore, so nothing that happens in
    // between goes unnoticed.
    let mut events = LinkEvents::subscribe()?;
    let metrics = match metrics {
        Some(addr) => Some(crate::metrics::Server::bind(addr).await?),
        None => None,
    };
    let mut daemon = Daemon {
        instance,
        waiting: BTreeSet::new(),
    };
    daemon.restore("start").await?;
    log::info!(
        "daemon: watching link events (state {}, pins {}); the data path is pinned and keeps forwarding without the daemon",
        instance.state_dir.root().display(),
        instance.pins.root().display()
    );

    let mut resync = tokio::time::interval_at((Instant::now() + RESYNC).into(), RESYNC);
    // When a burst of relevant events began, and when to react to it.
    let mut burst: Option<(Instant, Instant)> = None;
    loop {
        let react_at = burst.map(|(first, last)| (last + DEBOUNCE).min(first + DEBOUNCE_MAX));
        tokio::select! {
            _ = sigterm.recv() => {
                log::info!("daemon: SIGTERM: exiting; the data path stays");
                break;
            }
            _ = sigint.recv() => {
                log::info!("daemon: SIGINT: exiting; the data path stays");
                break;
            }
            event = events.next() => match event {
                Some(event) => {
                    if let Some(why) = daemon.relevance(&event) {
                        log::debug!("daemon: link event: {why}");
                        let now = Instant::now();
                        burst = Some(burst.map_or((now, now), |(first, _)| (first, now)));
                    }
                }
                None => {
                    log::warn!("daemon: the link event socket closed; subscribing again");
                    events = LinkEvents::subscribe()?;
                    daemon.restore_logged("resubscribed").await;
                }
            },
            () = sleep_until(react_at) => {
                burst = None;
                daemon.restore_logged("link events").await;
            }
            _ = resync.tick() => daemon.restore_logged("periodic resync").await,
            Some(stream) = accept(metrics.as_ref()) => {
                crate::metrics::answer(instance, stream).await;
            }
        }
    }
    Ok(())
}

/// The next scraper's connection; never, without a metrics server.
async fn accept(server: Option<&crate::metrics::Server>) -> Option<tokio::net::TcpStream> {
    match server {
        Some(server) => server.accept().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A link event, reduced to what decides whether it concerns us.
#[derive(Debug)]
enum LinkEvent {
    New {
        index: u32,
        name: Option<String>,
    },
    Del {
        index: u32,
        name: Option<String>,
    },
    /// The kernel dropped events: anything may have happened.
    Overrun,
}

/// The RTNLGRP_LINK multicast subscription.
struct LinkEvents {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        SocketAddr,
    )>,
    connection: JoinHandle<()>,
}

impl LinkEvents {
    fn subscribe() -> Result<Self> {
        let context = "subscribing to link events";
        let (mut connection, _handle, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .map_err(|e| Error::io(context, e))?;
        // A lower device with many macvtaps going away is a burst; events
        // lost to a full buffer are caught by an overrun-triggered restore.
        if let Err(e) = connection
            .socket_mut()
            .socket_mut()
            .set_rx_buf_sz(EVENT_BUFFER)
        {
            log::debug!("daemon: enlarging the event socket buffer: {e}");
        }
        Ok(Self {
            messages,
            connection: tokio::spawn(connection),
        })
    }

    /// The next link event; `None` when the socket is gone.
    async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (message, _) = self.messages.next().await?;
            let event = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    let (index, name) = identify(link);
                    LinkEvent::New { index, name }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    let (index, name) = identify(link);
                    LinkEvent::Del { index, name }
                }
                NetlinkPayload::Overrun(_) => LinkEvent::Overrun,
                _ => continue,
            };
            return Some(event);
        }
    }
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn identify(link: LinkMessage) -> (u32, Option<String>) {
    let name = link
        .attributes
        .into_iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::IfName(name) => Some(name),
            _ => None,
        });
    (link.header.index, name)
}

struct Daemon<'a> {
    instance: &'a Instance,
    /// What was waiting for its lower device after the last restore, so
    /// that "waiting" is logged once, not on every restore.
    waiting: BTreeSet<String>,
}

impl Daemon<'_> {
    /// Whether a link event concerns a recorded endpoint, host port or
    /// lower device (by name or recorded ifindex). The state file is read
    /// afresh without the lock: it is replaced atomically, and CLI commands
    /// may have changed it since the last restore.
    fn relevance(&self, event: &LinkEvent) -> Option<String> {
        let (what, index, name) = match event {
            LinkEvent::Overrun => return Some("events were dropped (overrun)".into()),
            LinkEvent::New { index, name } => ("new", *index, name.as_deref()),
            LinkEvent::Del { index, name } => ("deleted", *index, name.as_deref()),
        };
        let state = match self.instance.state_dir.load() {
            Ok(state) => state,
            Err(e) => {
                log::warn!("daemon: {e}");
                return Some(format!("link {index} {what} (state unreadable)"));
            }
        };
        let shown = name.unwrap_or("?");
        state
            .concerns_link(index, name)
            .then(|| format!("{shown} (ifindex {index}) {what}"))
    }

    /// One restore in a fresh session; errors are logged and retried at
    /// the next event or resync.
    async fn restore_logged(&mut self, why: &str) {
        if let Err(e) = self.restore(why).await {
            log::error!("daemon: restore after {why} failed: {e}");
        }
    }

    async fn restore(&mut self, why: &str) -> Result<()> {
        let (before, after, report) = {
            let mut session = self.instance.session().await?;
            let before = session.state.clone();
            let report = session.restore().await?;
            (before, session.state.clone(), report)
            // The session, and with it the state lock, ends here.
        };
        log::debug!("daemon: restore after {why}: {report:?}");
        self.log_report(&before, &after, &report);
        Ok(())
    }

    fn log_report(&mut self, before: &State, after: &State, report: &RestoreReport) {
        for name in &report.removed {
            let (kind, _) = before.describe(name);
            log::info!("{kind} {name} deleted out of band: cleaned up");
        }
        for name in &report.recreated {
            let (kind, lower) = after.describe(name);
            log::info!("{kind} {name} recreated on {lower}");
        }
        for name in &report.adopted {
            let (kind, lower) = after.describe(name);
            log::info!("{kind} {name} recreated by hand on {lower}: re-adopted");
        }
        // What is waiting now: reported by this restore, or still waiting.
        let mut waiting: BTreeSet<String> = report.waiting.iter().cloned().collect();
        waiting.extend(
            self.waiting
                .iter()
                .filter(|name| after.is_waiting(name))
                .cloned(),
        );
        for name in waiting.difference(&self.waiting) {
            let (kind, lower) = after.describe(name);
            log::info!("{kind} {name}: lower device {lower} is gone; waiting for it to return");
        }
        self.waiting = waiting;
    }
}
