//! Content hashes of the upload protocol (sections 5.2-5.4 of the API reference): SHA-1
//! content_hash, the 1 KiB pre_hash, and proof_code v1. Used by the uploader and, to check
//! proofs, by the emulator: one algorithm, one implementation.

use base64::Engine;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use std::io::{Read, Seek, SeekFrom};

/// Bytes covered by `pre_hash`.
pub const PRE_HASH_BYTES: usize = 1024;

/// Uppercase hex SHA-1, as the server prints content hashes.
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(data))
}

/// Streaming SHA-1 of a reader, uppercase hex.
pub fn sha1_of_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode_upper(hasher.finalize()))
}

/// `pre_hash`: SHA-1 of the first 1024 bytes (the whole content if shorter).
pub fn pre_hash(first_bytes: &[u8]) -> String {
    sha1_hex(&first_bytes[..first_bytes.len().min(PRE_HASH_BYTES)])
}

/// The byte range `[start, end)` that proof_code v1 covers for this access token and file size.
/// `None` for an empty file (whose proof is the empty string).
pub fn proof_range(access_token: &str, file_size: u64) -> Option<(u64, u64)> {
    if file_size == 0 {
        return None;
    }
    let digest = hex::encode(Md5::digest(access_token.as_bytes()));
    // Unsigned: half of all tokens have the top bit set.
    let n = u64::from_str_radix(&digest[..16], 16).expect("md5 hex is hex");
    let start = n % file_size;
    let end = (start + 8).min(file_size);
    Some((start, end))
}

/// proof_code v1 from the bytes at `proof_range` (standard base64 with padding).
pub fn proof_code_from_bytes(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// proof_code v1 of in-memory content.
pub fn proof_code(access_token: &str, content: &[u8]) -> String {
    match proof_range(access_token, content.len() as u64) {
        None => String::new(),
        Some((start, end)) => proof_code_from_bytes(&content[start as usize..end as usize]),
    }
}

/// proof_code v1 of a file on disk of `size` bytes, reading only the 8 bytes it needs.
pub fn proof_code_of_file(
    access_token: &str,
    file: &mut (impl Read + Seek),
    size: u64,
) -> std::io::Result<String> {
    match proof_range(access_token, size) {
        None => Ok(String::new()),
        Some((start, end)) => {
            file.seek(SeekFrom::Start(start))?;
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact(&mut buf)?;
            Ok(proof_code_from_bytes(&buf))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_code_vectors_from_the_reference() {
        assert_eq!(
            proof_code("example-access-token", b"Hello World!"),
            "bG8gV29ybGQ="
        );
        let mib: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 256) as u8).collect();
        assert_eq!(
            proof_range("example-access-token", mib.len() as u64),
            Some((814379, 814387))
        );
        assert_eq!(proof_code("example-access-token", &mib), "KywtLi8wMTI=");
        assert_eq!(proof_code("another.access.token", b"abc"), "Yw==");
        assert_eq!(proof_code("anything", b""), "");
        assert_eq!(pre_hash(&mib), "5B00669C480D5CFFBDFA8BDBA99561160F2D1B77");
        assert_eq!(sha1_hex(&mib), "ECFC8E86FDD83811F9CC9BF500993B63069923BE");
    }

    #[test]
    fn reference_hashes() {
        assert_eq!(
            sha1_hex(b"Hello World!"),
            "2EF7BDE608CE5404E97D5F042F95F89F1C232871"
        );
        assert_eq!(sha1_hex(b""), "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709");
        assert_eq!(
            sha1_of_reader(&b"Hello World!"[..]).unwrap(),
            "2EF7BDE608CE5404E97D5F042F95F89F1C232871"
        );
    }

    #[test]
    fn proof_of_file_matches_in_memory() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut cur = std::io::Cursor::new(data.clone());
        assert_eq!(
            proof_code_of_file("tok", &mut cur, data.len() as u64).unwrap(),
            proof_code("tok", &data)
        );
    }
}
