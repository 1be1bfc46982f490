//! `matrix`: which Matrix domain we serve (`matrix.domain`), whether the v1 API is on,
//! and where our own homeserver's client-server API is. Also owns the spec's server-name
//! grammar ([`is_server_name`]), which `server.name` is checked against too.

use super::reader::Section;
use crate::model::is_server_name;

#[derive(Debug, Clone)]
pub struct MatrixConfig {
    /// The homeserver's domain (`server_name`).
    pub domain: String,
    /// Serve `/_matrix/identity/api/v1`.
    pub v1: bool,
    /// `matrix.homeserver.url`: the client-server API of our homeserver, as reached
    /// from here (e.g. `http://localhost:8008`).
    pub homeserver_url: Option<String>,
    /// `matrix.identity.servers`: label → identity server base URLs, for
    /// `forward.servers`.
    pub identity_servers: Vec<(String, Vec<String>)>,
}

const MATRIX_HINTS: &[(&str, &str)] = &[];

pub(crate) fn read_matrix(s: &Section<'_, '_>) -> Option<MatrixConfig> {
    let identity_servers = super::recursion::read_identity_servers(&s.section("identity"));
    s.ignored(
        "v2",
        "ignored: the v2 API is always served (it is the one clients use); matrix.v1 switches v1 off",
    );
    let domain = s.string("domain");
    let v1 = s.bool("v1").unwrap_or(true);
    let hs = s.section("homeserver");
    let homeserver_url = hs.string("url").map(|u| u.trim_end_matches('/').to_owned());
    hs.finish(&[]);
    let mut ok = true;
    if let Some(url) = &homeserver_url {
        if reqwest::Url::parse(url).is_err()
            || !(url.starts_with("http://") || url.starts_with("https://"))
        {
            hs.problem(
                "url",
                format!("{url:?} must be a base URL such as http://localhost:8008"),
            );
            ok = false;
        }
    }
    if let Some(false) = s.bool("v2") {
        s.problem(
            "v2",
            "the v2 API cannot be turned off: clients and homeservers need it",
        );
    }
    s.finish(MATRIX_HINTS);
    let domain = match domain {
        Some(d) if is_server_name(&d) => d,
        Some(d) => {
            s.problem(
                "domain",
                format!("{d:?} is not a valid Matrix server name (host or host:port)"),
            );
            return None;
        }
        None => {
            s.problem(
                "domain",
                "required: the Matrix domain of your homeserver (Synapse's server_name)",
            );
            return None;
        }
    };
    ok.then_some(MatrixConfig {
        domain,
        v1,
        homeserver_url,
        identity_servers,
    })
}
