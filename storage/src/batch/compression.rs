//! Compression codecs for a batch's records section, chosen per batch.

use crate::error::BatchError;

/// Codec applied to the records section of one batch (header bits 0-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Records stored as encoded.
    #[default]
    None,
    /// Records section compressed with raw (unframed) snappy.
    Snappy,
}

impl Compression {
    pub(crate) fn from_attributes(bits: u16) -> Result<Self, BatchError> {
        match bits {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Snappy),
            codec => Err(BatchError::UnknownCodec { codec }),
        }
    }

    pub(crate) fn attribute_bits(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Snappy => 1,
        }
    }

    /// Compresses `raw` into `out` (cleared first).
    pub(crate) fn compress(self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        out.clear();
        match self {
            Compression::None => out.extend_from_slice(raw),
            Compression::Snappy => {
                out.resize(snap::raw::max_compress_len(raw.len()), 0);
                let n = snap::raw::Encoder::new()
                    .compress(raw, out)
                    .map_err(|source| BatchError::Compression { source })?;
                out.truncate(n);
            }
        }
        Ok(())
    }

    /// Decompresses a records section (refusing one that claims to grow past
    /// `max_bytes` before allocating). For [`Compression::None`] this is a
    /// borrow; only compressed batches allocate.
    pub(crate) fn decompress(self, section: &[u8], max_bytes: usize) -> Result<std::borrow::Cow<'_, [u8]>, BatchError> {
        match self {
            Compression::None => Ok(std::borrow::Cow::Borrowed(section)),
            Compression::Snappy => {
                let len = snap::raw::decompress_len(section).map_err(|source| BatchError::Compression { source })?;
                if len > max_bytes {
                    return Err(BatchError::DecompressedTooLarge { len, max: max_bytes });
                }
                snap::raw::Decoder::new()
                    .decompress_vec(section)
                    .map(std::borrow::Cow::Owned)
                    .map_err(|source| BatchError::Compression { source })
            }
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "snappy" => Ok(Compression::Snappy),
            other => Err(format!("unknown compression {other:?} (expected none or snappy)")),
        }
    }
}
