//! Container lifecycle hooks as kubelet runs them: `postStart` right after a container starts (a
//! failure kills the container, which the restart policy then handles), `preStop` before the stop
//! signal, inside the termination grace period. A handler is `exec` (a command in the container),
//! `httpGet` (2xx and 3xx succeed) or `sleep`; `tcpSocket` is refused as Kubernetes' validation
//! refuses it.
//!
//! The `preStop` sleep is what makes a rolling update lossless: the pod keeps serving while every node
//! takes it out of its Services, and only then gets its stop signal.

use std::time::Duration;

use berth_runtime::container::{Engine, Instance};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use super::probes::{exec_action, http_get_action};

/// Which hook, named as kubelet's Events name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PostStart,
    PreStop,
}

impl Hook {
    /// The handler of this hook in the container, if it has one.
    pub fn handler(self, c: &Container) -> Option<&LifecycleHandler> {
        let lifecycle = c.lifecycle.as_ref()?;
        match self {
            Hook::PostStart => lifecycle.post_start.as_ref(),
            Hook::PreStop => lifecycle.pre_stop.as_ref(),
        }
    }

    /// The reason of the Warning Event when the hook fails.
    pub fn failed_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }
}

/// Runs a handler to its end or until `limit` passes; the error says what failed, as kubelet's
/// Event message does.
pub async fn run(
    handler: &LifecycleHandler,
    pod_ip: &str,
    c: &Container,
    engine: &Engine,
    instance: &Instance,
    limit: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        return exec_action(exec, engine, instance, limit).await;
    }
    if let Some(http) = &handler.http_get {
        return http_get_action(http, pod_ip, c, limit).await;
    }
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(sleep.seconds.max(0) as u64);
        tokio::time::sleep(wanted.min(limit)).await;
        return Ok(());
    }
    if handler.tcp_socket.is_some() {
        return Err("tcpSocket is not supported as a lifecycle handler".into());
    }
    Err("the hook has no handler".into())
}

/// The signal that stops the container: `lifecycle.stopSignal`, else the image's `StopSignal`, else
/// SIGTERM. Unknown names fall back to SIGTERM (the API refuses them already).
pub fn stop_signal(c: &Container, image_stop_signal: Option<&str>) -> i32 {
    c.lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.as_deref())
        .or(image_stop_signal)
        .and_then(signal_number)
        .unwrap_or(libc::SIGTERM)
}

/// `SIGTERM`, `TERM` or `15` to the signal number.
fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    Some(match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Lifecycle;

    use super::*;

    #[test]
    fn stop_signal_prefers_the_pod_then_the_image() {
        let mut c = Container::default();
        assert_eq!(stop_signal(&c, None), libc::SIGTERM);
        assert_eq!(stop_signal(&c, Some("SIGQUIT")), libc::SIGQUIT);
        assert_eq!(stop_signal(&c, Some("9")), libc::SIGKILL);
        assert_eq!(stop_signal(&c, Some("bogus")), libc::SIGTERM);
        c.lifecycle = Some(Lifecycle {
            stop_signal: Some("SIGUSR1".into()),
            ..Default::default()
        });
        assert_eq!(stop_signal(&c, Some("SIGQUIT")), libc::SIGUSR1);
    }
}
