//! HTTP/1.1 on the wire where hyper is not used: the fast read of a connection's first
//! request head, and the responses written by hand.

pub mod fast_head;
pub mod respond;
