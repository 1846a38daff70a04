//! Containers by id: which runtime runs them, and the pid whose network
//! namespace is theirs (`attach eth0 --hook tc-ingress --container ID`).
//!
//! Input: a container id and a runtime (or auto-detection); output: a
//! `Netns::Pid`. The runtimes are asked through their command-line tools
//! (`docker inspect`, `ctr task ls`, `crictl inspect`), found on PATH.

use std::process::Command;

use crate::link::Netns;
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
}

impl Runtime {
    pub fn parse(text: &str) -> Result<Option<Runtime>, String> {
        match text {
            "auto" => Ok(None),
            "docker" => Ok(Some(Runtime::Docker)),
            "containerd" => Ok(Some(Runtime::Containerd)),
            "crio" | "cri-o" => Ok(Some(Runtime::Crio)),
            _ => Err(format!(
                "unknown container runtime `{text}`; expected auto, docker, containerd or cri-o"
            )),
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "ctr",
            Runtime::Crio => "crictl",
        }
    }

    fn socket(self) -> &'static str {
        match self {
            Runtime::Docker => "/var/run/docker.sock",
            Runtime::Containerd => "/run/containerd/containerd.sock",
            Runtime::Crio => "/var/run/crio/crio.sock",
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The runtime of this node: the first whose socket exists, else the first
/// whose tool is on PATH (docker, containerd, cri-o).
pub fn detect() -> Option<Runtime> {
    let all = [Runtime::Docker, Runtime::Containerd, Runtime::Crio];
    all.into_iter()
        .find(|r| std::path::Path::new(r.socket()).exists())
        .or_else(|| all.into_iter().find(|r| on_path(r.tool())))
}

fn run(tool: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        Error::Kernel(format!(
            "cannot run `{tool}`: {e}; is the runtime's tool installed?"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Kernel(format!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The network namespace of a running container.
pub fn netns(id: &str, runtime: Option<Runtime>) -> Result<Netns, Error> {
    let rt = runtime.or_else(detect).ok_or_else(|| {
        Error::Kernel(
            "no container runtime found (docker, containerd or cri-o socket or tool); \
             say which with --container-runtime, or give --netns pid:N"
                .into(),
        )
    })?;
    let pid = match rt {
        Runtime::Docker => run("docker", &["inspect", "--format", "{{.State.Pid}}", id])?
            .trim()
            .parse::<u32>()
            .ok(),
        Runtime::Containerd => run("ctr", &["--namespace", "k8s.io", "task", "ls"])?
            .lines()
            .skip(1)
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next()?.parse::<u32>().ok())?
            }),
        Runtime::Crio => {
            let text = run("crictl", &["inspect", "--output", "json", id])?;
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["info"]["pid"].as_u64())
                .map(|p| p as u32)
        }
    };
    match pid {
        Some(p) if p > 0 => Ok(Netns::Pid(p)),
        _ => Err(Error::Kernel(format!(
            "container `{id}` is not running under {} (no pid)",
            rt.tool()
        ))),
    }
}
