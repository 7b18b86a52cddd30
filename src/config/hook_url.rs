//! A webhook's URL, taken apart for the HTTP client (no URL crate: the
//! client needs the scheme, host, port and request target, and refuses
//! what it would not send as written).

/// `http(s)://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    pub https: bool,
    /// A name or an IP address (an IPv6 one without its brackets).
    pub host: String,
    pub port: u16,
    /// The request target: the path and the query, `/` at least.
    pub target: String,
}

impl HookUrl {
    /// Takes `url` apart; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<HookUrl, String> {
        let (https, rest) = split_scheme(url)?;
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(
                "it holds a user name or password; put credentials in the secret, not the URL"
                    .into(),
            );
        }
        let (host, port) = split_port(authority, if https { 443 } else { 80 })?;
        if host.is_empty() {
            return Err("it names no host".into());
        }
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it holds spaces or control characters; percent-encode them".into());
        }
        Ok(HookUrl {
            https,
            host,
            port,
            target,
        })
    }

    /// The URL to show: without its query, which may carry a token.
    pub fn shown(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let path = match self.target.split_once('?') {
            Some((path, _)) => format!("{path}?…"),
            None => self.target.clone(),
        };
        let default = if self.https { 443 } else { 80 };
        let port = if self.port == default {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!("{scheme}://{host}{port}{path}")
    }
}

/// The URL to show for `url` (see [`HookUrl::shown`]); an unparsable one
/// as a placeholder, never as written.
pub fn shown_url(url: &str) -> String {
    HookUrl::parse(url)
        .map(|u| u.shown())
        .unwrap_or_else(|_| "(an invalid URL)".into())
}

fn split_scheme(url: &str) -> Result<(bool, &str), String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") {
        Ok((true, &url[8..]))
    } else if lower.starts_with("http://") {
        Ok((false, &url[7..]))
    } else {
        Err("it does not start with https://".into())
    }
}

fn split_port(authority: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or("its IPv6 address lacks the closing ']'")?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => default,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("port '{p}' is not a number from 1 to 65535"))?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_taken_apart() {
        let u = HookUrl::parse("https://Hooks.Example.org/in?token=s3cret#x").unwrap();
        assert_eq!(
            u,
            HookUrl {
                https: true,
                host: "hooks.example.org".into(),
                port: 443,
                target: "/in?token=s3cret".into()
            }
        );
        assert_eq!(u.shown(), "https://hooks.example.org/in?…");
        let u = HookUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(u.shown(), "http://[::1]:8080/");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, says) in [
            ("ftp://x", "https://"),
            ("https://user:pw@x/", "password"),
            ("https://x:99999/", "port"),
            ("https:///path", "no host"),
            ("https://x/a b", "spaces"),
        ] {
            let e = HookUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
