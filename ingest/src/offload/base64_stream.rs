//! Base64 of a body that arrives in pieces: each piece is encoded as far as whole 3-byte
//! groups go, and the 0 to 2 bytes left over wait for the next piece (or the padding at the
//! end), so the concatenated output is exactly the base64 of the whole body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Most input bytes encoded at once, so the output buffer stays at 64 KiB.
pub(crate) const BLOCK_BYTES: usize = 48 * 1024;

/// Most output bytes one [`Base64Stream::encode`] of `input_bytes` writes, and so the most
/// its buffer grows to for them (it is reserved exactly): at most 64 KiB + 4, the output of
/// one block.
pub(crate) const fn output_room(input_bytes: usize) -> usize {
    let block = if input_bytes < BLOCK_BYTES {
        input_bytes
    } else {
        BLOCK_BYTES
    };
    block / 3 * 4 + 4
}

/// A streaming standard-base64 (padded) encoder.
#[derive(Debug, Default)]
pub(crate) struct Base64Stream {
    carry: [u8; 2],
    carry_len: usize,
    out: String,
}

impl Base64Stream {
    /// Encodes up to [`BLOCK_BYTES`] of `input` (and any leftover from before); returns the
    /// base64 text and how many input bytes it consumed. Call again with the rest.
    pub(crate) fn encode<'s>(&'s mut self, input: &[u8]) -> (&'s [u8], usize) {
        self.out.clear();
        self.out.reserve_exact(output_room(input.len()));
        let mut consumed = 0;
        if self.carry_len > 0 {
            let need = 3 - self.carry_len;
            if input.len() < need {
                self.carry[self.carry_len..self.carry_len + input.len()].copy_from_slice(input);
                self.carry_len += input.len();
                return (self.out.as_bytes(), input.len());
            }
            let mut group = [0u8; 3];
            group[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            group[self.carry_len..].copy_from_slice(&input[..need]);
            STANDARD.encode_string(group, &mut self.out);
            self.carry_len = 0;
            consumed = need;
        }
        let rest = &input[consumed..];
        let take = rest.len().min(BLOCK_BYTES);
        // Whole groups only; at the end of the input, what does not make a group is kept.
        let whole = take / 3 * 3;
        STANDARD.encode_string(&rest[..whole], &mut self.out);
        consumed += whole;
        if take == rest.len() {
            let left = &rest[whole..];
            self.carry[..left.len()].copy_from_slice(left);
            self.carry_len = left.len();
            consumed += left.len();
        }
        (self.out.as_bytes(), consumed)
    }

    /// The last characters: the leftover bytes, padded.
    pub(crate) fn finish(&mut self) -> &[u8] {
        self.out.clear();
        STANDARD.encode_string(&self.carry[..self.carry_len], &mut self.out);
        self.carry_len = 0;
        self.out.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes the encoder's output buffer may take: the output of one block.
    const BUFFER_BYTES: usize = BLOCK_BYTES / 3 * 4 + 4;

    fn encode_in_pieces(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut encoder = Base64Stream::default();
        let mut out = Vec::new();
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(body.len());
        for end in bounds {
            let mut piece = &body[start.min(end)..end];
            while !piece.is_empty() {
                let (text, used) = encoder.encode(piece);
                out.extend_from_slice(text);
                piece = &piece[used..];
            }
            start = start.max(end);
        }
        out.extend_from_slice(encoder.finish());
        out
    }

    #[test]
    fn large_pieces_are_encoded_a_block_at_a_time() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut encoder = Base64Stream::default();
        let (text, used) = encoder.encode(&body);
        assert_eq!(used, BLOCK_BYTES);
        assert!(text.len() <= BUFFER_BYTES);
        assert_eq!(output_room(body.len()), BUFFER_BYTES);
        // Small pieces keep the buffer small (a stalled client holds little).
        let mut encoder = Base64Stream::default();
        let (text, _) = encoder.encode(&body[..1000]);
        assert!(text.len() <= output_room(1000));
        assert!(encoder.out.capacity() <= output_room(1000));
        assert_eq!(
            encode_in_pieces(&body, &[]),
            STANDARD.encode(&body).into_bytes()
        );
    }

    proptest! {
        #[test]
        fn any_split_gives_the_base64_of_the_whole(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            prop_assert_eq!(encode_in_pieces(&body, &cuts), STANDARD.encode(&body).into_bytes());
        }
    }
}
