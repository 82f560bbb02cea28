//! The `channel.k8s.io` WebSocket subprotocols (v4 and v5): every binary message starts
//! with a stream number; v5 adds a message that closes one stream (stdin).

use serde_json::{json, Value};

/// The subprotocols a server accepts, newest first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The final status (JSON `Status`).
pub const ERROR: u8 = 3;
/// Terminal size changes (JSON `{"Width": …, "Height": …}`).
pub const RESIZE: u8 = 4;
/// v5: `[255, stream]` closes `stream` (the client's end of stdin).
pub const CLOSE: u8 = 255;

/// One message on `stream`.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(stream);
    message.extend_from_slice(data);
    message
}

/// The status message that ends a stream that went well (an attach whose container
/// exited).
pub fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// The status message that ends a command: success, or upstream's `NonZeroExitCode`
/// failure whose cause carries the exit code (kubectl exits with it).
pub fn exit_status(command: &[String], exit_code: i32) -> Value {
    if exit_code == 0 {
        return success();
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {exit_code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
    })
}

/// A failure before or while running the command (not its exit code).
pub fn internal_error(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// A terminal size from a resize message.
pub fn terminal_size(data: &[u8]) -> Option<(u16, u16)> {
    let value: Value = serde_json::from_slice(data).ok()?;
    let width = u16::try_from(value.get("Width")?.as_u64()?).ok()?;
    let height = u16::try_from(value.get("Height")?.as_u64()?).ok()?;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_as_kubectl_reads_them() {
        assert_eq!(exit_status(&[], 0)["status"], "Success");
        let failed = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
    }

    #[test]
    fn frames_and_sizes() {
        assert_eq!(frame(STDOUT, b"hi"), vec![1, b'h', b'i']);
        assert_eq!(
            terminal_size(br#"{"Width":80,"Height":24}"#),
            Some((80, 24))
        );
        assert_eq!(terminal_size(b"nonsense"), None);
    }
}
