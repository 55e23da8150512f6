//! Port policies against the wire and between guests: trunk and tunnel
//! ports, hostile tags, live policy changes, MTU and multicast.

mod between_guests;
mod hostile;
mod live_change;
mod mtu;
mod multicast;
mod trunk;
mod tunnel;
