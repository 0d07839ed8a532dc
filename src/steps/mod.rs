//! Step kinds more than one phase or provider uses: each is a [`Step`](crate::engine::Step)
//! over the libraries (`aws`, `kube`, `helm`), configured by the phase that adds it to the
//! graph.

pub mod accept_share;
pub mod irsa;
