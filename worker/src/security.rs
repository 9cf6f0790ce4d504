//! How gRPC connections between the coordinator and the workers are secured: TLS (rustls),
//! optionally mutual, and a shared token checked on every RPC.
//!
//! The token comes from `--token-file` or the `AMOS_TOKEN` environment variable and travels
//! as `authorization: Bearer <token>`; it is compared in constant time and never logged
//! (`Debug` prints it redacted). The health service stays open so that probes work.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tonic::{Request, Status};

/// Environment variable holding the shared token (when no `--token-file` is given).
pub const TOKEN_ENV: &str = "AMOS_TOKEN";

/// TLS and token settings of one process.
#[derive(Clone, Default)]
pub struct Security {
    token: Option<Arc<str>>,
    /// This process's certificate and key (PEM): its server identity, and its client
    /// identity towards servers that require mutual TLS.
    identity: Option<Identity>,
    /// CA (PEM) that peers' certificates must chain to. A server given one requires client
    /// certificates (mutual TLS).
    ca: Option<Certificate>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_identity", &self.identity.is_some())
            .field("ca", &self.ca.is_some())
            .finish()
    }
}

/// Command-line flags shared by the worker and the coordinator.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// File holding the shared token required on every RPC (default: $AMOS_TOKEN; none: no
    /// token check).
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// This process's TLS certificate (PEM); with --tls-key, gRPC runs over TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// CA certificate (PEM) peers must chain to; on a server it also requires client
    /// certificates (mutual TLS).
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

impl Security {
    /// From the flags (and `$AMOS_TOKEN`).
    pub fn from_args(args: &SecurityArgs) -> anyhow::Result<Security> {
        let token = match &args.token_file {
            Some(p) => Some(
                String::from_utf8(read(p, "token file")?)
                    .with_context(|| format!("the token file {} is not UTF-8", p.display()))?,
            ),
            None => std::env::var(TOKEN_ENV).ok(),
        };
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = &token {
            MetadataValue::<Ascii>::try_from(format!("Bearer {t}"))
                .map_err(|_| anyhow::anyhow!("the token must be printable ASCII"))?;
        }
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(c), Some(k)) => Some(Identity::from_pem(
                read(c, "TLS certificate")?,
                read(k, "TLS key")?,
            )),
            _ => None,
        };
        let ca = match &args.tls_ca {
            Some(p) => Some(Certificate::from_pem(read(p, "CA certificate")?)),
            None => None,
        };
        Ok(Security {
            token: token.map(Arc::from),
            identity,
            ca,
        })
    }

    /// Only a token (local mode).
    pub fn with_token(token: String) -> Security {
        Security {
            token: Some(Arc::from(token)),
            ..Default::default()
        }
    }

    /// Whether clients must use `https://`.
    pub fn uses_tls(&self) -> bool {
        self.identity.is_some() || self.ca.is_some()
    }

    /// `addr` with the scheme this security needs when it has none.
    pub fn address(&self, addr: &str) -> String {
        if addr.contains("://") {
            addr.to_string()
        } else if self.uses_tls() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        }
    }

    /// The server side of TLS, when this process has a certificate.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.clone()?;
        let mut tls = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.ca {
            tls = tls.client_ca_root(ca.clone());
        }
        Some(tls)
    }

    fn client_tls(&self) -> Option<ClientTlsConfig> {
        if !self.uses_tls() {
            return None;
        }
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(ca.clone());
        }
        if let Some(id) = &self.identity {
            tls = tls.identity(id.clone());
        }
        Some(tls)
    }

    /// The interceptor servers wrap their services in.
    pub fn check(&self) -> TokenCheck {
        TokenCheck(self.token.clone())
    }

    /// A channel to `addr` that carries the token, over TLS when configured.
    pub async fn connect(&self, addr: &str, timeout: Duration) -> anyhow::Result<AuthChannel> {
        let addr = self.address(addr);
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .with_context(|| format!("address {addr}"))?
            .connect_timeout(timeout);
        if let Some(tls) = self.client_tls() {
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("TLS settings for {addr}"))?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let header = self
            .token
            .as_ref()
            .and_then(|t| MetadataValue::<Ascii>::try_from(format!("Bearer {t}")).ok());
        Ok(InterceptedService::new(channel, TokenAttach(header)))
    }
}

/// A channel that adds the token to every request.
pub type AuthChannel = InterceptedService<Channel, TokenAttach>;

/// Adds `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct TokenAttach(Option<MetadataValue<Ascii>>);

impl Interceptor for TokenAttach {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// Refuses requests without the right token.
#[derive(Clone)]
pub struct TokenCheck(Option<Arc<str>>);

impl Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong token"))
        }
    }
}
