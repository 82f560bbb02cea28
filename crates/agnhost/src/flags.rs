//! Go-style flags as agnhost takes them: `--name=value`, `--name value`, and for the
//! boolean flags a bare `--name` (which, as in Go, never takes the next argument).

use std::collections::BTreeMap;

pub struct Flags(BTreeMap<String, String>);

impl Flags {
    pub fn parse(args: &[String], booleans: &[&str]) -> Result<Flags, String> {
        let mut flags = BTreeMap::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match name.split_once('=') {
                Some((name, value)) => (name, value.to_string()),
                None if booleans.contains(&name) => (name, "true".to_string()),
                None => match args.next() {
                    Some(value) => (name, value.clone()),
                    None => return Err(format!("flag needs an argument: --{name}")),
                },
            };
            flags.insert(name.to_string(), value);
        }
        Ok(Flags(flags))
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn int(&self, name: &str, default: i32) -> Result<i32, String> {
        match self.0.get(name) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|_| format!("--{name}: {value:?} is not an integer")),
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.0.get(name).map(String::as_str) {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(format!("--{name}: {other:?} is not a boolean")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Flags::parse(&args, &["udp", "tcp"]).expect("flags parse")
    }

    #[test]
    fn values_come_after_an_equals_sign_or_as_the_next_argument() {
        let flags = parse(&["--http-port=9000", "--udp-port", "-1", "--udp"]);
        assert_eq!(flags.int("http-port", 8080), Ok(9000));
        assert_eq!(flags.int("udp-port", 8081), Ok(-1));
        assert_eq!(flags.bool("udp", false), Ok(true));
        assert_eq!(flags.bool("tcp", false), Ok(false));
        assert!(flags.int("udp", 0).is_err());
        let args = ["--http-port".to_string()];
        assert!(Flags::parse(&args, &[]).is_err());
    }
}
