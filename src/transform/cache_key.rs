//! The compiled cache's key and tags: HMAC-SHA256 (RFC 2104) with a random
//! 32-byte key kept in one owner-only file.

use std::io::{self, Read, Write};
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The key in `path`, or a new random one written there (created 0600 on
/// Unix, published atomically). A key file of the wrong size, readable by
/// group or others, or owned by another user is an error, not silently
/// used or replaced: the cache stays off until an operator looks.
pub(super) fn read_or_create(path: &Path) -> io::Result<[u8; 32]> {
    match std::fs::File::open(path) {
        Ok(mut file) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let metadata = file.metadata()?;
                // SAFETY: geteuid has no preconditions.
                let me = unsafe { libc::geteuid() };
                if metadata.mode() & 0o077 != 0 || metadata.uid() != me {
                    return Err(io::Error::other(
                        "the key file must be owned by this user and readable by no one else (chmod 600)",
                    ));
                }
            }
            let mut key = [0u8; 32];
            let mut rest = Vec::new();
            file.read_exact(&mut key)?;
            file.read_to_end(&mut rest)?;
            if !rest.is_empty() {
                return Err(io::Error::other("the key file is longer than 32 bytes"));
            }
            Ok(key)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            if let Some(dir) = path.parent() {
                crate::durable::create_dir_all(dir)?;
            }
            let staged = crate::durable::Staged::private(path)?;
            staged.file().write_all(&key)?;
            // Two processes creating the key at once: the first one wins,
            // the other reads it back.
            if staged.publish_new()? {
                Ok(key)
            } else {
                read_or_create(path)
            }
        }
        Err(error) => Err(error),
    }
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub(super) fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut inner_pad = [0x36u8; 64];
    let mut outer_pad = [0x5cu8; 64];
    for (i, byte) in key.iter().enumerate() {
        inner_pad[i] ^= byte;
        outer_pad[i] ^= byte;
    }
    let mut inner = Sha256::new();
    inner.update(inner_pad);
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(outer_pad);
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2 ("Jefe"), with the key zero-padded to 32
    /// bytes (HMAC pads short keys with zeros itself, so the tag is the
    /// same).
    #[test]
    fn matches_rfc_4231() {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let tag = hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"]);
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
