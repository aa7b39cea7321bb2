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
