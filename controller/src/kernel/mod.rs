//! The kernel objects macvswitch makes and finds: the data path (programs,
//! maps, pins, attachments), links through netlink, tap nodes and the
//! bpffs. Uses `model` for the values it writes; knows nothing of the
//! state file or the verbs.

pub mod bpffs;
pub mod datapath;
pub mod netlink;
pub mod netns;
pub mod sys;
pub mod tapdev;
