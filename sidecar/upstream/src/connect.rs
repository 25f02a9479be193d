//! Dialing a broker of a cluster: TCP, then TLS, then SASL, each step bounded by the context's timeout.

use kproxy_api::config::Cluster;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::sasl::{self, Session};
use crate::wire::Exchange;
use crate::{Context, Error, Result, Stream};

/// Correlation ids for the requests made here; a pool re-authenticates only while nothing is in flight, so they
/// cannot collide with its own.
const FIRST_CORRELATION_ID: i32 = 0x4b50_0000;

/// Connects to the broker at `addr` (`host:port`, as bootstrap servers or Metadata name it) with the cluster's
/// TLS and SASL settings. The stream is ready for the caller's first request (usually ApiVersions).
pub async fn connect(cluster: &Cluster, addr: &str, ctx: &Context) -> Result<Stream> {
    open(cluster, addr, ctx).await.map(|(stream, _)| stream)
}

/// Like [`connect`], and also returns the SASL session (when the cluster uses SASL) so its owner can
/// re-authenticate before [`Session::reauthenticate_at`].
pub async fn open(cluster: &Cluster, addr: &str, ctx: &Context) -> Result<(Stream, Option<Session>)> {
    let host = host(addr)?;
    let tcp = match tokio::time::timeout(ctx.timeout(), TcpStream::connect(addr)).await {
        Err(_) => return Err(Error::Timeout { addr: addr.into(), what: "TCP connect", after: ctx.timeout() }),
        Ok(Err(source)) => return Err(Error::Connect { addr: addr.into(), source }),
        Ok(Ok(tcp)) => tcp,
    };
    // Kafka requests are small and latency-bound; Nagle would hold them back.
    tcp.set_nodelay(true).map_err(|source| Error::Connect { addr: addr.into(), source })?;
    let mut stream = match &cluster.tls {
        None => Stream::Plain(tcp),
        Some(settings) => {
            let config = ctx.tls_config(settings)?;
            let name = crate::tls::server_name(settings, host)?;
            let handshake = TlsConnector::from(config).connect(name.clone(), tcp);
            match tokio::time::timeout(ctx.timeout(), handshake).await {
                Err(_) => {
                    return Err(Error::Timeout { addr: addr.into(), what: "TLS handshake", after: ctx.timeout() });
                }
                Ok(Err(err)) => return Err(crate::tls::handshake_error(addr, settings, &name, err)),
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
            }
        }
    };
    let session = match &cluster.sasl {
        None => None,
        Some(settings) => {
            let credentials = ctx.credentials(settings)?;
            let mut ex = exchange(&mut stream, addr, ctx);
            let versions = sasl::versions(&mut ex).await?;
            let session = sasl::authenticate(&mut ex, settings.mechanism, &credentials, versions).await?;
            tracing::debug!(addr, mechanism = ?settings.mechanism, lifetime = ?session.lifetime(), "authenticated");
            Some(session)
        }
    };
    Ok((stream, session))
}

/// Re-authenticates an established connection (KIP-368) with the credentials the mounted files hold now, and
/// returns the new session. Call it only while no request is in flight on `stream`: the broker's SASL responses
/// must not interleave with the caller's. Uses the same mechanism as `session`, as Kafka requires.
///
/// `stream` is usually the [`Stream`] [`open`] returned; a caller that has split it into reader and writer tasks
/// may pass any byte stream that carries these frames to the broker and its answers back.
pub async fn reauthenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cluster: &Cluster,
    addr: &str,
    ctx: &Context,
    session: &Session,
) -> Result<Session> {
    let settings = cluster.sasl.as_ref().ok_or_else(|| Error::Config("the cluster no longer uses SASL".into()))?;
    if settings.mechanism != session.mechanism() {
        return Err(Error::Config("re-authentication must keep the SASL mechanism; reconnect instead".into()));
    }
    if session.lifetime().is_none() {
        // Such a broker refuses a second handshake (ILLEGAL_SASL_STATE) and never expires the first one.
        return Err(Error::Config("the broker does not expire sessions; there is nothing to re-authenticate".into()));
    }
    let credentials = ctx.credentials(settings)?;
    let mut ex = exchange(stream, addr, ctx);
    sasl::authenticate(&mut ex, session.mechanism(), &credentials, session.versions()).await
}

fn exchange<'a, S>(stream: &'a mut S, addr: &'a str, ctx: &'a Context) -> Exchange<'a, S> {
    Exchange { stream, addr, client_id: ctx.client_id(), timeout: ctx.timeout(), correlation_id: FIRST_CORRELATION_ID }
}

/// The host part of `host:port` or `[v6]:port`, which TLS verifies against.
pub(crate) fn host(addr: &str) -> Result<&str> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| Error::Address(addr.into()))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(Error::Address(addr.into()));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_addresses() {
        assert_eq!(host("kafka-0.kafka:9093").unwrap(), "kafka-0.kafka");
        assert_eq!(host("127.0.0.1:9093").unwrap(), "127.0.0.1");
        assert_eq!(host("[::1]:9093").unwrap(), "::1");
        for bad in ["kafka", ":9093", "kafka:x", "kafka:70000"] {
            assert!(matches!(host(bad), Err(Error::Address(_))), "{bad}");
        }
        let e = Error::Auth { addr: "kafka-0:9093".into(), mechanism: "PLAIN", reason: "wrong password".into() };
        assert_eq!(e.detail(), "SASL PLAIN authentication failed: wrong password");
        assert_eq!(Error::Config("x".into()).detail(), "upstream connection settings: x");
    }
}
