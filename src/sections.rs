//! Length-prefixed sections: the framing shared by the binary part formats
//! (`poisongate.summary/*` and `poisongate.profile-part/*`).
//!
//! A section is a little-endian `u64` length followed by that many bytes. Fixed-width arrays
//! follow without a prefix; their length comes from a section read before them.

/// Appends `bytes` as one section.
pub(crate) fn put_section(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads sections back; every read is bounds-checked and answers `None` past the end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Largest section accepted, so a corrupt length cannot ask for an absurd allocation.
    max_section: u64,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], max_section: u64) -> Self {
        Self {
            bytes,
            at: 0,
            max_section,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    /// The next section's bytes.
    pub(crate) fn section(&mut self) -> Option<&'a [u8]> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().ok()?);
        if n > self.max_section {
            return None;
        }
        self.take(usize::try_from(n).ok()?)
    }

    /// `n` values of `width` bytes each.
    pub(crate) fn array(&mut self, n: usize, width: usize) -> Option<&'a [u8]> {
        self.take(n.checked_mul(width)?)
    }

    /// Whether every byte has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }
}
