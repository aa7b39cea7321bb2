//! One codec for feature values: JSON <-> [`Value`] <-> Arrow, and times as
//! text and numbers ([`time`]). Requests, pushes, request data, responses,
//! `wafer transform test` and the CLI all read and print values through it,
//! so a value means the same on every path (an integer timestamp is epoch
//! seconds everywhere).

pub mod arrow;
pub mod columns;
pub mod time;
mod value;

pub use value::Value;

/// At most this many bytes of a client's input are quoted in a message.
pub const EXCERPT_BYTES: usize = 120;

/// `value` displayed for an error message, cut to [`EXCERPT_BYTES`] (on a
/// character boundary) with the cut marked, so a message never grows with
/// the input it quotes. Formatting stops at the cut: a 10 MB value costs
/// no more than a short one.
pub fn excerpt(value: &impl std::fmt::Display) -> String {
    struct Bounded {
        out: String,
        cut: bool,
    }
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = EXCERPT_BYTES - self.out.len();
            if s.len() <= room {
                self.out.push_str(s);
                return Ok(());
            }
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.out.push_str(&s[..end]);
            self.cut = true;
            Err(std::fmt::Error)
        }
    }
    let mut bounded = Bounded {
        out: String::new(),
        cut: false,
    };
    let _ = std::fmt::write(&mut bounded, format_args!("{value}"));
    if bounded.cut {
        bounded.out.push_str("...(cut)");
    }
    bounded.out
}

/// How many bytes `a` and `b` start with alike, compared 8 at a time
/// (encoded keys of one view share some 40 bytes of project and view).
pub fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut at = 0;
    for (x, y) in a[..n].chunks_exact(8).zip(b[..n].chunks_exact(8)) {
        let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        let differ = word(x) ^ word(y);
        if differ != 0 {
            // Read little-endian, the first byte that differs is the
            // lowest that does.
            return at + (differ.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + a[at..n]
        .iter()
        .zip(&b[at..n])
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    /// Random pairs sharing a random start (across and within the 8-byte
    /// words compared at once), of random lengths: the count a byte-by-byte
    /// comparison gives.
    #[test]
    fn shared_prefix_counts_the_bytes_alike() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let common: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            let tail = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<u8> {
                (0..rng.random_range(0..20))
                    .map(|_| rng.random_range(0..3))
                    .collect()
            };
            let a = [common.clone(), tail(&mut rng)].concat();
            let b = [common, tail(&mut rng)].concat();
            let expected = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            assert_eq!(super::shared_prefix(&a, &b), expected, "{a:?} {b:?}");
        }
    }
}
