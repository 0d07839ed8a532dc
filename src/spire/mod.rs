//! SPIRE, independent of the step engine: the embedded Helm charts and the values meshctl
//! gives them ([`charts`]), and registration entries managed through `spire-server entry`
//! ([`entries`]).
//!
//! The charts are embedded in the binary (`include_str!` of every chart file) and written to a
//! temporary directory at install time, so `meshctl` is one self-contained file: no chart
//! directory to ship next to it, no way for the installed chart to differ from the code that
//! computes its values, and nothing to resolve relative to wherever the binary was copied.

pub mod charts;
pub mod entries;
