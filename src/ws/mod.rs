//! The few RFC 6455 pieces gatewarden needs itself: the opening handshake's checks and keys
//! (`handshake`), `permessage-deflate` for the first message (`deflate`), frames and close
//! frames (`frame`), a server's close handshake (`close`), and a tracker that follows frame boundaries in a spliced stream
//! (`tracker`).

mod close;
mod deflate;
mod frame;
mod handshake;
#[cfg(test)]
mod tests;
mod tracker;

pub use close::*;
pub use deflate::*;
pub use frame::*;
pub use handshake::*;
pub use tracker::*;
