//! A fake Kubernetes API server, shaped like the real one where netstrap looks at it:
//! `GET /api/v1/namespaces/{ns}/services/{name}` and `GET /api/v1/nodes/{name}` answer with
//! real-shaped objects (serialised k8s-openapi types: apiVersion, kind, metadata, spec,
//! status); failures are `Status` objects with the codes, reasons and messages the real
//! API server uses (401 for a wrong bearer token, 403 for RBAC, 404 for a missing object).
//!
//! It serves plain HTTP (for a kubeconfig with `server: http://127.0.0.1:port`) or HTTPS
//! with the certificate in `tests/data/kube-tls/` (for the in-cluster path). Those PEM files
//! were made once, with:
//!
//! ```text
//! openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 36500 \
//!   -subj /CN=netstrap-test-kube-ca -addext basicConstraints=critical,CA:TRUE \
//!   -addext keyUsage=critical,keyCertSign,cRLSign -addext subjectKeyIdentifier=hash
//! openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=kubernetes
//! openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 36500 \
//!   -out server.crt -extfile server.ext   # CA:FALSE, serverAuth,
//!   # subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc
//! ```
//! (the CA key was then deleted).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeStatus, Service, ServicePort,
    ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

pub const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kube-tls");

/// The CA that signed the fake API server's certificate (PEM).
pub fn ca_pem() -> String {
    std::fs::read_to_string(Path::new(TLS_DIR).join("ca.crt")).expect("tests/data/kube-tls/ca.crt")
}

/// Test builds enable both of rustls' crypto providers (kube asks for ring, other
/// dev-dependencies for aws-lc-rs), and then rustls needs a process default chosen.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One request the fake saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    token: String,
    services: HashMap<(String, String), Service>,
    nodes: HashMap<String, Node>,
    forbidden: HashSet<String>,
    hang: bool,
    requests: Vec<Recorded>,
}

/// The running fake. Dropping it stops the server and every open connection.
pub struct FakeKube {
    addr: SocketAddr,
    tls: bool,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeKube {
    /// Serve plain HTTP on 127.0.0.1:0, accepting `Authorization: Bearer <token>`.
    pub async fn start_http(token: &str) -> FakeKube {
        Self::start(token, None).await
    }

    /// Serve HTTPS on 127.0.0.1:0 with the certificate from `tests/data/kube-tls/`.
    pub async fn start_https(token: &str) -> FakeKube {
        let read = |name: &str| std::fs::read(Path::new(TLS_DIR).join(name)).expect("kube-tls PEM file");
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(&read("server.crt"))
            .collect::<Result<Vec<_>, _>>()
            .expect("server.crt");
        let key = PrivateKeyDer::from_pem_slice(&read("server.key")).expect("a private key in server.key");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server certificate and key");
        Self::start(token, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(token: &str, tls: Option<TlsAcceptor>) -> FakeKube {
        install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake API server");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State { token: token.to_string(), ..State::default() }));
        let is_tls = tls.is_some();
        let shared = state.clone();
        let server = tokio::spawn(async move {
            // Owned by this task, so aborting it (on drop) also ends hung connections.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, state).await;
                            }
                        }
                        None => serve(stream, state).await,
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        FakeKube { addr, tls: is_tls, state, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Store a Service under its metadata namespace and name.
    pub fn set_service(&self, service: Service) {
        let ns = service.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = service.metadata.name.clone().expect("a Service needs metadata.name");
        self.state.lock().unwrap().services.insert((ns, name), service);
    }

    pub fn set_node(&self, node: Node) {
        let name = node.metadata.name.clone().expect("a Node needs metadata.name");
        self.state.lock().unwrap().nodes.insert(name, node);
    }

    /// RBAC denies `get` on this resource ("services", "nodes").
    pub fn forbid(&self, resource: &str) {
        self.state.lock().unwrap().forbidden.insert(resource.to_string());
    }

    /// From now on, read requests and never answer.
    pub fn hang(&self) {
        self.state.lock().unwrap().hang = true;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Write a kubeconfig for this server (current context, bearer `token`, default
    /// namespace `namespace`) into `dir`; HTTPS servers get `certificate-authority`.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str, namespace: &str) -> PathBuf {
        let ca = if self.tls {
            let path = dir.join("kube-ca.crt");
            std::fs::write(&path, ca_pem()).expect("write CA");
            format!("    certificate-authority: {}\n", path.display())
        } else {
            String::new()
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n{ca}\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: netstrap\n    namespace: {namespace}\n\
             current-context: fake\nusers:\n- name: netstrap\n  user:\n    token: {token}\n",
            url = self.url()
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

/// Write a service-account directory (`token`, `ca.crt`, `namespace`) as kubelet mounts it.
pub fn write_sa_dir(dir: &Path, token: &str, namespace: &str) -> PathBuf {
    let sa = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa).expect("create SA dir");
    std::fs::write(sa.join("token"), token).expect("write token");
    std::fs::write(sa.join("ca.crt"), ca_pem()).expect("write ca.crt");
    std::fs::write(sa.join("namespace"), namespace).expect("write namespace");
    sa
}

async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: I, state: Arc<Mutex<State>>) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(req, &state).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
}

async fn answer(req: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(String::from);
    let path = req.uri().path().to_string();
    let (hang, reply) = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            method: req.method().to_string(),
            path: path.clone(),
            authorization: authorization.clone(),
        });
        (st.hang, route(&st, req.method(), &path, authorization.as_deref()))
    };
    if hang {
        std::future::pending::<()>().await;
    }
    reply
}

fn route(
    st: &State,
    method: &hyper::Method,
    path: &str,
    authorization: Option<&str>,
) -> Response<Full<Bytes>> {
    if authorization != Some(format!("Bearer {}", st.token).as_str()) {
        return status(401, "Unauthorized", "Unauthorized", None);
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (resource, namespace, name) = match segments.as_slice() {
        ["api", "v1", "namespaces", ns, "services", name] => ("services", Some(*ns), *name),
        ["api", "v1", "nodes", name] => ("nodes", None, *name),
        _ => return status(404, "NotFound", "the server could not find the requested resource", None),
    };
    if method != hyper::Method::GET {
        let msg = format!("{method} is not supported by this fake");
        return status(405, "MethodNotAllowed", &msg, None);
    }
    let details = json!({"name": name, "kind": resource});
    if st.forbidden.contains(resource) {
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let sa = "system:serviceaccount:edge:netstrap";
        let msg = format!(
            "{resource} \"{name}\" is forbidden: User \"{sa}\" cannot get resource \"{resource}\" in API group \"\" {scope}"
        );
        return status(403, "Forbidden", &msg, Some(details));
    }
    let object = match namespace {
        Some(ns) => st.services.get(&(ns.to_string(), name.to_string())).map(serde_json::to_value),
        None => st.nodes.get(name).map(serde_json::to_value),
    };
    match object {
        Some(Ok(mut value)) => {
            // The API server always fills these in.
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.entry("uid").or_insert_with(|| json!("6f1c9e52-3a8d-4c1e-9b5f-0d2a7e4c8b11"));
                meta.entry("resourceVersion").or_insert_with(|| json!("4242"));
                meta.entry("creationTimestamp").or_insert_with(|| json!("2025-01-01T00:00:00Z"));
            }
            json_response(200, &value)
        }
        Some(Err(e)) => status(500, "InternalError", &e.to_string(), None),
        None => status(404, "NotFound", &format!("{resource} \"{name}\" not found"), Some(details)),
    }
}

fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response<Full<Bytes>> {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    body["code"] = json!(code);
    json_response(code, &body)
}

fn json_response(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

// Builders for the objects tests put into the fake.

/// A Service port; `target` is a number (`"32048"`) or a port name (`"rest"`).
pub fn service_port(name: &str, port: i32, target: Option<&str>, node_port: Option<i32>) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        protocol: Some("TCP".into()),
        port,
        target_port: target.map(|t| match t.parse::<i32>() {
            Ok(n) => IntOrString::Int(n),
            Err(_) => IntOrString::String(t.to_string()),
        }),
        node_port,
        ..ServicePort::default()
    }
}

/// A Service of `type_` with `cluster_ip` ("None" for headless) and `ports`.
pub fn service(ns: &str, name: &str, type_: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(ns.into()), ..ObjectMeta::default() },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ports: Some(ports),
            selector: Some([("app".to_string(), name.to_string())].into()),
            ..ServiceSpec::default()
        }),
        status: Some(ServiceStatus::default()),
    }
}

/// Give a Service LoadBalancer ingress entries: `(ip, hostname)` each.
pub fn with_ingress(mut service: Service, entries: &[(Option<&str>, Option<&str>)]) -> Service {
    let ingress = entries
        .iter()
        .map(|(ip, hostname)| LoadBalancerIngress {
            ip: ip.map(String::from),
            hostname: hostname.map(String::from),
            ip_mode: ip.map(|_| "VIP".to_string()),
            ..LoadBalancerIngress::default()
        })
        .collect();
    service.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus { ingress: Some(ingress) }),
        ..ServiceStatus::default()
    });
    service
}

/// A Node with `addresses` as `(type, address)`: ExternalIP, InternalIP, Hostname, ...
pub fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress { type_: t.to_string(), address: a.to_string() })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
    }
}
