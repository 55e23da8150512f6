//! What the operator asks for and what macvswitch records: validated types,
//! the VLAN policy and isolation of a port, the configuration file and the
//! state records. Depends on `macvswitch-common` only.

/// Serde through the text form the CLI takes and prints (with
/// `#[serde(try_from = "String", into = "String")]` on the type): `$t`
/// parses with its `FromStr` (errors are `String`s) and writes with its
/// `Display`. Declared before the modules so that they see it.
macro_rules! serde_as_text {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = String;

            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.to_string()
            }
        }
    };
}

/// `skip_serializing_if` for flags that are off by default, so files and
/// records name only the ones set.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

pub mod config;
pub mod frame;
pub mod guards;
pub mod hash;
pub mod isolation;
pub mod policy;
pub mod spec;
pub mod state;
pub mod types;
