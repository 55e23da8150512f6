//! TC egress of the macvtap: frames the guest wrote to its tap fd.

use aya_ebpf::{macros::classifier, programs::TcContext};

use crate::{counters::Direction, port};

#[classifier]
pub fn from_guest(ctx: TcContext) -> i32 {
    port::handle(ctx, Direction::FromGuest, macvswitch_common::from_guest)
}
