//! HTTP/1.1 on the wire where hyper is not used: the fast read of a connection's first
//! request head, the responses written by hand, and a client's body on its way upstream.

pub(crate) mod body;
pub(crate) mod fast_head;
pub(crate) mod respond;
