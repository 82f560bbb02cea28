//! The certificate controllers: upstream's `csrapproving` and `csrsigning`.
//!
//! - [`CsrApprovingController`] approves what upstream approves by itself: kubelet client
//!   certificates (`kubernetes.io/kube-apiserver-client-kubelet`, subject
//!   `system:node:<name>` in `system:nodes`) asked for by a user a SubjectAccessReview
//!   allows `create` on `certificatesigningrequests/nodeclient` (or `selfnodeclient`, for
//!   a node renewing its own). Skiff adds one rule of the same shape for its agents: a
//!   `system:kube-proxy` client certificate (`kubernetes.io/kube-apiserver-client`) for
//!   whoever may `create` `certificatesigningrequests/kubeproxyclient`.
//! - [`CsrSigningController`] signs approved requests for the signers backed by the
//!   cluster CA (`--cluster-signing-cert-file`/`--cluster-signing-key-file`): the API
//!   server client signers and `kubernetes.io/kubelet-serving`; a request the signer may
//!   not sign gets the `Failed` condition with upstream's reason.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;

use crate::controller::{key_of, Reconcile};
use crate::error::{Error, Result};
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|list| list.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn is_decided(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Approved") || has_condition(csr, "Denied")
}

fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// The CSR's conditions with a new true one of `kind` added, stamped now.
fn with_condition(
    csr: &CertificateSigningRequest,
    kind: &str,
    reason: &str,
    message: String,
) -> Vec<CertificateSigningRequestCondition> {
    let now = Time(jiff::Timestamp::now());
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.push(CertificateSigningRequestCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
    conditions
}

fn subject_of(csr: &CertificateSigningRequest) -> Option<skiff_pki::csr::Subject> {
    let pem = String::from_utf8(csr.spec.request.0.clone()).ok()?;
    skiff_pki::csr::parse(&pem).ok()
}

fn usages(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.spec.usages.clone().unwrap_or_default()
}

/// Whether every usage is one of `allowed` and `required` is among them.
fn usages_within(csr: &CertificateSigningRequest, allowed: &[&str], required: &str) -> bool {
    let usages = usages(csr);
    usages.iter().all(|u| allowed.contains(&u.as_str())) && usages.iter().any(|u| u == required)
}

/// Upstream's `ValidateKubeletClientCSR`: `system:node:<name>` in exactly `system:nodes`,
/// no alternative names, client usages only.
fn is_kubelet_client_request(
    csr: &CertificateSigningRequest,
    subject: &skiff_pki::csr::Subject,
) -> bool {
    subject.common_name.starts_with("system:node:")
        && subject.organizations == ["system:nodes"]
        && !subject.has_alternative_names
        && usages_within(
            csr,
            &["digital signature", "key encipherment", "client auth"],
            "client auth",
        )
}

/// Skiff's agents' proxy identity: `system:kube-proxy` in no group, client usages only.
fn is_kube_proxy_client_request(
    csr: &CertificateSigningRequest,
    subject: &skiff_pki::csr::Subject,
) -> bool {
    subject.common_name == "system:kube-proxy"
        && subject.organizations.is_empty()
        && !subject.has_alternative_names
        && usages_within(
            csr,
            &["digital signature", "key encipherment", "client auth"],
            "client auth",
        )
}

fn csr_store_and_queue(
    factory: &InformerFactory,
    queue_name: &'static str,
    wanted: fn(&CertificateSigningRequest) -> bool,
) -> (Store<CertificateSigningRequest>, Arc<WorkQueue>) {
    let informer = factory.informer::<CertificateSigningRequest>();
    let queue = factory.queue(queue_name);
    let handler_queue = queue.clone();
    informer.add_handler(move |_, new| {
        if let Some(csr) = new.filter(|c| wanted(c)) {
            handler_queue.add(key_of(csr));
        }
    });
    (informer.store(), queue)
}

pub struct CsrApprovingController {
    client: Client,
    csrs: Store<CertificateSigningRequest>,
    queue: Arc<WorkQueue>,
}

impl CsrApprovingController {
    pub fn new(factory: &InformerFactory) -> Arc<Self> {
        let (csrs, queue) = csr_store_and_queue(factory, "certificate", |csr| !is_decided(csr));
        Arc::new(CsrApprovingController {
            client: factory.client_for("certificate-controller"),
            csrs,
            queue,
        })
    }

    /// Whether the requester may `create` `certificatesigningrequests/<subresource>`.
    async fn requester_may(
        &self,
        csr: &CertificateSigningRequest,
        subresource: &str,
    ) -> Result<bool> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: csr.spec.username.clone(),
                uid: csr.spec.uid.clone(),
                groups: csr.spec.groups.clone(),
                extra: csr.spec.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("certificates.k8s.io".into()),
                    resource: Some("certificatesigningrequests".into()),
                    subresource: Some(subresource.into()),
                    verb: Some("create".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }

    /// The approval rule this request meets, as (subresource checked, message).
    async fn approval(&self, csr: &CertificateSigningRequest) -> Result<Option<&'static str>> {
        let Some(subject) = subject_of(csr) else {
            return Ok(None);
        };
        let requester = csr.spec.username.as_deref().unwrap_or_default();
        match csr.spec.signer_name.as_str() {
            KUBELET_CLIENT_SIGNER if is_kubelet_client_request(csr, &subject) => {
                let renewing = requester == subject.common_name;
                if renewing && self.requester_may(csr, "selfnodeclient").await? {
                    return Ok(Some(
                        "Auto approving self kubelet client certificate after SubjectAccessReview.",
                    ));
                }
                if self.requester_may(csr, "nodeclient").await? {
                    return Ok(Some(
                        "Auto approving kubelet client certificate after SubjectAccessReview.",
                    ));
                }
                Ok(None)
            }
            CLIENT_SIGNER if is_kube_proxy_client_request(csr, &subject) => {
                Ok(self.requester_may(csr, "kubeproxyclient").await?.then_some(
                    "Auto approving kube-proxy client certificate after SubjectAccessReview.",
                ))
            }
            _ => Ok(None),
        }
    }
}

impl Reconcile for CsrApprovingController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let Some(csr) = self.csrs.get(&ObjectRef::new(key)) else {
            return Ok(None);
        };
        if is_decided(&csr) {
            return Ok(None);
        }
        let Some(message) = self.approval(&csr).await? else {
            return Ok(None);
        };
        // Updates of `approval` and `status` (upstream's role allows no patches of them),
        // guarded by the cached version.
        let mut approved = csr.as_ref().clone();
        approved
            .status
            .get_or_insert_with(Default::default)
            .conditions = Some(with_condition(
            &csr,
            "Approved",
            "AutoApproved",
            message.into(),
        ));
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        api.replace_subresource("approval", key, &PostParams::default(), &approved)
            .await?;
        tracing::info!(csr = key, "approved");
        Ok(None)
    }
}

/// Where the cluster CA the signer signs with lives, and the longest certificate it issues.
#[derive(Debug, Clone)]
pub struct SigningSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub duration: Duration,
}

pub struct CsrSigningController {
    client: Client,
    csrs: Store<CertificateSigningRequest>,
    queue: Arc<WorkQueue>,
    settings: SigningSettings,
}

impl CsrSigningController {
    pub fn new(factory: &InformerFactory, settings: SigningSettings) -> Arc<Self> {
        let (csrs, queue) = csr_store_and_queue(factory, "csrsigning", |csr| {
            has_condition(csr, "Approved") && !is_issued(csr) && !has_condition(csr, "Failed")
        });
        Arc::new(CsrSigningController {
            client: factory.client_for("certificate-controller"),
            csrs,
            queue,
            settings,
        })
    }

    /// Why this signer may not sign the request, in upstream's words; `None` if it may.
    fn refusal(&self, csr: &CertificateSigningRequest) -> Option<String> {
        let Some(subject) = subject_of(csr) else {
            return Some("the request does not parse as a certificate request".into());
        };
        match csr.spec.signer_name.as_str() {
            KUBELET_CLIENT_SIGNER if !is_kubelet_client_request(csr, &subject) => Some(
                "invalid kubelet client certificate request: subject must be system:node:<name> in system:nodes, with client usages only".into(),
            ),
            KUBELET_SERVING_SIGNER
                if !(subject.common_name.starts_with("system:node:")
                    && subject.organizations == ["system:nodes"]
                    && usages_within(
                        csr,
                        &["digital signature", "key encipherment", "server auth"],
                        "server auth",
                    )) =>
            {
                Some("invalid kubelet serving certificate request: subject must be system:node:<name> in system:nodes, with server usages only".into())
            }
            CLIENT_SIGNER
                if !usages_within(
                    csr,
                    &["digital signature", "key encipherment", "client auth"],
                    "client auth",
                ) =>
            {
                Some("invalid usage for client certificate".into())
            }
            _ => None,
        }
    }

    fn sign(&self, csr: &CertificateSigningRequest) -> Result<String> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::Other(format!("reading {}: {e}", path.display())))
        };
        let ca_cert = read(&self.settings.cert_file)?;
        let ca_key = read(&self.settings.key_file)?;
        let request = String::from_utf8(csr.spec.request.0.clone())
            .map_err(|_| Error::Other("the request is not PEM text".into()))?;
        // The shorter of what was asked for and the signer's limit.
        let asked = csr
            .spec
            .expiration_seconds
            .map(|s| Duration::from_secs(s.max(600) as u64));
        let lifetime = asked.map_or(self.settings.duration, |a| a.min(self.settings.duration));
        skiff_pki::csr::sign(&ca_cert, &ca_key, &request, &usages(csr), lifetime)
            .map_err(|e| Error::Other(format!("signing: {e}")))
    }
}

impl Reconcile for CsrSigningController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let Some(csr) = self.csrs.get(&ObjectRef::new(key)) else {
            return Ok(None);
        };
        let ours = matches!(
            csr.spec.signer_name.as_str(),
            KUBELET_CLIENT_SIGNER | CLIENT_SIGNER | KUBELET_SERVING_SIGNER
        );
        if !ours
            || !has_condition(&csr, "Approved")
            || is_issued(&csr)
            || has_condition(&csr, "Failed")
        {
            return Ok(None);
        }
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        let mut answered = csr.as_ref().clone();
        let status = answered.status.get_or_insert_with(Default::default);
        match self.refusal(&csr) {
            Some(message) => {
                status.conditions = Some(with_condition(
                    &csr,
                    "Failed",
                    "SignerValidationFailure",
                    message,
                ));
            }
            None => {
                let certificate = self.sign(&csr)?;
                status.certificate = Some(k8s_openapi::ByteString(certificate.into_bytes()));
            }
        }
        api.replace_status(key, &PostParams::default(), &answered)
            .await?;
        tracing::info!(csr = key, signer = %csr.spec.signer_name, "signed");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;

    fn csr(
        user: &str,
        groups: &[&str],
        signer: &str,
        usages: &[&str],
    ) -> CertificateSigningRequest {
        let (pem, _) = skiff_pki::csr::request(user, groups).expect("request");
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Whether a request is (kubelet client, kube-proxy client) as the approver judges.
    fn judged(user: &str, groups: &[&str], signer: &str, usages: &[&str]) -> (bool, bool) {
        let request = csr(user, groups, signer, usages);
        let subject = subject_of(&request).expect("subject");
        (
            is_kubelet_client_request(&request, &subject),
            is_kube_proxy_client_request(&request, &subject),
        )
    }

    #[test]
    fn kubelet_and_proxy_client_requests_are_recognised() {
        let node = "system:node:n1";
        let client = ["digital signature", "client auth"];
        assert!(judged(node, &["system:nodes"], KUBELET_CLIENT_SIGNER, &client).0);
        let masters = ["system:nodes", "system:masters"];
        assert!(!judged(node, &masters, KUBELET_CLIENT_SIGNER, &client).0);
        assert!(
            !judged(
                node,
                &["system:nodes"],
                KUBELET_CLIENT_SIGNER,
                &["server auth"]
            )
            .0
        );
        assert!(judged("system:kube-proxy", &[], CLIENT_SIGNER, &client).1);
        assert!(
            !judged(
                "system:kube-proxy",
                &["system:masters"],
                CLIENT_SIGNER,
                &client
            )
            .1
        );
        assert!(!judged("someone", &[], CLIENT_SIGNER, &client).1);
    }
}
