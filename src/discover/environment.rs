//! Which kind of place netstrap runs in: Kubernetes, Docker or a plain host.

use std::path::Path;

use serde::Serialize;

use crate::config::{EnvironmentChoice, Settings};
use crate::provenance::{Found, Provenance};

/// The environment kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentKind {
    Kubernetes,
    Docker,
    Host,
}

/// What the filesystem says about the environment, read once so the decision is pure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The service-account directory holds a token.
    pub service_account: bool,
    /// `/.dockerenv` (Docker) or `/run/.containerenv` (Podman) exists.
    pub container_marker: bool,
}

impl HostFacts {
    pub fn read(settings: &Settings) -> HostFacts {
        HostFacts {
            service_account: settings.sa_dir.join("token").is_file(),
            container_marker: Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists(),
        }
    }
}

/// Decide the environment kind: an explicit choice wins; Kubernetes is recognised by its
/// service-account token or `KUBERNETES_SERVICE_HOST`; Docker by its marker file.
pub fn environment(settings: &Settings, facts: &HostFacts) -> Found<EnvironmentKind> {
    let kind = |k, why: &str| Found::new(k, Provenance::new(why));
    match settings.environment {
        EnvironmentChoice::Kubernetes => {
            kind(EnvironmentKind::Kubernetes, "configured (NETSTRAP_ENVIRONMENT/IS_KUBERNETES)")
        }
        EnvironmentChoice::Docker => kind(EnvironmentKind::Docker, "configured (NETSTRAP_ENVIRONMENT)"),
        EnvironmentChoice::Host => kind(EnvironmentKind::Host, "configured (NETSTRAP_ENVIRONMENT)"),
        EnvironmentChoice::Auto => {
            if facts.service_account {
                kind(
                    EnvironmentKind::Kubernetes,
                    &format!("service-account token in {}", settings.sa_dir.display()),
                )
            } else if settings.kubernetes_service_host.is_some() {
                kind(EnvironmentKind::Kubernetes, "env KUBERNETES_SERVICE_HOST")
            } else if facts.container_marker {
                kind(EnvironmentKind::Docker, "container marker /.dockerenv or /run/.containerenv")
            } else {
                Found::new(
                    EnvironmentKind::Host,
                    Provenance::new("default").after(vec![
                        "no service-account token, no KUBERNETES_SERVICE_HOST".into(),
                        "no container marker file".into(),
                    ]),
                )
            }
        }
    }
}
