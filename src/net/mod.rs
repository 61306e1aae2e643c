//! The ground floor: sockets, their options and the streams over them. Knows nothing of
//! HTTP, tokens or tunnels; every other stage reads and writes through it.

pub mod sockopt;
pub mod stream;
pub mod sys;

pub use stream::{Prefixed, Stream};
