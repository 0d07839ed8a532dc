//! meshctl as a library: everything but argument parsing lives here so tests can drive it.
//!
//! Layers, top down; a module may use the layers below it, never one above or a sibling's
//! internals:
//!
//! 1. [`cli`] (arguments, no I/O) and [`commands`] (one function per subcommand, exit codes);
//! 2. [`phases`] (the steps of each phase) and the [`mesh`] providers, which contribute steps
//!    and decorate the application; both build on [`steps`] (reusable step kinds);
//! 3. [`session`] (configuration, [`topology`], provider, clients), [`render`] (what the user
//!    sees), [`verify`] (Envoy admin checks);
//! 4. [`engine`] (the generic step graph: knows nothing of AWS or Kubernetes); [`aws`],
//!    [`kube`], [`helm`], [`spire`] (libraries over the outside world: know nothing of the
//!    engine);
//! 5. leaves every layer may use: [`config`], [`error`], [`state`], [`names`].

pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod error;
pub mod helm;
pub mod kube;
pub mod mesh;
pub mod names;
pub mod phases;
pub mod render;
pub mod session;
pub mod spire;
pub mod state;
pub mod steps;
pub mod topology;
pub mod verify;
