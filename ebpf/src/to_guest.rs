//! TC ingress of the macvtap: frames on their way to the guest, from the
//! wire or from other endpoints on the same lower device.

use aya_ebpf::{macros::classifier, programs::TcContext};

use crate::{counters::Direction, port};

#[classifier]
pub fn to_guest(ctx: TcContext) -> i32 {
    port::handle(ctx, Direction::ToGuest, macvswitch_common::to_guest)
}
