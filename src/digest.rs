//! Digests of several parts: SHA-256 over each part framed by its length (8 bytes, big
//! endian), so that no two different sequences of parts hash the same (`"ab", "c"` and
//! `"a", "bc"` differ). Module digests, render cache keys and plan keys are made this way;
//! module digests appear in statuses and golden files, so the framing never changes.

use sha2::{Digest, Sha256};

/// The hex SHA-256 of `parts`, each framed by its length.
pub fn framed<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_framed_by_their_length() {
        assert_ne!(framed(["ab", "c"]), framed(["a", "bc"]));
        // The framing is part of every module digest: it must never change (the expected
        // value computed independently: sha256 of u64be(8) "main.ncl" u64be(2) "{}").
        assert_eq!(
            framed(["main.ncl", "{}"]),
            "4c1ad3c1375b33bf6472b0a63b480ba66faa8563feef6af316b2b2cbef45f0ea"
        );
    }
}
