//! Running the system tool the agent still configures the node with (`nft`, for the masquerade rule;
//! links, addresses and routes go through [`crate::netlink`]): one place that turns a failed run into
//! an error carrying the command line and the tool's own message.

use std::process::{Command, Stdio};

use thiserror::Error;

/// A tool failed or could not be started.
#[derive(Debug, Error)]
#[error("`{command}` failed: {message}")]
pub struct CmdError {
    /// The command line.
    pub command: String,
    /// The tool's stderr, or why it could not run.
    pub message: String,
}

/// Runs `program args`, feeding `stdin` if given; returns stdout.
pub fn run_with_input(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, CmdError> {
    let err = |message: String| CmdError {
        command: format!("{program} {}", args.join(" ")),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
