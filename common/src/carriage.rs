//! VLAN carriage in `skb->mark` on the local path.
//!
//! A macvtap has no VLAN TX offload, so a tag pushed on its egress is
//! inserted into the frame bytes at transmit (a new head and a copy per
//! frame) and, for a bridge-local receiver, taken out again. Instead the
//! endpoint's egress program writes the tag into the mark; the lower
//! device's egress program turns it into a metadata tag (which the NIC or
//! veth inserts by offload) and a receiving endpoint's ingress program
//! filters by it. Nothing touches the frame bytes.
//!
//! Layout within the configured mask (`MarkCarriage::mask`):
//! - the lowest 17 bits of the mask, which must be contiguous, hold the
//!   tag: the TCI (PCP, DEI, VID) and one bit for an 802.1ad TPID;
//! - every other bit of the mask holds `pattern`: random per load of the
//!   maps, never zero, so that another tool's marks do not match by
//!   accident.
//!
//! A frame written to a tap fd starts with mark 0, and a veth from another
//! namespace scrubs it, so only a privileged process in the lower device's
//! namespace could forge one.

use crate::{TPID_8021AD, TPID_8021Q, Tag};

/// Bits the tag takes in the mark: 16 of TCI and one for the TPID.
pub const TAG_BITS: u32 = 17;
/// Pattern bits a mask must leave at least, beyond the tag.
pub const MIN_PATTERN_BITS: u32 = 8;
const TAG_FIELD: u32 = (1 << TAG_BITS) - 1;
const TAG_8021AD: u32 = 1 << 16;
/// The mask used when none is configured: the whole mark. Frames written
/// by guests carry no mark of their own, and macvswitch clears its bits
/// before a frame reaches the wire or a guest.
pub const DEFAULT_MARK_MASK: u32 = u32::MAX;

/// The value of `CARRIAGE` (one entry): how tags are carried in the mark.
/// `mask == 0` means carriage is off (never set by a working controller).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkCarriage {
    /// The bits of `skb->mark` that macvswitch owns.
    pub mask: u32,
    /// The pattern bits (within `mask`, outside the tag field) that make a
    /// mark ours.
    pub pattern: u32,
    /// Position of the tag field: the lowest set bit of `mask`.
    pub shift: u32,
    pub _pad: u32,
}

/// Why a mask cannot carry tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskError {
    /// The 17 bits from the mask's lowest set bit are not all set.
    TagFieldNotContiguous,
    /// Fewer than `MIN_PATTERN_BITS` bits remain for the pattern.
    TooFewPatternBits,
}

impl MarkCarriage {
    /// Carriage with `mask` and a pattern drawn from `random` (only the
    /// bits of the mask outside the tag field are used; the highest of them
    /// is always set, so the pattern is never zero).
    pub fn new(mask: u32, random: u32) -> Result<Self, MaskError> {
        if mask == 0 {
            return Err(MaskError::TagFieldNotContiguous);
        }
        let shift = mask.trailing_zeros();
        if shift + TAG_BITS > 32 || (mask >> shift) & TAG_FIELD != TAG_FIELD {
            return Err(MaskError::TagFieldNotContiguous);
        }
        let pattern_bits = mask & !(TAG_FIELD << shift);
        if pattern_bits.count_ones() < MIN_PATTERN_BITS {
            return Err(MaskError::TooFewPatternBits);
        }
        let fixed = 1 << (31 - pattern_bits.leading_zeros());
        Ok(Self {
            mask,
            pattern: (random & pattern_bits) | fixed,
            shift,
            _pad: 0,
        })
    }

    /// The pattern bits of the mask.
    #[inline(always)]
    pub const fn pattern_bits(&self) -> u32 {
        self.mask & !(TAG_FIELD << (self.shift & 31))
    }

    /// Whether `mark` carries one of our tags.
    #[inline(always)]
    pub const fn is_ours(&self, mark: u32) -> bool {
        self.mask != 0 && mark & self.pattern_bits() == self.pattern
    }

    /// `mark` with `tag` carried in our bits (the other bits kept).
    #[inline(always)]
    pub const fn carry(&self, mark: u32, tag: Tag) -> u32 {
        let ad = if tag.tpid == TPID_8021AD {
            TAG_8021AD
        } else {
            0
        };
        (mark & !self.mask) | self.pattern | ((tag.tci as u32 | ad) << (self.shift & 31))
    }

    /// The tag carried in `mark`, if the mark is ours.
    #[inline(always)]
    pub const fn carried(&self, mark: u32) -> Option<Tag> {
        if !self.is_ours(mark) {
            return None;
        }
        let field = (mark >> (self.shift & 31)) & TAG_FIELD;
        let tpid = if field & TAG_8021AD != 0 {
            TPID_8021AD
        } else {
            TPID_8021Q
        };
        Some(Tag {
            tpid,
            tci: field as u16,
        })
    }

    /// `mark` without our bits.
    #[inline(always)]
    pub const fn cleared(&self, mark: u32) -> u32 {
        mark & !self.mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: Tag = Tag {
        tpid: TPID_8021Q,
        tci: 0xa00a,
    };
    const SERVICE: Tag = Tag {
        tpid: TPID_8021AD,
        tci: 0x012c,
    };

    #[test]
    fn round_trip_in_the_default_mask() {
        let c = MarkCarriage::new(DEFAULT_MARK_MASK, 0x1234_5678).unwrap();
        for tag in [ACCESS, SERVICE] {
            let mark = c.carry(0, tag);
            assert!(c.is_ours(mark));
            assert_eq!(c.carried(mark), Some(tag));
            assert_eq!(c.cleared(mark), 0);
        }
        assert_eq!(c.carried(0), None, "mark 0 is never ours");
    }

    #[test]
    fn other_bits_are_kept() {
        let c = MarkCarriage::new(0xffff_ff80, 0xdead_beef).unwrap();
        assert_eq!(c.shift, 7);
        let mark = c.carry(0x45, ACCESS);
        assert_eq!(mark & 0x7f, 0x45);
        assert_eq!(c.carried(mark), Some(ACCESS));
        assert_eq!(c.cleared(mark), 0x45);
        // A mark in the bits outside the mask is not ours.
        assert_eq!(c.carried(0x45), None);
    }

    #[test]
    fn marks_that_differ_only_in_random_bits_are_not_ours() {
        let c = MarkCarriage::new(DEFAULT_MARK_MASK, 0x5a5a_5a5a).unwrap();
        let mark = c.carry(0, ACCESS);
        for bit in 0..32 {
            if c.pattern_bits() & (1 << bit) != 0 {
                assert_eq!(c.carried(mark ^ (1 << bit)), None, "bit {bit}");
            }
        }
    }

    #[test]
    fn masks_that_cannot_carry_a_tag() {
        assert_eq!(
            MarkCarriage::new(0, 1),
            Err(MaskError::TagFieldNotContiguous)
        );
        assert_eq!(
            MarkCarriage::new(0xffff_0000, 1),
            Err(MaskError::TagFieldNotContiguous)
        );
        assert_eq!(
            MarkCarriage::new(0x00ff_ffff, 1),
            Err(MaskError::TooFewPatternBits)
        );
        assert_eq!(
            MarkCarriage::new(0xfffe_ffff, 1),
            Err(MaskError::TagFieldNotContiguous),
            "bit 16 is missing from the tag field"
        );
        assert!(MarkCarriage::new(0x01ff_ffff, 0).is_ok());
    }
}
