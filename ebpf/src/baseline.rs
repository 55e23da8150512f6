//! An empty TC program, built and loaded exactly like the real ones: the
//! baseline that benchmarks subtract to get the cost of our own work.

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

#[classifier]
pub fn baseline(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
