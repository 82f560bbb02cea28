//! The two JSON shapes netexec answers with: an object of string arrays (`/dial`) and
//! an object of strings (`/shell`), keys in order.

pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn object<'a, V>(fields: impl IntoIterator<Item = (&'a str, V)>) -> String
where
    V: Into<Value<'a>>,
{
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(key, value)| format!("{}:{}", string(key), value.into().render()))
        .collect();
    format!("{{{}}}", fields.join(","))
}

pub enum Value<'a> {
    Text(&'a str),
    List(&'a [String]),
}

impl Value<'_> {
    fn render(&self) -> String {
        match self {
            Value::Text(text) => string(text),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(|item| string(item)).collect();
                format!("[{}]", items.join(","))
            }
        }
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(text: &'a str) -> Self {
        Value::Text(text)
    }
}

impl<'a> From<&'a [String]> for Value<'a> {
    fn from(items: &'a [String]) -> Self {
        Value::List(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_lists_are_escaped() {
        let responses = vec!["pod-a".to_string(), "say \"hi\"\n".to_string()];
        assert_eq!(
            object([("responses", responses.as_slice())]),
            r#"{"responses":["pod-a","say \"hi\"\n"]}"#
        );
        assert_eq!(object([("output", "\u{1}")]), r#"{"output":"\u0001"}"#);
    }
}
