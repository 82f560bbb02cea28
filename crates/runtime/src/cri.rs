//! The CRI v1 gRPC services: thin translations between protobuf messages and
//! [`Runtime`] / [`ImageStore`](crate::images::ImageStore) calls. RPCs not
//! listed here answer `UNIMPLEMENTED` (tonic's default stubs).

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::images::registries::RegistriesConfig;
use crate::images::ImageRecord;
use crate::proto::{
    self, image_service_server::ImageService, runtime_service_server::RuntimeService,
};
use crate::runtime::stats::Usage;
use crate::runtime::{
    container::exit_reason, ContainerRecord, ContainerState, Runtime, SandboxRecord,
};

pub const RUNTIME_NAME: &str = "skiff";
pub const CRI_VERSION: &str = "v1";

fn u64_value(value: u64) -> Option<proto::UInt64Value> {
    Some(proto::UInt64Value { value })
}

fn cpu_usage(u: &Usage) -> proto::CpuUsage {
    proto::CpuUsage {
        timestamp: u.timestamp,
        usage_core_nano_seconds: u64_value(u.cpu_core_nanoseconds),
        usage_nano_cores: u.cpu_nano_cores.and_then(u64_value),
    }
}

fn memory_usage(u: &Usage) -> proto::MemoryUsage {
    proto::MemoryUsage {
        timestamp: u.timestamp,
        working_set_bytes: u64_value(u.memory_working_set_bytes),
        available_bytes: None,
        usage_bytes: u64_value(u.memory_usage_bytes),
        rss_bytes: u64_value(u.memory_rss_bytes),
        page_faults: u64_value(u.page_faults),
        major_page_faults: u64_value(u.major_page_faults),
    }
}

impl Cri {
    /// Containers whose id and sandbox id start with the given ones (empty matches all)
    /// and whose labels carry `labels`: CRI's filters.
    async fn containers_matching(
        &self,
        id: &str,
        sandbox_id: &str,
        labels: &HashMap<String, String>,
    ) -> Vec<ContainerRecord> {
        let mut containers = self.runtime.containers().await;
        containers.retain(|r| {
            r.id.starts_with(id)
                && r.sandbox_id.starts_with(sandbox_id)
                && labels_match(labels, &r.labels)
        });
        containers
    }

    /// A container's stats; `None` once its cgroup is gone (it exited and was cleaned up).
    fn container_stats(&self, r: &ContainerRecord) -> Option<proto::ContainerStats> {
        let (usage, (bytes, inodes)) = self.runtime.container_usage(&r.cgroups_path, &r.id)?;
        Some(proto::ContainerStats {
            attributes: Some(proto::ContainerAttributes {
                id: r.id.clone(),
                metadata: Some(container_meta(r)),
                labels: r.labels.clone(),
                annotations: r.annotations.clone(),
            }),
            cpu: Some(cpu_usage(&usage)),
            memory: Some(memory_usage(&usage)),
            writable_layer: Some(proto::FilesystemUsage {
                timestamp: usage.timestamp,
                fs_id: Some(proto::FilesystemIdentifier {
                    mountpoint: self.runtime.config.root.display().to_string(),
                }),
                used_bytes: u64_value(bytes),
                inodes_used: u64_value(inodes),
            }),
            swap: None,
        })
    }

    fn sandbox_stats(
        &self,
        r: &SandboxRecord,
        containers: &[ContainerRecord],
    ) -> proto::PodSandboxStats {
        let usage = self.runtime.sandbox_usage(&r.cgroup_parent);
        proto::PodSandboxStats {
            attributes: Some(proto::PodSandboxAttributes {
                id: r.id.clone(),
                metadata: Some(sandbox_meta(r)),
                labels: r.labels.clone(),
                annotations: r.annotations.clone(),
            }),
            linux: Some(proto::LinuxPodSandboxStats {
                cpu: usage.as_ref().map(cpu_usage),
                memory: usage.as_ref().map(memory_usage),
                network: None,
                process: None,
                containers: containers
                    .iter()
                    .filter(|c| c.sandbox_id == r.id)
                    .filter_map(|c| self.container_stats(c))
                    .collect(),
            }),
            windows: None,
        }
    }
}

#[derive(Clone)]
pub struct Cri {
    pub runtime: Arc<Runtime>,
    pub registries: Arc<RegistriesConfig>,
    /// Where `Exec` URLs point.
    pub streaming: Arc<crate::streaming::StreamingServer>,
}

fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn sandbox_state(r: &SandboxRecord) -> proto::PodSandboxState {
    if r.ready {
        proto::PodSandboxState::SandboxReady
    } else {
        proto::PodSandboxState::SandboxNotready
    }
}

fn sandbox_meta(r: &SandboxRecord) -> proto::PodSandboxMetadata {
    proto::PodSandboxMetadata {
        name: r.name.clone(),
        uid: r.uid.clone(),
        namespace: r.namespace.clone(),
        attempt: r.attempt,
    }
}

fn container_meta(r: &ContainerRecord) -> proto::ContainerMetadata {
    proto::ContainerMetadata {
        name: r.name.clone(),
        attempt: r.attempt,
    }
}

fn image_spec(r: &ContainerRecord) -> proto::ImageSpec {
    proto::ImageSpec {
        image: r.image.clone(),
        ..Default::default()
    }
}

fn image_msg(r: &ImageRecord, uid: Option<i64>, username: String) -> proto::Image {
    proto::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid: uid.map(|value| proto::Int64Value { value }),
        username,
        spec: Some(proto::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// The image's user as the kubelet wants it: a numeric uid, or a name.
fn image_user(cri: &Cri, r: &ImageRecord) -> (Option<i64>, String) {
    let user = cri
        .runtime
        .images
        .container_defaults(r)
        .ok()
        .and_then(|d| d.user)
        .unwrap_or_default();
    let name = user.split(':').next().unwrap_or("").to_string();
    if name.is_empty() {
        return (Some(0), String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name),
    }
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        _req: Request<proto::VersionRequest>,
    ) -> Result<Response<proto::VersionResponse>, Status> {
        Ok(Response::new(proto::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let runc_ok = self.runtime.config.runc.exists();
        let conditions = vec![
            proto::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: runc_ok,
                reason: if runc_ok {
                    String::new()
                } else {
                    "RuncMissing".into()
                },
                message: if runc_ok {
                    String::new()
                } else {
                    format!("{} not found", self.runtime.config.runc.display())
                },
            },
            // With CNI disabled, pods get loopback only, by choice: ready.
            match self.runtime.cni.as_ref().and_then(|n| n.not_ready()) {
                Some(message) => proto::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message,
                },
                None => proto::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
            },
        ];
        let mut info = HashMap::new();
        if req.get_ref().verbose {
            info.insert(
                "config".into(),
                format!(
                    "{{\"root\":{:?},\"runc\":{:?}}}",
                    self.runtime.config.root.display().to_string(),
                    self.runtime.config.runc.display().to_string()
                ),
            );
        }
        Ok(Response::new(proto::StatusResponse {
            status: Some(proto::RuntimeStatus { conditions }),
            info,
            ..Default::default()
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<proto::RuntimeConfigRequest>,
    ) -> Result<Response<proto::RuntimeConfigResponse>, Status> {
        Ok(Response::new(proto::RuntimeConfigResponse {
            linux: Some(proto::LinuxRuntimeConfiguration {
                cgroup_driver: proto::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<proto::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<proto::UpdateRuntimeConfigResponse>, Status> {
        // The kubelet sends its Node's spec.podCIDR (comma-separated when dual-stack):
        // the IPv4 range becomes the default network's subnet.
        let cidrs = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let ipv4 = cidrs
            .split(',')
            .map(str::trim)
            .find(|c| !c.is_empty() && !c.contains(':'));
        if let (Some(network), Some(cidr)) = (self.runtime.cni.as_ref(), ipv4) {
            let change = network.set_pod_cidr(cidr)?;
            if change == crate::network::PodCidrChange::NotOurs {
                tracing::info!(pod_cidr = cidr, "the CNI network in use is not Skiff's default one: its IPAM keeps its own range");
            }
        }
        Ok(Response::new(proto::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<proto::RunPodSandboxRequest>,
    ) -> Result<Response<proto::RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("sandbox config is required"))?;
        let id = self
            .runtime
            .run_pod_sandbox(config, req.runtime_handler)
            .await?;
        Ok(Response::new(proto::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<proto::StopPodSandboxRequest>,
    ) -> Result<Response<proto::StopPodSandboxResponse>, Status> {
        self.runtime
            .stop_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(proto::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<proto::RemovePodSandboxRequest>,
    ) -> Result<Response<proto::RemovePodSandboxResponse>, Status> {
        self.runtime
            .remove_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(proto::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<proto::PodSandboxStatusRequest>,
    ) -> Result<Response<proto::PodSandboxStatusResponse>, Status> {
        let r = self
            .runtime
            .sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        let ns = |host: bool| {
            if host {
                proto::NamespaceMode::Node as i32
            } else {
                proto::NamespaceMode::Pod as i32
            }
        };
        let status = proto::PodSandboxStatus {
            id: r.id.clone(),
            metadata: Some(sandbox_meta(&r)),
            state: sandbox_state(&r) as i32,
            created_at: r.created_at,
            network: Some(proto::PodSandboxNetworkStatus {
                ip: r.ip.clone(),
                additional_ips: vec![],
            }),
            linux: Some(proto::LinuxPodSandboxStatus {
                namespaces: Some(proto::Namespace {
                    options: Some(proto::NamespaceOption {
                        network: ns(r.host_network),
                        pid: if r.host_pid {
                            proto::NamespaceMode::Node as i32
                        } else {
                            proto::NamespaceMode::Container as i32
                        },
                        ipc: ns(r.host_ipc),
                        ..Default::default()
                    }),
                }),
            }),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
            runtime_handler: r.runtime_handler.clone(),
        };
        Ok(Response::new(proto::PodSandboxStatusResponse {
            status: Some(status),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<proto::ListPodSandboxRequest>,
    ) -> Result<Response<proto::ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let items = self
            .runtime
            .sandboxes()
            .await
            .into_iter()
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .filter(|r| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| s.state == sandbox_state(r) as i32)
            })
            .filter(|r| labels_match(&filter.label_selector, &r.labels))
            .map(|r| proto::PodSandbox {
                id: r.id.clone(),
                metadata: Some(sandbox_meta(&r)),
                state: sandbox_state(&r) as i32,
                created_at: r.created_at,
                labels: r.labels.clone(),
                annotations: r.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .collect();
        Ok(Response::new(proto::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<proto::CreateContainerRequest>,
    ) -> Result<Response<proto::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("container config is required"))?;
        let id = self
            .runtime
            .create_container(&req.pod_sandbox_id, config)
            .await?;
        Ok(Response::new(proto::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<proto::StartContainerRequest>,
    ) -> Result<Response<proto::StartContainerResponse>, Status> {
        self.runtime
            .start_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<proto::StopContainerRequest>,
    ) -> Result<Response<proto::StopContainerResponse>, Status> {
        let req = req.into_inner();
        self.runtime
            .stop_container(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(proto::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<proto::RemoveContainerRequest>,
    ) -> Result<Response<proto::RemoveContainerResponse>, Status> {
        self.runtime
            .remove_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<proto::ListContainersRequest>,
    ) -> Result<Response<proto::ListContainersResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let containers = self
            .containers_matching(&filter.id, &filter.pod_sandbox_id, &filter.label_selector)
            .await
            .into_iter()
            .filter_map(|r| {
                let state = self.runtime.container_state(&r.id).cri() as i32;
                if filter.state.as_ref().is_some_and(|s| s.state != state) {
                    return None;
                }
                Some(proto::Container {
                    id: r.id.clone(),
                    pod_sandbox_id: r.sandbox_id.clone(),
                    metadata: Some(container_meta(&r)),
                    image: Some(image_spec(&r)),
                    image_ref: r.image_ref.clone(),
                    state,
                    created_at: r.created_at,
                    labels: r.labels.clone(),
                    annotations: r.annotations.clone(),
                    image_id: r.image_id.clone(),
                })
            })
            .collect();
        Ok(Response::new(proto::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<proto::ContainerStatusRequest>,
    ) -> Result<Response<proto::ContainerStatusResponse>, Status> {
        let r = self
            .runtime
            .container(&req.into_inner().container_id)
            .await?;
        let state = self.runtime.container_state(&r.id);
        let (started_at, finished_at, exit_code, reason) = match &state {
            ContainerState::Created => (0, 0, 0, String::new()),
            ContainerState::Running { started_at } => (*started_at, 0, 0, String::new()),
            ContainerState::Exited { started_at, exit } => (
                *started_at,
                exit.finished_at,
                exit.exit_code,
                exit_reason(exit).to_string(),
            ),
        };
        let status = proto::ContainerStatus {
            id: r.id.clone(),
            metadata: Some(container_meta(&r)),
            state: state.cri() as i32,
            created_at: r.created_at,
            started_at,
            finished_at,
            exit_code,
            image: Some(image_spec(&r)),
            image_ref: r.image_ref.clone(),
            reason,
            message: String::new(),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
            mounts: r
                .mounts
                .iter()
                .map(|m| proto::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    propagation: m.propagation,
                    image: m.image.as_ref().map(|v| proto::ImageSpec {
                        image: v.image.clone(),
                        ..Default::default()
                    }),
                    image_sub_path: m
                        .image
                        .as_ref()
                        .map(|v| v.sub_path.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
            log_path: r.log_path.clone(),
            image_id: r.image_id.clone(),
            // What the cgroup enforces now, so a kubelet sees a resize take effect.
            resources: matches!(state, ContainerState::Running { .. })
                .then(|| crate::runtime::stats::cgroup_limits(&r.cgroups_path))
                .flatten()
                .map(|linux| proto::ContainerResources {
                    linux: Some(linux),
                    ..Default::default()
                }),
            ..Default::default()
        };
        Ok(Response::new(proto::ContainerStatusResponse {
            status: Some(status),
            ..Default::default()
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<proto::UpdateContainerResourcesRequest>,
    ) -> Result<Response<proto::UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        let res = req.linux.unwrap_or_default();
        self.runtime
            .update_container_resources(&req.container_id, &res)
            .await?;
        Ok(Response::new(proto::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<proto::ReopenContainerLogRequest>,
    ) -> Result<Response<proto::ReopenContainerLogResponse>, Status> {
        self.runtime
            .reopen_container_log(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::ReopenContainerLogResponse {}))
    }

    async fn exec(
        &self,
        req: Request<proto::ExecRequest>,
    ) -> Result<Response<proto::ExecResponse>, Status> {
        let req = req.into_inner();
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout, or stderr must be set",
            ));
        }
        // Fail now, not on connect, for a container that is gone or not running.
        let prepared = self
            .runtime
            .prepare_exec(&req.container_id, req.cmd.clone(), req.tty)
            .await?;
        self.runtime.finish_exec(&prepared);
        let url = self.streaming.prepare_exec(
            prepared.container_id,
            req.cmd,
            (req.stdin, req.stdout, req.stderr),
            req.tty,
        );
        Ok(Response::new(proto::ExecResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<proto::ContainerStatsRequest>,
    ) -> Result<Response<proto::ContainerStatsResponse>, Status> {
        let container = self
            .runtime
            .container(&req.into_inner().container_id)
            .await?;
        let stats = self.container_stats(&container).ok_or_else(|| {
            Status::not_found(format!(
                "no stats for container {}: its cgroup is gone",
                container.id
            ))
        })?;
        Ok(Response::new(proto::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<proto::ListContainerStatsRequest>,
    ) -> Result<Response<proto::ListContainerStatsResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let stats = self
            .containers_matching(&filter.id, &filter.pod_sandbox_id, &filter.label_selector)
            .await
            .into_iter()
            .filter(|r| {
                matches!(
                    self.runtime.container_state(&r.id),
                    ContainerState::Running { .. }
                )
            })
            .filter_map(|r| self.container_stats(&r))
            .collect();
        Ok(Response::new(proto::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<proto::PodSandboxStatsRequest>,
    ) -> Result<Response<proto::PodSandboxStatsResponse>, Status> {
        let sandbox = self
            .runtime
            .sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        let containers = self.runtime.containers().await;
        Ok(Response::new(proto::PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats(&sandbox, &containers)),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<proto::ListPodSandboxStatsRequest>,
    ) -> Result<Response<proto::ListPodSandboxStatsResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let containers = self.runtime.containers().await;
        let stats = self
            .runtime
            .sandboxes()
            .await
            .into_iter()
            .filter(|r| r.ready)
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .filter(|r| labels_match(&filter.label_selector, &r.labels))
            .map(|r| self.sandbox_stats(&r, &containers))
            .collect();
        Ok(Response::new(proto::ListPodSandboxStatsResponse { stats }))
    }

    async fn attach(
        &self,
        req: Request<proto::AttachRequest>,
    ) -> Result<Response<proto::AttachResponse>, Status> {
        let req = req.into_inner();
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout, or stderr must be set",
            ));
        }
        // Fail now, not on connect, for a container that is gone or not running.
        let container_id = self.runtime.attachable(&req.container_id).await?;
        let url = self
            .streaming
            .prepare_attach(crate::streaming::PendingAttach {
                container_id,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            });
        Ok(Response::new(proto::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<proto::PortForwardRequest>,
    ) -> Result<Response<proto::PortForwardResponse>, Status> {
        let req = req.into_inner();
        // Fail now, not on connect, for a sandbox that is gone. The ports come with
        // each stream, as upstream's server reads them.
        let sandbox = self.runtime.sandbox(&req.pod_sandbox_id).await?;
        if !sandbox.ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let url = self.streaming.prepare_port_forward(sandbox.id);
        Ok(Response::new(proto::PortForwardResponse { url }))
    }

    async fn exec_sync(
        &self,
        req: Request<proto::ExecSyncRequest>,
    ) -> Result<Response<proto::ExecSyncResponse>, Status> {
        let req = req.into_inner();
        let out = self
            .runtime
            .exec_sync(&req.container_id, req.cmd, req.timeout)
            .await?;
        if out.timed_out {
            return Err(Error::Timeout(format!(
                "command timed out after {}s in container {}",
                req.timeout, req.container_id
            ))
            .into());
        }
        Ok(Response::new(proto::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let wanted = filter
            .as_deref()
            .and_then(|f| self.runtime.images.resolve(f));
        let images = self
            .runtime
            .images
            .list()
            .into_iter()
            .filter(|r| filter.is_none() || wanted.as_ref().is_some_and(|w| w.id == r.id))
            .map(|r| {
                let (uid, name) = image_user(self, &r);
                image_msg(&r, uid, name)
            })
            .collect();
        Ok(Response::new(proto::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<proto::ImageStatusRequest>,
    ) -> Result<Response<proto::ImageStatusResponse>, Status> {
        let name = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        // An unknown image is not an error: the kubelet checks before pulling.
        let image = self.runtime.images.resolve(&name).map(|r| {
            let (uid, n) = image_user(self, &r);
            image_msg(&r, uid, n)
        });
        Ok(Response::new(proto::ImageStatusResponse {
            image,
            info: HashMap::new(),
        }))
    }

    async fn pull_image(
        &self,
        req: Request<proto::PullImageRequest>,
    ) -> Result<Response<proto::PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = req.image.map(|i| i.image).unwrap_or_default();
        let auth = req
            .auth
            .map(crate::images::pull::PullAuth::from_cri)
            .transpose()?
            .unwrap_or_default();
        let rec =
            crate::images::pull::pull(self.runtime.images.clone(), &self.registries, &name, &auth)
                .await?;
        Ok(Response::new(proto::PullImageResponse {
            image_ref: rec.id,
        }))
    }

    async fn remove_image(
        &self,
        req: Request<proto::RemoveImageRequest>,
    ) -> Result<Response<proto::RemoveImageResponse>, Status> {
        let name = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        let in_use = self.runtime.layers_in_use().await;
        let images = self.runtime.images.clone();
        tokio::task::spawn_blocking(move || images.remove(&name, &in_use))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(proto::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<proto::ImageFsInfoRequest>,
    ) -> Result<Response<proto::ImageFsInfoResponse>, Status> {
        let images = self.runtime.images.clone();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || images.usage())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let usage = proto::FilesystemUsage {
            timestamp: crate::shim::now_nanos(),
            fs_id: Some(proto::FilesystemIdentifier {
                mountpoint: self.runtime.images.root().display().to_string(),
            }),
            used_bytes: Some(proto::UInt64Value { value: bytes }),
            inodes_used: Some(proto::UInt64Value { value: inodes }),
        };
        Ok(Response::new(proto::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}
