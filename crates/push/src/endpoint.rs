//! Where webhooks may go: `https` (plain `http` only when the operator allows it), and never to
//! loopback, private, link-local or otherwise non-public addresses unless the operator allows
//! that too. Checked when a subscription is created and again, through the resolver, on every
//! connection, so that a name re-pointed at an internal address later is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endPoint must be an absolute URL")]
    NotAbsolute,
    #[error("endPoint must use https")]
    NotHttps,
    #[error("endPoint must not carry a user name or password")]
    Credentials,
    #[error("endPoint's host {0} cannot be resolved")]
    Unresolvable(String),
    #[error(
        "endPoint's host {0} is a loopback, private or link-local address; webhooks go to public addresses only"
    )]
    Private(String),
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// Checks an endpoint against the policy; resolves its host unless private addresses are allowed.
pub async fn check(text: &str, policy: EndpointPolicy) -> Result<Url, EndpointError> {
    let url = Url::parse(text).map_err(|_| EndpointError::NotAbsolute)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        _ => return Err(EndpointError::NotHttps),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(EndpointError::NotAbsolute)?
        .to_owned();
    if policy.allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| EndpointError::Unresolvable(host.clone()))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(EndpointError::Unresolvable(host));
    }
    if addresses.iter().any(|a| !is_public(a.ip())) {
        return Err(EndpointError::Private(host));
    }
    Ok(url)
}

/// Whether a URL names an IP address the policy refuses (names are refused by [`GuardedResolver`]).
pub fn refuses_literal(url: &Url, policy: EndpointPolicy) -> bool {
    let bare = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    !policy.allow_private && bare.parse::<IpAddr>().is_ok_and(|ip| !is_public(ip))
}

/// The webhook client's resolver: the system's answers, less every non-public address.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(EndpointError::Private(host)) as _);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["8.8.8.8", "151.101.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn the_policy_decides() {
        let strict = EndpointPolicy::default();
        let open = EndpointPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert_eq!(
            check("/relative", strict).await,
            Err(EndpointError::NotAbsolute)
        );
        assert_eq!(
            check("http://8.8.8.8/x", strict).await,
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            check("ftp://8.8.8.8/x", open).await,
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            check("https://u:p@8.8.8.8/x", strict).await,
            Err(EndpointError::Credentials)
        );
        assert!(matches!(
            check("https://127.0.0.1:9/x", strict).await,
            Err(EndpointError::Private(_))
        ));
        assert!(matches!(
            check("https://[::1]/x", strict).await,
            Err(EndpointError::Private(_))
        ));
        assert!(matches!(
            check("https://localhost/x", strict).await,
            Err(EndpointError::Private(_))
        ));
        assert!(check("https://8.8.8.8/x", strict).await.is_ok());
        assert!(check("http://127.0.0.1:9/x", open).await.is_ok());
        let url = Url::parse("https://10.0.0.1/").expect("url");
        assert!(refuses_literal(&url, strict));
        assert!(!refuses_literal(&url, open));
    }
}
