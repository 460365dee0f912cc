//! `--hook STAGE:CMD ARG...`, split as a shell would split it (quotes, no expansions).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    Poststart,
    Poststop,
}

#[derive(Debug)]
pub struct Hook {
    pub stage: Stage,
    pub argv: Vec<String>,
}

/// 'STAGE:CMD ARG...', words split as a shell would (quotes, no expansions).
pub fn parse_hook(spec: &str) -> Result<Hook> {
    let bad = |why: &str| {
        Error::new(format!("--hook '{spec}': {why} (expected 'STAGE:CMD ARG...', STAGE prestart, poststart or poststop)"))
    };
    let (stage, command) = spec.split_once(':').ok_or_else(|| bad("no stage"))?;
    let stage = match stage {
        "prestart" => Stage::Prestart,
        "poststart" => Stage::Poststart,
        "poststop" => Stage::Poststop,
        _ => return Err(bad("unknown stage")),
    };
    let argv = split_words(command).ok_or_else(|| bad("unbalanced quotes"))?;
    if argv.is_empty() {
        return Err(bad("no command"));
    }
    Ok(Hook { stage, argv })
}

fn split_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_words_split_like_a_shell() {
        let hook = parse_hook(r#"prestart:/bin/sh -c 'echo "$1" > x' arg\ 1"#).unwrap();
        assert_eq!(hook.stage, Stage::Prestart);
        assert_eq!(hook.argv, vec!["/bin/sh", "-c", "echo \"$1\" > x", "arg 1"]);
        assert!(parse_hook("later:/bin/true").is_err());
        assert!(parse_hook("poststop:").is_err());
        assert!(parse_hook("poststop:'open").is_err());
    }
}
