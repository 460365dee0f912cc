//! Flags in two stages, as ripgrep does: [`Flags`] mirrors the command line as typed
//! (argh), [`RunPlan`] is the resolved run (image config + flags, precedence applied),
//! built once and never changed after. No flag is looked at anywhere else.

mod argv;
mod caps;
pub mod env;
mod flags;
mod hooks;
pub mod launcher;
mod plan;
mod ulimit;
mod volumes;

pub use flags::{parse, Flags, Parsed};
pub use hooks::{Hook, Stage};
pub use plan::{default_state_root, Layer, RunPlan, Terminal};
pub use ulimit::Ulimit;
pub use volumes::{Tmpfs, Volume};

/// The stub's version, shown by -v and --help.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
