//! weft-bookinfo: Istio's Bookinfo demo services as small Rust programs,
//! so the demo runs on Weft without containers.
//!
//! ```text
//!                         ┌─► details  /details/{id}
//!  browser ─► productpage ┤
//!     /productpage        └─► reviews  /reviews/{id}  (v1: no stars)
//!                               └─► ratings /ratings/{id}  (v2 black, v3 red)
//! ```
//! One binary, `bookinfo SERVICE`, plays any of the four services. They
//! answer what Istio's Ruby, Java, Node and Python services answer, and they
//! hold no mesh code: outbound calls go to plain `http://NAME:9080` URLs
//! through the sidecar named by `HTTP_PROXY`, carrying the incoming request's
//! tracing headers ([`propagate`]) as Istio asks applications to do.
//!
//! [`serve`] runs one service on a listener until a shutdown future fires;
//! `main.rs` is only the command line around it.

#![forbid(unsafe_code)]

pub mod details;
pub mod outbound;
pub mod productpage;
pub mod propagate;
pub mod ratings;
pub mod reviews;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

/// Which Bookinfo service this process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Productpage => "productpage",
            Service::Details => "details",
            Service::Reviews => "reviews",
            Service::Ratings => "ratings",
        }
    }
}

/// The service's version; only reviews behaves differently per version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    /// reviews: no ratings.
    #[default]
    V1,
    /// reviews: black stars from ratings.
    V2,
    /// reviews: red stars from ratings.
    V3,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }
}

/// How outbound calls find their way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// `HTTP_PROXY` / `http_proxy` / `NO_PROXY` from the environment: the
    /// sidecar when the mesh starts the app.
    #[default]
    FromEnv,
    /// Straight to the URL's host, whatever the environment says.
    Direct,
}

/// Everything one service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: Service,
    pub version: Version,
    /// Shown as reviews' `podname` (`Reviews served by: …` on the page).
    pub workload: String,
    /// Reviews' `clustername` (Istio's `CLUSTER_NAME`).
    pub cluster: Option<String>,
    /// Base URLs of the services called, without a trailing slash.
    pub details_url: String,
    pub reviews_url: String,
    pub ratings_url: String,
    pub proxy: ProxyMode,
    /// Overrides every outbound timeout (Istio's: productpage 3 s, reviews
    /// v2 10 s, reviews v3 2.5 s).
    pub timeout: Option<Duration>,
}

impl Config {
    /// The defaults of Istio's Bookinfo: the services by their mesh names.
    pub fn new(service: Service) -> Self {
        let version = Version::default();
        Config {
            service,
            version,
            workload: format!("{}-{}", service.name(), version.name()),
            cluster: None,
            details_url: "http://details:9080".into(),
            reviews_url: "http://reviews:9080".into(),
            ratings_url: "http://ratings:9080".into(),
            proxy: ProxyMode::FromEnv,
            timeout: None,
        }
    }
}

/// What can stop a service from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the outbound HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("listener failed")]
    Io(#[from] std::io::Error),
}

/// Serves `config.service` on `listener` until `shutdown` completes, then
/// lets requests in flight finish (for a few seconds at most).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let config = Arc::new(config);
    match config.service {
        Service::Details => server::serve(listener, Arc::new(details::Details), shutdown).await?,
        Service::Ratings => server::serve(listener, Arc::new(ratings::Ratings), shutdown).await?,
        Service::Reviews => {
            let app = reviews::Reviews::new(config).map_err(Error::Client)?;
            server::serve(listener, Arc::new(app), shutdown).await?
        }
        Service::Productpage => {
            let app = productpage::Productpage::new(config).map_err(Error::Client)?;
            server::serve(listener, Arc::new(app), shutdown).await?
        }
    }
    Ok(())
}
