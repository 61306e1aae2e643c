//! The ground floor: sockets, their options and the streams over them. Knows nothing of
//! HTTP, tokens or tunnels; every other stage reads and writes through it.

pub(crate) mod sockopt;
pub(crate) mod stream;
pub(crate) mod sys;

pub(crate) use stream::Prefixed;
pub use stream::Stream;
