//! `macvswitch-cni`: the CNI plugin (the network configuration's `type`).
//! All of it is the controller library's `cni` module.

fn main() -> std::process::ExitCode {
    macvswitch::cni::main()
}
