//! FNV-1a: a hash that is stable across versions and platforms (unlike
//! std's hasher), for values that outlive a process: the build id of the
//! pinned programs, derived MACs, community ids.

/// FNV-1a in a width of up to 64 bits: `mask` keeps the width, since the
/// low bits of a product depend only on the low bits of its factors.
fn fnv1a(bytes: &[u8], basis: u64, prime: u64, mask: u64) -> u64 {
    bytes.iter().fold(basis, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(prime) & mask
    })
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a(
        bytes,
        0xcbf2_9ce4_8422_2325,
        0x0000_0100_0000_01b3,
        u64::MAX,
    )
}

/// 32-bit FNV-1a.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let hash = fnv1a(bytes, 0x811c_9dc5, 0x0100_0193, u64::from(u32::MAX));
    u32::try_from(hash).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published test vectors: the values recorded in maps and pins by
    /// earlier builds stay the same.
    #[test]
    fn known_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
