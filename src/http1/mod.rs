//! HTTP/1.1 on the wire where hyper is not used: the fast read of a connection's first
//! request head, the responses written by hand, and a client's body on its way upstream.

pub mod body;
pub mod fast_head;
pub mod respond;
