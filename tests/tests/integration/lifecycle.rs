//! State against kernel over time: apply, crashes (SIGKILL mid-command),
//! races between commands, reboot, reload and upgrade, and input
//! validation that must change nothing.

mod apply;
mod crash;
mod race;
mod reboot;
mod upgrade;
mod validation;
