//! The Baton daemon (`batond`) and CLI (`baton`) live here; the overlay node is built on top of `baton-protocol`.
