//! The command line as docker users type it, rewritten into the spelling argh reads:
//! combined short switches (`-it`, `-dit`), a short option's value attached (`-eA=1`),
//! `--flag=value`, docker's names for our flags (`--name`, `--network`), `-h`. Flags
//! that cannot work rootless are refused with why and what to do; an unknown flag is
//! refused with the nearest known one. The command and everything after it are left
//! exactly as given (non-UTF-8 bytes included).

use std::ffi::OsString;

/// Switches (no value), as argh spells them.
const SWITCHES: [&str; 24] = [
    "-D",
    "--debug",
    "--version",
    "-i",
    "--interactive",
    "--read-only",
    "--read-write",
    "-d",
    "--detach",
    "-t",
    "--tty",
    "--no-init",
    "--init",
    "--rm",
    "--fake-root",
    "--no-fake-root",
    "--check",
    "--cache-list",
    "--privileged",
    "--env-host",
    "--no-share",
    "--writable-tmpfs",
    "--help",
    "-h",
];

/// Options that take a value (the next argument), as argh spells them.
pub const WITH_VALUE: [&str; 38] = [
    "-e",
    "--env",
    "--env-file",
    "-w",
    "--workdir",
    "--entrypoint",
    "--hostname",
    "--log",
    "--pid-file",
    "--id",
    "--root",
    "--hook",
    "--console",
    "-v",
    "--volume",
    "--mount",
    "--tmpfs",
    "--net",
    "--overlay",
    "--tmpfs-size",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "-u",
    "--user",
    "--userns",
    "--cache-rm",
    "--cache-prune",
    "--ulimit",
    "--shm-size",
    "--add-host",
    "--dns",
    "--device",
    "--group-add",
    "--stop-timeout",
    "--name",
    "--exec",
    "--share",
];

/// docker's names for flags of ours.
const ALIASES: [(&str, &str); 2] = [("--name", "--id"), ("--network", "--net")];

/// docker flags that cannot work here, and what to do instead.
const REFUSED: [(&str, &str); 13] = [
    ("-p", PUBLISH),
    ("--publish", PUBLISH),
    ("-P", PUBLISH),
    ("--publish-all", PUBLISH),
    ("--expose", PUBLISH),
    ("-m", LIMITS),
    ("--memory", LIMITS),
    ("--cpus", LIMITS),
    ("--cpu-shares", LIMITS),
    ("--pids-limit", LIMITS),
    ("--restart", "binctr has no daemon to restart a container: run it from a systemd user unit (README) or a loop"),
    ("--pull", "the image is inside this file: there is nothing to pull"),
    ("--platform", "the image is inside this file, packed for one platform: pack another with binctr-pack --platform"),
];

const PUBLISH: &str = "the container shares the host's network, so a port it listens on is already the host's port: drop the flag (and use --net none for no network)";
const LIMITS: &str = "resource limits need a delegated cgroup, which binctr does not use: run it under `systemd-run --user --scope -p MemoryMax=...` or use --ulimit";

/// The flags part of `args` (argv[0] first) rewritten for argh, then the command as
/// given; or the one-line usage error.
pub fn normalize(args: &[OsString]) -> Result<Vec<OsString>, String> {
    let mut out: Vec<OsString> = args.iter().take(1).cloned().collect();
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        let Some(text) = arg.to_str() else {
            return Err(format!(
                "flags and their values must be UTF-8 text, not '{}' (put such bytes in the command, which passes through untouched)",
                crate::log::printable(arg.as_encoded_bytes())
            ));
        };
        if text == "--" || text == "-" || !text.starts_with('-') {
            break;
        }
        i += 1;
        let words = rewrite(text)?;
        // `--cache-prune [DAYS]`: 30 days unless a number follows.
        if words.len() == 1 && words[0] == "--cache-prune" {
            let days = args
                .get(i)
                .and_then(|a| a.to_str())
                .filter(|v| !v.is_empty() && v.len() < 6 && v.bytes().all(|b| b.is_ascii_digit()));
            i += usize::from(days.is_some());
            out.extend(["--cache-prune", days.unwrap_or("30")].map(OsString::from));
            continue;
        }
        let takes_value = words.len() == 1 && WITH_VALUE.contains(&words[0].as_str());
        out.extend(words.into_iter().map(OsString::from));
        if takes_value {
            let value = args.get(i).ok_or_else(|| format!("{text} needs a value"))?;
            if value.to_str().is_none() {
                return Err(format!(
                    "the value of {text} must be UTF-8 text, not '{}'",
                    crate::log::printable(value.as_encoded_bytes())
                ));
            }
            out.push(value.clone());
            i += 1;
        }
    }
    out.extend(args.iter().skip(i).cloned());
    Ok(out)
}

/// One flag argument as argh's words: `--x=v` -> `--x v`, `-it` -> `-i -t`,
/// `-eA=1` -> `-e A=1`, aliases resolved.
fn rewrite(text: &str) -> Result<Vec<String>, String> {
    if let Some((flag, value)) = text.split_once('=').filter(|_| text.starts_with("--")) {
        let flag = check(flag)?;
        if SWITCHES.contains(&flag.as_str()) {
            // docker's `--rm=true`, `--tty=false`
            return match value {
                "true" => Ok(vec![flag]),
                "false" => Ok(Vec::new()),
                _ => Err(format!("{flag} takes no value (or true, false)")),
            };
        }
        if !WITH_VALUE.contains(&flag.as_str()) {
            return Err(format!("{flag} takes no value"));
        }
        return Ok(vec![flag, value.to_string()]);
    }
    if text.starts_with("--") || text.len() == 2 {
        return check(text).map(|f| vec![f]);
    }
    // `-it`, `-dit`, `-eA=1`: short flags run together.
    let mut words = Vec::new();
    for (at, c) in text.char_indices().skip(1) {
        let flag = format!("-{c}");
        if WITH_VALUE.contains(&flag.as_str()) {
            words.push(check(&flag)?);
            let rest = &text[at + c.len_utf8()..];
            if !rest.is_empty() {
                words.push(rest.to_string());
            }
            return Ok(words);
        }
        if !SWITCHES.contains(&flag.as_str()) {
            return Err(unknown(text));
        }
        words.push(check(&flag)?);
    }
    Ok(words)
}

/// A known flag in argh's spelling, or why not.
fn check(flag: &str) -> Result<String, String> {
    if let Some((_, why)) = REFUSED.iter().find(|(f, _)| *f == flag) {
        return Err(format!("{flag} is not available: {why}"));
    }
    if flag == "-h" {
        return Ok("--help".into());
    }
    if SWITCHES.contains(&flag)
        || WITH_VALUE.contains(&flag)
        || ALIASES.iter().any(|(a, _)| *a == flag)
    {
        return Ok(alias(flag));
    }
    Err(unknown(flag))
}

fn alias(flag: &str) -> String {
    ALIASES
        .iter()
        .find(|(a, _)| *a == flag)
        .map_or(flag, |(_, ours)| ours)
        .to_string()
}

/// "unknown flag: --netwrk (did you mean --network?)".
fn unknown(flag: &str) -> String {
    let name = flag.split('=').next().unwrap_or(flag);
    let known = SWITCHES
        .iter()
        .chain(&WITH_VALUE)
        .chain(ALIASES.iter().map(|(a, _)| a))
        .filter(|k| k.starts_with("--") && !k.contains('='));
    let nearest = known
        .map(|k| (distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    match nearest {
        Some((_, k)) => format!(
            "unknown flag: {} (did you mean {k}?)",
            crate::log::printable(name.as_bytes())
        ),
        None => format!("unknown flag: {}", crate::log::printable(name.as_bytes())),
    }
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Result<Vec<String>, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        normalize(&args).map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn docker_spellings_become_argh_spellings() {
        assert_eq!(
            norm(&["x", "-it", "--rm", "sh"]).unwrap(),
            ["x", "-i", "-t", "--rm", "sh"]
        );
        assert_eq!(
            norm(&["x", "-dit", "sh"]).unwrap(),
            ["x", "-d", "-i", "-t", "sh"]
        );
        assert_eq!(
            norm(&[
                "x",
                "-eA=1",
                "--userns=keep-id",
                "--name",
                "web",
                "--network=none"
            ])
            .unwrap(),
            ["x", "-e", "A=1", "--userns", "keep-id", "--id", "web", "--net", "none"]
        );
        assert_eq!(
            norm(&["x", "-v", "/a:/b", "-h", "ls", "-it"]).unwrap(),
            ["x", "-v", "/a:/b", "--help", "ls", "-it"]
        );
        assert_eq!(norm(&["x", "--", "-it"]).unwrap(), ["x", "--", "-it"]);
    }

    #[test]
    fn refused_and_unknown_flags_say_why() {
        let err = norm(&["x", "-p", "8080:80", "nginx"]).unwrap_err();
        assert!(err.contains("host's port"), "{err}");
        let err = norm(&["x", "--netwrk", "none"]).unwrap_err();
        assert_eq!(err, "unknown flag: --netwrk (did you mean --network?)");
        let err = norm(&["x", "-itz"]).unwrap_err();
        assert!(err.starts_with("unknown flag: -itz"), "{err}");
        assert!(norm(&["x", "--rm=maybe"]).is_err());
        assert!(norm(&["x", "-e"]).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn every_option_with_a_value_parses_with_one() {
        for flag in WITH_VALUE {
            // `--cache-prune [DAYS]` takes a number only.
            let value = if flag == "--cache-prune" { "7" } else { "v" };
            let args = norm(&["x", flag, value, "true"]).unwrap();
            assert_eq!(args.len(), 4, "{flag}");
        }
    }
}
