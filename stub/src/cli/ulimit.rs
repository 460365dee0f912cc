//! `--ulimit NAME=SOFT[:HARD]`, docker's names and syntax. Applied by the command's
//! process before exec; a limit can be lowered, or raised up to the hard limit the
//! user already has (raising a hard limit needs privileges no user namespace gives).

use crate::error::{Error, Result};
use nix::sys::resource::Resource;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    /// docker's name for it (`nofile`), for messages.
    pub name: &'static str,
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

const NAMES: [(&str, Resource); 15] = [
    ("as", Resource::RLIMIT_AS),
    ("core", Resource::RLIMIT_CORE),
    ("cpu", Resource::RLIMIT_CPU),
    ("data", Resource::RLIMIT_DATA),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("locks", Resource::RLIMIT_LOCKS),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE),
    ("nice", Resource::RLIMIT_NICE),
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("rss", Resource::RLIMIT_RSS),
    ("rtprio", Resource::RLIMIT_RTPRIO),
    ("sigpending", Resource::RLIMIT_SIGPENDING),
    ("stack", Resource::RLIMIT_STACK),
];

pub fn parse_ulimit(spec: &str) -> Result<Ulimit> {
    let bad = |why: &str| Error::new(format!("--ulimit {spec}: {why}"));
    let (name, values) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
    let (name, resource) = NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .ok_or_else(|| bad("unknown limit (nofile, nproc, core, stack, memlock, ...)"))?;
    let number = |v: &str| match v {
        "unlimited" | "-1" => Ok(u64::MAX),
        v => v
            .parse::<u64>()
            .map_err(|_| bad("a limit is a number or unlimited")),
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => {
            let n = number(values)?;
            (n, n)
        }
    };
    if soft > hard {
        return Err(bad("the soft limit is above the hard one"));
    }
    Ok(Ulimit {
        name,
        resource,
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_ulimit_syntax() {
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!(
            (u.resource, u.soft, u.hard),
            (Resource::RLIMIT_NOFILE, 1024, 2048)
        );
        assert_eq!(parse_ulimit("core=unlimited").unwrap().hard, u64::MAX);
        assert!(parse_ulimit("nofile=2048:1024").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        assert!(parse_ulimit("nofile").is_err());
    }
}
