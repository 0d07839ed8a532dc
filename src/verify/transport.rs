//! How verify reaches an Envoy admin interface: directly over HTTP (`--admin NAME=URL`, the
//! test bed, a local `kubectl port-forward`) or through the Kubernetes API's pod port-forward
//! (kube-rs websocket), in both cases one plain HTTP/1.1 GET with hyper.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::VerifyError;

/// Reads one admin path (`/clusters?format=json`, `/certs`, …) and returns the body.
#[async_trait::async_trait]
pub trait AdminTransport: Send + Sync {
    /// GET `path_and_query`; a non-2xx status is an error.
    async fn get(&self, path_and_query: &str) -> Result<String, VerifyError>;
    /// Where the admin interface is (`http://127.0.0.1:19000`,
    /// `pod yelb/yelb-ui-5d8f7c9b4-x2x7q port 9901 (port-forward, app=yelb-ui)`).
    fn describe(&self) -> String;
    /// The command a person runs to see the same thing, for hints.
    fn show_command(&self, path_and_query: &str) -> String {
        format!("curl -s '{}{}'", self.describe(), path_and_query)
    }
}

/// One HTTP/1.1 GET over an established byte stream. Returns status and body.
pub async fn http1_get<IO>(io: IO, authority: &str, path_and_query: &str) -> Result<(u16, String), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path_and_query)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "meshctl-verify")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building request: {e}"))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| format!("reading body: {e}"))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    .await;
    conn_task.abort();
    result
}

/// A parsed `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub host: String,
    pub port: u16,
    /// Path prefix without the trailing slash (usually empty).
    pub prefix: String,
    /// The full path and query of the URL itself (for traffic requests).
    pub path_and_query: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(s) => return Err(format!("invalid URL {url:?}: scheme {s} is not supported, use http://")),
            None => return Err(format!("invalid URL {url:?}: expected http://HOST:PORT")),
        }
        let host =
            uri.host().ok_or_else(|| format!("invalid URL {url:?}: no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path().trim_end_matches('/').to_string();
        let path_and_query = uri.path_and_query().map(|p| p.as_str().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        Ok(HttpTarget { host, port, prefix: path, path_and_query })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// GET `path_and_query` (relative to the host, not the prefix) on a new connection.
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, String), String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {}: {e}", self.authority()))?;
        http1_get(stream, &self.authority(), path_and_query).await
    }
}

/// The admin interface at a URL reachable from here.
#[derive(Debug, Clone)]
pub struct HttpAdmin {
    base: String,
    target: HttpTarget,
    timeout: Duration,
}

impl HttpAdmin {
    /// `url` is `http://HOST:PORT` (an optional path prefix is kept).
    pub fn new(url: &str) -> Result<Self, VerifyError> {
        let target = HttpTarget::parse(url).map_err(VerifyError::Usage)?;
        Ok(HttpAdmin { base: url.trim_end_matches('/').to_string(), target, timeout: Duration::from_secs(10) })
    }

    /// Per-request timeout (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait::async_trait]
impl AdminTransport for HttpAdmin {
    async fn get(&self, path_and_query: &str) -> Result<String, VerifyError> {
        let path = format!("{}{}", self.target.prefix, path_and_query);
        let err = |message: String| VerifyError::Admin { target: self.base.clone(), message };
        let (status, body) = tokio::time::timeout(self.timeout, self.target.get(&path))
            .await
            .map_err(|_| err(format!("GET {path} timed out after {:?}", self.timeout)))?
            .map_err(err)?;
        if !(200..300).contains(&status) {
            return Err(err(format!("GET {path} answered {status}: {}", body.trim())));
        }
        Ok(body)
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// How long a failed port-forward request waits for the error channel's message.
const PORT_ERROR_WAIT: Duration = Duration::from_secs(2);

/// The admin interface of a pod's Envoy, reached through the Kubernetes API's port-forward
/// (no kubectl). The pod is the first running pod matching the label selector, looked up
/// once; [`AdminTransport::describe`] and hints name it from then on.
pub struct PortForwardAdmin {
    client: ::kube::Client,
    namespace: String,
    selector: String,
    port: u16,
    context: Option<String>,
    pod: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for PortForwardAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForwardAdmin")
            .field("namespace", &self.namespace)
            .field("selector", &self.selector)
            .field("port", &self.port)
            .finish()
    }
}

impl PortForwardAdmin {
    pub fn new(client: ::kube::Client, namespace: &str, selector: &str, port: u16) -> Self {
        PortForwardAdmin {
            client,
            namespace: namespace.to_string(),
            selector: selector.to_string(),
            port,
            context: None,
            pod: tokio::sync::OnceCell::new(),
        }
    }

    /// For a workload: its namespace, pod selector and admin port.
    pub fn for_workload(client: ::kube::Client, w: &super::Proxy) -> Self {
        Self::new(client, &w.namespace, &w.pod_selector, w.admin_port)
    }

    /// Names the kubeconfig context in hints (`kubectl --context …`).
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// The pod the admin interface is reached in, once a request has looked it up.
    pub fn pod(&self) -> Option<&str> {
        self.pod.get().map(String::as_str)
    }

    async fn pod_name(&self) -> Result<String, VerifyError> {
        self.pod.get_or_try_init(|| self.find_pod()).await.cloned()
    }

    async fn find_pod(&self) -> Result<String, VerifyError> {
        use ::kube::api::{Api, ListParams};
        use k8s_openapi::api::core::v1::Pod;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| VerifyError::Kube(format!("listing pods {} in {}: {e}", self.selector, self.namespace)))?;
        let running = list
            .items
            .iter()
            .find(|p| p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        running.and_then(|p| p.metadata.name.clone()).ok_or_else(|| VerifyError::Admin {
            target: self.describe(),
            message: format!("no running pod matches {} in namespace {} ({} pods found)", self.selector, self.namespace, list.items.len()),
        })
    }
}

#[async_trait::async_trait]
impl AdminTransport for PortForwardAdmin {
    async fn get(&self, path_and_query: &str) -> Result<String, VerifyError> {
        use ::kube::api::Api;
        use k8s_openapi::api::core::v1::Pod;
        let pod = self.pod_name().await?;
        let err = |message: String| VerifyError::Admin { target: format!("pod {}/{pod}:{}", self.namespace, self.port), message };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut pf = pods.portforward(&pod, &[self.port]).await.map_err(|e| err(format!("port-forward: {e}")))?;
        let stream = pf.take_stream(self.port).ok_or_else(|| err("port-forward gave no stream".into()))?;
        // The kubelet reports why the port cannot be reached (nothing listens, …) on the
        // port's error channel and closes the stream, which alone reads as "connection closed".
        let port_error = pf.take_error(self.port);
        let res = http1_get(stream, &format!("localhost:{}", self.port), path_and_query).await;
        let res = match res {
            Ok(r) => Ok(r),
            Err(e) => {
                let why = match port_error {
                    Some(f) => tokio::time::timeout(PORT_ERROR_WAIT, f).await.ok().flatten(),
                    None => None,
                };
                Err(match why {
                    Some(why) => format!("{e}; the port-forward reports: {}", why.trim()),
                    None => e,
                })
            }
        };
        pf.abort();
        let (status, body) = res.map_err(err)?;
        if !(200..300).contains(&status) {
            return Err(err(format!("GET {path_and_query} answered {status}: {}", body.trim())));
        }
        Ok(body)
    }

    fn describe(&self) -> String {
        match self.pod() {
            Some(pod) => format!("pod {}/{pod} port {} (port-forward, {})", self.namespace, self.port, self.selector),
            None => format!("pod {}/{} port {} (port-forward)", self.namespace, self.selector, self.port),
        }
    }

    fn show_command(&self, path_and_query: &str) -> String {
        let ctx = self.context.as_ref().map(|c| format!("--context {c} ")).unwrap_or_default();
        let pod = match self.pod() {
            Some(pod) => pod.to_string(),
            None => format!("$(kubectl {ctx}-n {ns} get pod -l {sel} -o name | head -1)", ns = self.namespace, sel = self.selector),
        };
        format!(
            "kubectl {ctx}-n {ns} exec {pod} -c envoy -- curl -s 'http://localhost:{port}{path_and_query}'",
            ns = self.namespace,
            port = self.port
        )
    }
}
