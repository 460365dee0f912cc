//! The container's environment, merged in docker's order: docker's defaults (PATH,
//! HOSTNAME, TERM from the host), the image's Env, the host's with `--env-host`,
//! `--env-file`, then `-e`. A key set
//! again replaces its entry in place (binctr_format::Env, linear in the entries).

use crate::error::{Context, Error, Result};
use binctr_format::Env;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The PATH a container gets when its image sets none (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which of the host's variables the container gets.
#[derive(Clone, Copy, Default)]
pub struct HostVars {
    /// All of them (--env-host).
    pub all: bool,
    /// A launcher's (launcher.rs): Slurm's, PMI's, the MPI libraries'.
    pub launcher: bool,
}

/// The environment before the container user is known ($HOME comes with the user).
pub fn resolve(
    hostname: &str,
    image: &[String],
    host: HostVars,
    env_files: &[String],
    flags: &[String],
) -> Result<Env> {
    let mut env = Env::new();
    env.set(b"PATH", DEFAULT_PATH.as_bytes());
    env.set(b"HOSTNAME", hostname.as_bytes());
    if let Some(term) = std::env::var_os("TERM") {
        env.set(b"TERM", term.as_bytes());
    }
    for entry in image {
        env.push_entry(entry.as_bytes());
    }
    if host.launcher {
        super::launcher::pass_env(&mut env);
    }
    // podman's --env-host: the whole host environment, over the image's.
    if host.all {
        for (key, value) in std::env::vars_os() {
            env.set(key.as_bytes(), value.as_bytes());
        }
    }
    for file in env_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --env-file {file}"))?;
        for line in text.lines() {
            let line = line.trim_start();
            if !line.is_empty() && !line.starts_with('#') {
                set_from_flag(&mut env, line)?;
            }
        }
    }
    for entry in flags {
        set_from_flag(&mut env, entry)?;
    }
    Ok(env)
}

/// `KEY=VALUE`, or `KEY` alone: the host's value, and nothing when the host has none
/// (as docker does).
fn set_from_flag(env: &mut Env, entry: &str) -> Result<()> {
    match entry.split_once('=') {
        Some(("", _)) => Err(Error::new(format!(
            "-e '{entry}': the variable has no name"
        ))),
        Some(_) => {
            env.push_entry(entry.as_bytes());
            Ok(())
        }
        None => {
            if let Some(value) = std::env::var_os(entry) {
                env.set(entry.as_bytes(), value.as_bytes());
            }
            Ok(())
        }
    }
}

/// Passes the host's value of `key` on, when the host has one.
pub fn pass_from_host(env: &mut Env, key: &str) {
    if let Some(value) = std::env::var_os(key) {
        env.set(key.as_bytes(), value.as_bytes());
    }
}

/// The entries as the command's envp.
pub fn into_os(env: Env) -> Vec<OsString> {
    env.into_entries()
        .into_iter()
        .map(OsString::from_vec)
        .collect()
}

/// The value of `key` in a final environment.
pub fn lookup<'a>(env: &'a [OsString], key: &str) -> Option<&'a OsStr> {
    env.iter().find_map(|e| {
        let rest = e.as_bytes().strip_prefix(key.as_bytes())?;
        rest.strip_prefix(b"=").map(OsStr::from_bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(env: &Env) -> Vec<String> {
        env.entries()
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect()
    }

    #[test]
    fn env_flags_take_host_values_and_refuse_empty_names() {
        let mut env = Env::new();
        env.set(b"A", b"image");
        set_from_flag(&mut env, "A=flag").unwrap();
        set_from_flag(&mut env, "BINCTR_SURELY_UNSET_VAR").unwrap();
        assert!(set_from_flag(&mut env, "=x").is_err());
        assert_eq!(entries(&env), vec!["A=flag"]);
    }

    #[test]
    fn image_env_then_flags_in_docker_order() {
        let image = vec!["PATH=/image/bin".to_string(), "X=1=2".to_string()];
        let env = resolve(
            "host",
            &image,
            HostVars::default(),
            &[],
            &["X=3".to_string()],
        )
        .unwrap();
        let env = entries(&env);
        assert_eq!(env[0], "PATH=/image/bin");
        assert_eq!(env[1], "HOSTNAME=host");
        assert!(env.contains(&"X=3".to_string()));
        let os = into_os(resolve("h", &image, HostVars::default(), &[], &[]).unwrap());
        assert_eq!(lookup(&os, "X"), Some(OsStr::new("1=2")));
        assert_eq!(lookup(&os, "PAT"), None);
    }
}
