//! An error and its causes on one line, for log lines and messages: a client error's own
//! text is often only "client error (Connect)", the useful part ("Connection refused") is
//! in its chain.

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
