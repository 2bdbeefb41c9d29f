//! The connection to the control plane and one method per RPC, each signed and bounded by
//! `--timeout`.

use std::{future::Future, path::Path, time::Duration};

use tlsfleet_proto::v1::{
    fleet_service_client::FleetServiceClient,
    https_config_service_client::HttpsConfigServiceClient, DeleteRequest, DeleteResponse,
    GetRequest, GetResponse, GetRolloutStatusRequest, GetRolloutStatusResponse, ListAgentsRequest,
    ListAgentsResponse, ListRequest, ListResponse, PutRequest, PutResponse,
};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri},
    Code, Request, Response, Status, TimeoutExpired,
};

use crate::{
    error::CliError,
    signer::{signed_request, Signer},
};

/// Where a CA bundle usually lives when `--ca` is not given (the paths rustls-native-certs and
/// OpenSSL probe on Linux, after `$SSL_CERT_FILE`).
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How to reach the control plane.
#[derive(Debug)]
pub struct ConnectOptions<'a> {
    pub url: &'a Uri,
    pub ca: Option<&'a Path>,
    /// Client certificate and key for mTLS.
    pub identity: Option<(&'a Path, &'a Path)>,
    pub timeout: Duration,
    /// Allow plaintext off loopback.
    pub insecure: bool,
}

type Signed = InterceptedService<Channel, Signer>;

/// A connected, signing client of both services.
#[derive(Clone, Debug)]
pub struct Client {
    configs: HttpsConfigServiceClient<Signed>,
    fleet: FleetServiceClient<Signed>,
    timeout: Duration,
}

impl Client {
    /// Connects now, so that an unreachable control plane is reported as such and not as the
    /// first call's failure.
    pub async fn connect(opts: &ConnectOptions<'_>, signer: Signer) -> Result<Self, CliError> {
        let mut endpoint = Endpoint::from(opts.url.clone()).connect_timeout(opts.timeout);
        match opts.url.scheme_str() {
            Some("https") => {
                let pem = read_ca(opts.ca)?;
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
                if let Some((cert, key)) = opts.identity {
                    let read = |p: &Path| {
                        std::fs::read(p).map_err(|e| {
                            CliError::Usage(format!("cannot read {}: {e}", p.display()))
                        })
                    };
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|source| CliError::Connect {
                        url: opts.url.to_string(),
                        source,
                    })?;
            }
            _ if opts.ca.is_some() || opts.identity.is_some() => {
                return Err(CliError::Usage(
                    "--ca and --client-cert need an https:// --control URL".to_owned(),
                ));
            }
            _ if !opts.insecure
                && !opts
                    .url
                    .host()
                    .is_some_and(tlsfleet_policy::names::is_loopback_host) =>
            {
                return Err(CliError::Usage(format!(
                    "refusing plaintext http:// to {}, which is not this machine: use https:// \
                     (with --ca), or pass --insecure",
                    opts.url
                )));
            }
            _ => {}
        }
        let channel = bounded("connecting", opts.timeout, endpoint.connect())
            .await?
            .map_err(|source| CliError::Connect {
                url: opts.url.to_string(),
                source,
            })?;
        Ok(Self::from_channel(channel, signer, opts.timeout))
    }

    /// Wraps an existing channel (tests use this with an in-process server).
    pub fn from_channel(channel: Channel, signer: Signer, timeout: Duration) -> Self {
        Self {
            configs: HttpsConfigServiceClient::with_interceptor(channel.clone(), signer.clone()),
            fleet: FleetServiceClient::with_interceptor(channel, signer),
            timeout,
        }
    }

    /// `HttpsConfigService.Put`.
    pub async fn put(&self, msg: PutRequest) -> Result<PutResponse, CliError> {
        let mut c = self.configs.clone();
        self.call("Put", msg, |r| async move { c.put(r).await })
            .await
    }

    /// `HttpsConfigService.Get`.
    pub async fn get(&self, msg: GetRequest) -> Result<GetResponse, CliError> {
        let mut c = self.configs.clone();
        self.call("Get", msg, |r| async move { c.get(r).await })
            .await
    }

    /// `HttpsConfigService.List`: one page.
    pub async fn list(&self, msg: ListRequest) -> Result<ListResponse, CliError> {
        let mut c = self.configs.clone();
        self.call("List", msg, |r| async move { c.list(r).await })
            .await
    }

    /// `HttpsConfigService.Delete`.
    pub async fn delete(&self, msg: DeleteRequest) -> Result<DeleteResponse, CliError> {
        let mut c = self.configs.clone();
        self.call("Delete", msg, |r| async move { c.delete(r).await })
            .await
    }

    /// `HttpsConfigService.GetDefault`.
    pub async fn get_default(&self) -> Result<GetResponse, CliError> {
        let mut c = self.configs.clone();
        self.call(
            "GetDefault",
            tlsfleet_proto::v1::GetDefaultRequest {},
            |r| async move { c.get_default(r).await },
        )
        .await
    }

    /// `HttpsConfigService.PutDefault`.
    pub async fn put_default(
        &self,
        msg: tlsfleet_proto::v1::PutDefaultRequest,
    ) -> Result<PutResponse, CliError> {
        let mut c = self.configs.clone();
        self.call("PutDefault", msg, |r| async move { c.put_default(r).await })
            .await
    }

    /// `HttpsConfigService.DeleteDefault`.
    pub async fn delete_default(
        &self,
        msg: tlsfleet_proto::v1::DeleteDefaultRequest,
    ) -> Result<DeleteResponse, CliError> {
        let mut c = self.configs.clone();
        self.call("DeleteDefault", msg, |r| async move {
            c.delete_default(r).await
        })
        .await
    }

    /// `HttpsConfigService.ListHistory`: one page.
    pub async fn list_history(
        &self,
        msg: tlsfleet_proto::v1::ListHistoryRequest,
    ) -> Result<tlsfleet_proto::v1::ListHistoryResponse, CliError> {
        let mut c = self.configs.clone();
        self.call(
            "ListHistory",
            msg,
            |r| async move { c.list_history(r).await },
        )
        .await
    }

    /// `FleetService.GetUsage`.
    pub async fn get_usage(
        &self,
        msg: tlsfleet_proto::v1::GetUsageRequest,
    ) -> Result<tlsfleet_proto::v1::GetUsageResponse, CliError> {
        let mut c = self.fleet.clone();
        self.call("GetUsage", msg, |r| async move { c.get_usage(r).await })
            .await
    }

    /// `FleetService.ListAgents`.
    pub async fn list_agents(&self) -> Result<ListAgentsResponse, CliError> {
        let mut c = self.fleet.clone();
        self.call("ListAgents", ListAgentsRequest {}, |r| async move {
            c.list_agents(r).await
        })
        .await
    }

    /// `HttpsConfigService.PromoteCanary`.
    pub async fn promote_canary(
        &self,
        msg: tlsfleet_proto::v1::CanaryRequest,
    ) -> Result<PutResponse, CliError> {
        let mut c = self.configs.clone();
        self.call("PromoteCanary", msg, |r| async move {
            c.promote_canary(r).await
        })
        .await
    }

    /// `HttpsConfigService.AbortCanary`.
    pub async fn abort_canary(
        &self,
        msg: tlsfleet_proto::v1::CanaryRequest,
    ) -> Result<DeleteResponse, CliError> {
        let mut c = self.configs.clone();
        self.call(
            "AbortCanary",
            msg,
            |r| async move { c.abort_canary(r).await },
        )
        .await
    }

    /// `FleetService.GetRolloutStatus`.
    pub async fn rollout_status(
        &self,
        msg: GetRolloutStatusRequest,
    ) -> Result<GetRolloutStatusResponse, CliError> {
        let mut c = self.fleet.clone();
        self.call("GetRolloutStatus", msg, |r| async move {
            c.get_rollout_status(r).await
        })
        .await
    }

    /// Sends the deadline to the server too (`grpc-timeout`), so it can stop working on a call
    /// nobody waits for. Whichever side notices the deadline first, it is reported as a
    /// timeout.
    async fn call<M, R, F, Fut>(&self, method: &'static str, msg: M, f: F) -> Result<R, CliError>
    where
        M: prost::Message,
        F: FnOnce(Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut request = signed_request(msg);
        request.set_timeout(self.timeout);
        bounded(method, self.timeout, f(request))
            .await?
            .map(Response::into_inner)
            .map_err(|status| {
                if is_deadline(&status) {
                    CliError::Timeout {
                        what: method.to_owned(),
                        after: self.timeout,
                    }
                } else {
                    CliError::Rpc { method, status }
                }
            })
    }
}

/// A tonic server answers an expired `grpc-timeout` with `Cancelled` "Timeout expired", not
/// the `DeadlineExceeded` of the gRPC spec; both mean our deadline passed.
fn is_deadline(status: &Status) -> bool {
    match status.code() {
        Code::DeadlineExceeded => true,
        Code::Cancelled => status.message() == TimeoutExpired(()).to_string(),
        _ => false,
    }
}

async fn bounded<T>(
    what: &str,
    after: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, CliError> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| CliError::Timeout {
            what: what.to_owned(),
            after,
        })
}

/// The trust roots: `--ca`, else the system bundle. tonic is built without a root store
/// crate, so the system bundle is read the way OpenSSL finds it.
fn read_ca(ca: Option<&Path>) -> Result<Vec<u8>, CliError> {
    let (path, explicit) = match ca {
        Some(p) => (p.to_path_buf(), true),
        None => {
            let from_env = std::env::var_os("SSL_CERT_FILE").map(Into::into);
            let found = from_env
                .into_iter()
                .chain(SYSTEM_CA_BUNDLES.iter().map(Into::into))
                .find(|p: &std::path::PathBuf| p.is_file());
            let path = found.ok_or_else(|| {
                CliError::Usage(
                    "no system CA bundle found for the https:// control URL: pass --ca FILE"
                        .to_owned(),
                )
            })?;
            (path, false)
        }
    };
    let what = if explicit {
        "--ca file"
    } else {
        "system CA bundle"
    };
    let pem = std::fs::read(&path)
        .map_err(|e| CliError::Usage(format!("cannot read the {what} {}: {e}", path.display())))?;
    // tonic would only fail at the handshake, reported as the server's fault.
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(CliError::Usage(format!(
            "the {what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `connect` with `ca`, no identity, no --insecure, and a throwaway key.
    async fn connect(url: &Uri, ca: Option<&Path>, timeout: Duration) -> CliError {
        let opts = ConnectOptions {
            url,
            ca,
            identity: None,
            timeout,
            insecure: false,
        };
        let creds = crate::signer::access_key(Some("AK".into()), Some("s".into())).unwrap();
        Client::connect(&opts, Signer::new(creds))
            .await
            .unwrap_err()
    }

    #[test]
    fn ca_file_must_exist_and_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("tlsfleetctl-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        assert!(matches!(read_ca(Some(&missing)), Err(CliError::Usage(_))));
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, b"not a certificate").unwrap();
        let err = read_ca(Some(&junk)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let good = dir.join("ca.pem");
        std::fs::write(
            &good,
            b"-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca(Some(&good)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn unreachable_control_plane_is_unavailable() {
        // Bind then drop: the port is closed, so the connect is refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let err = connect(&url, None, Duration::from_secs(5)).await;
        assert!(matches!(err, CliError::Connect { .. }), "{err}");
        assert_eq!(err.exit() as u8, 5);
    }

    #[test]
    fn server_side_deadlines_count_as_timeouts() {
        assert!(is_deadline(&Status::deadline_exceeded("late")));
        assert!(is_deadline(&Status::from_error(Box::new(TimeoutExpired(
            ()
        )))));
        assert!(!is_deadline(&Status::cancelled("client went away")));
        assert!(!is_deadline(&Status::unavailable("Timeout expired")));
    }

    #[tokio::test]
    async fn plaintext_off_loopback_is_a_usage_error() {
        let url: Uri = "http://10.9.8.7:7443".parse().unwrap();
        let err = connect(&url, None, Duration::from_secs(1)).await;
        assert_eq!(err.exit() as u8, 2, "{err}");
        assert!(err.to_string().contains("--insecure"), "{err}");
    }

    #[tokio::test]
    async fn ca_with_plain_http_is_a_usage_error() {
        let url: Uri = "http://127.0.0.1:1".parse().unwrap();
        let err = connect(
            &url,
            Some(Path::new("/nonexistent")),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(err.exit() as u8, 2, "{err}");
    }
}
