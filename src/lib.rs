//! meshctl as a library: everything but argument parsing lives here so tests can drive it.
//!
//! Layers, top down: [`cli`] (arguments) → [`app`] (one function per subcommand) →
//! [`phases`] (the steps of each walkthrough phase, built on [`aws`], [`kube`] and the
//! [`mesh`] provider seam) → [`engine`] (the generic step graph) → [`render`] (what the user
//! sees). The engine knows nothing about AWS or Kubernetes; phases know nothing about rendering.

pub mod app;
pub mod aws;
pub mod cli;
pub mod config;
pub mod context;
pub mod engine;
pub mod helm;
pub mod kube;
pub mod mesh;
pub mod phases;
pub mod render;
pub mod spire;
pub mod verify;
