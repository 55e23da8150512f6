//! Bench-only: never attached by the controller. The monitor's switch read
//! on its own (what every frame pays when nobody watches), so that the
//! per-program benchmark can show that cost over the empty program. It
//! reads `MONITOR`, a map production has anyway; it adds none.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use macvswitch_common::monitor::MONITOR_DROPS;

use crate::monitor::watching;

#[classifier]
pub fn bench_monitor_idle(_ctx: TcContext) -> i32 {
    // The verdict depends on the read, so the read stays; nobody watches
    // in the bench, so it is always TC_ACT_OK.
    if watching(MONITOR_DROPS) {
        TC_ACT_UNSPEC
    } else {
        TC_ACT_OK
    }
}
