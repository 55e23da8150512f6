//! One endpoint and its port kinds' basics: access ports, bridge mode
//! between guests, the CLI's show/list/derived MAC, del/reset, and lower
//! devices that cannot carry an endpoint.

mod access;
mod bridge;
mod cli;
mod lifecycle;
mod lower;
