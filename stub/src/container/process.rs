//! What the command's process needs to start (exec.rs): argv, environment, working
//! directory, limits, capabilities, user, seccomp. Made from the launch plan for the
//! container's command; kept as JSON in the container's state for `--exec`, which
//! starts another command the same way inside the running container.

use super::users::Identity;
use crate::cli::Ulimit;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

#[derive(Clone, Debug)]
pub struct Process {
    pub argv: Vec<OsString>,
    pub env: Vec<OsString>,
    pub working_dir: String,
    /// The root is read-only (a missing working directory is not created).
    pub read_only: bool,
    pub ulimits: Vec<Ulimit>,
    pub caps: Vec<caps::Capability>,
    pub seccomp: bool,
    pub fake_root: bool,
    /// Subordinate ids: the command switches to `identity` itself.
    pub subid: bool,
    pub identity: Identity,
    /// Descriptors 3..3+N passed on (systemd socket activation).
    pub preserve_fds: i32,
    /// Other descriptors passed on at their numbers (PMI_FD).
    pub keep_fds: Vec<i32>,
    pub debug: bool,
}

impl Process {
    /// The parts `--exec` reuses (argv, descriptors and limits are its own).
    pub fn to_json(&self) -> Value {
        // Hex: exact for any bytes, and one string an entry (30k entries stay cheap).
        let hex =
            |v: &[OsString]| -> Vec<String> { v.iter().map(|s| to_hex(s.as_bytes())).collect() };
        json!({
            "env": hex(&self.env),
            "working_dir": self.working_dir,
            "read_only": self.read_only,
            "caps": self.caps.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "seccomp": self.seccomp,
            "fake_root": self.fake_root,
            "subid": self.subid,
            "uid": self.identity.uid,
            "gid": self.identity.gid,
            "groups": self.identity.groups,
            "home": self.identity.home,
        })
    }

    pub fn from_json(text: &[u8]) -> Result<Process> {
        let bad = || Error::new("the container's saved state is damaged: stop and start it again");
        let v: Value = serde_json::from_slice(text).map_err(|_| bad())?;
        let strings = |key: &str| -> Option<Vec<OsString>> {
            v[key]
                .as_array()?
                .iter()
                .map(|e| from_hex(e.as_str()?).map(OsString::from_vec))
                .collect()
        };
        let caps = v["caps"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .filter_map(|c| c.as_str()?.parse().ok())
            .collect();
        let number = |key: &str| v[key].as_u64().and_then(|n| u32::try_from(n).ok());
        Ok(Process {
            argv: Vec::new(),
            env: strings("env").ok_or_else(bad)?,
            working_dir: v["working_dir"].as_str().ok_or_else(bad)?.to_string(),
            read_only: v["read_only"].as_bool().ok_or_else(bad)?,
            ulimits: Vec::new(),
            caps,
            seccomp: v["seccomp"].as_bool().ok_or_else(bad)?,
            fake_root: v["fake_root"].as_bool().ok_or_else(bad)?,
            subid: v["subid"].as_bool().ok_or_else(bad)?,
            identity: Identity {
                uid: number("uid").ok_or_else(bad)?,
                gid: number("gid").ok_or_else(bad)?,
                groups: v["groups"]
                    .as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .filter_map(|g| g.as_u64().and_then(|g| u32::try_from(g).ok()))
                    .collect(),
                home: v["home"].as_str().map(str::to_string),
            },
            preserve_fds: 0,
            keep_fds: Vec::new(),
            debug: false,
        })
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((digit(*hi)? << 4) | digit(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_process_round_trips() {
        let p = Process {
            argv: vec!["sh".into()],
            env: vec![OsString::from_vec(b"A=\xff".to_vec()), "PATH=/bin".into()],
            working_dir: "/srv".into(),
            read_only: true,
            ulimits: Vec::new(),
            caps: vec![caps::Capability::CAP_CHOWN, caps::Capability::CAP_KILL],
            seccomp: true,
            fake_root: false,
            subid: true,
            identity: Identity {
                uid: 33,
                gid: 33,
                groups: vec![33, 50],
                home: Some("/var/www".into()),
            },
            preserve_fds: 0,
            keep_fds: Vec::new(),
            debug: false,
        };
        let back = Process::from_json(p.to_json().to_string().as_bytes()).unwrap();
        assert_eq!(back.env, p.env);
        assert_eq!(back.caps, p.caps);
        assert_eq!(back.identity, p.identity);
        assert_eq!(
            (back.working_dir, back.read_only, back.subid),
            (p.working_dir, true, true)
        );
        assert!(Process::from_json(b"{}").is_err());
    }
}
