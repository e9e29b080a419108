//! One connection type over a single server (a self-healing `ConnectionManager`) and a
//! cluster (`ClusterConnection`, which follows MOVED/ASK and slot changes itself).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisResult, TlsCertificates,
};

use super::{StoreConfig, StoreError};

#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// rustls needs one crypto provider per process; ring is the one compiled in.
pub(crate) fn install_crypto() {
    // An error means another provider is installed already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn certs(config: &StoreConfig) -> Option<TlsCertificates> {
    config.tls_ca.as_ref().map(|ca| TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.clone()),
    })
}

/// Parse every URL, naming the bad one (without its password) when one does not parse.
pub(crate) fn check(config: &StoreConfig) -> Result<(), StoreError> {
    for url in &config.urls {
        if let Err(err) = url.as_str().into_connection_info() {
            return Err(StoreError::Config(format!(
                "not a redis URL: {:?} ({err})",
                redacted(url)
            )));
        }
    }
    Ok(())
}

/// The URL with any password replaced, for messages.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn client_error(err: &redis::RedisError) -> StoreError {
    StoreError::Connect(err.to_string())
}

impl Conn {
    pub(crate) async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        if config.cluster {
            let mut builder = ClusterClientBuilder::new(config.urls.iter().map(String::as_str))
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(1);
            if let Some(certs) = certs(config) {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(|e| client_error(&e))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| client_error(&e))?;
            return Ok(Self::Cluster(conn));
        }
        let Some(url) = config.urls.first() else {
            return Err(StoreError::Config(
                "at least one redis URL is needed".into(),
            ));
        };
        let url = url.as_str();
        let client = match certs(config) {
            Some(certs) => Client::build_with_tls(url, certs),
            None => Client::open(url),
        }
        .map_err(|e| client_error(&e))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(|e| client_error(&e))?;
        Ok(Self::Single(conn))
    }

    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub(crate) async fn pipeline<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> RedisResult<T> {
        match self {
            Self::Single(c) => pipe.query_async(c).await,
            Self::Cluster(c) => pipe.query_async(c).await,
        }
    }
}
