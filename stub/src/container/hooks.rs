//! `--hook STAGE:CMD ARG...`: host commands run at prestart (namespaces exist, the
//! command has not started: a hook can set up the network from the pid), poststart and
//! poststop, each with the OCI state JSON on stdin.

use crate::cli::{Hook, Stage};
use crate::error::{Context, Error, Result};
use crate::log::debug;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the hooks of `stage` in order; the first failure stops and is returned.
pub fn run(hooks: &[Hook], stage: Stage, state_json: &str) -> Result<()> {
    for hook in hooks.iter().filter(|h| h.stage == stage) {
        let name = format!("{:?}", stage).to_lowercase();
        debug!("hooks: {name} {:?}", hook.argv);
        let mut child = Command::new(&hook.argv[0])
            .args(&hook.argv[1..])
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("{name} hook {}: cannot run it", hook.argv[0]))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook may not read its stdin: a broken pipe is not its failure.
            let _ = stdin.write_all(state_json.as_bytes());
        }
        let status = child
            .wait()
            .with_context(|| format!("{name} hook {}", hook.argv[0]))?;
        if !status.success() {
            let how = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "an unknown status".into(),
            };
            return Err(Error::new(format!(
                "{name} hook {} failed with {how}",
                hook.argv[0]
            )));
        }
    }
    Ok(())
}
