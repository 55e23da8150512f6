//! Private-VLAN isolation (promiscuous, community, isolated) in every mode,
//! and behind a switch that reflects frames (hairpin).

mod hairpin;
mod matrix;
