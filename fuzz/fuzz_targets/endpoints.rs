//! Every endpoint's request parsing, through the real routes over a real store: the
//! first byte picks an endpoint and how the body is labelled, the rest is the body,
//! sent with a valid access token (or an admin's place, for the admin routes). Every
//! answer is a success or a Matrix error ({"errcode","error"}) with a 4xx status:
//! bad input never gets a 500, a panic or a hang.
//!
//! Left out: the endpoints whose body names a server to call (account registration,
//! the client-server passthroughs), so the fuzzer never leaves the machine; outbound
//! DNS goes to a loopback port nothing answers on, as a guard.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use warp::filters::BoxedFilter;
use warp::reply::Response;

const TOKEN: &str = "fuzz-access-token";

/// (router, path): 0 public, 1 internal, 2 admin.
const ENDPOINTS: &[(u8, &str)] = &[
    (0, "/_matrix/identity/v2/lookup"),
    (0, "/_matrix/identity/v2/account/logout"),
    (0, "/_matrix/identity/v2/terms"),
    (0, "/_matrix/identity/v2/validate/email/requestToken"),
    (0, "/_matrix/identity/v2/validate/email/submitToken"),
    (0, "/_matrix/identity/v2/validate/msisdn/requestToken"),
    (0, "/_matrix/identity/v2/validate/msisdn/submitToken"),
    (0, "/_matrix/identity/v2/3pid/bind"),
    (0, "/_matrix/identity/v2/3pid/unbind"),
    (0, "/_matrix/identity/v2/store-invite"),
    (0, "/_matrix/identity/v2/sign-ed25519"),
    (0, "/_matrix/identity/api/v1/bulk_lookup"),
    (0, "/_matrix/identity/api/v1/validate/email/requestToken"),
    (0, "/_matrix/identity/api/v1/validate/email/submitToken"),
    (0, "/_matrix/identity/api/v1/validate/msisdn/requestToken"),
    (0, "/_matrix/identity/api/v1/validate/msisdn/submitToken"),
    (0, "/_matrix/identity/api/v1/3pid/bind"),
    (0, "/_matrix/identity/api/v1/3pid/unbind"),
    (0, "/_matrix/identity/api/v1/store-invite"),
    (0, "/_matrix/identity/api/v1/sign-ed25519"),
    (0, "/_matrix/client/v3/user_directory/search"),
    (1, "/_matrix-internal/identity/v1/check_credentials"),
    (2, "/_mxisd/admin/v1/bindings"),
    (2, "/_mxisd/admin/v1/bindings/remove"),
    (2, "/_mxisd/admin/v1/bindings/import"),
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "text/tab-separated-values",
    "",
];

struct App {
    runtime: tokio::runtime::Runtime,
    routers: [BoxedFilter<(Response,)>; 3],
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        // As the binary does at start: outbound TLS (reqwest, the federation client).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("mxisd-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let yaml = format!(
            "matrix:\n  domain: localhost\nstorage:\n  path: {d}\nkey:\n  path: {d}/keys\nserver:\n  admin:\n    enabled: false\ndirectory:\n  exclude:\n    homeserver: true\noutbound:\n  nameservers: ['127.0.0.1:9']\nrateLimit:\n  enabled: false\n",
            d = dir.display()
        );
        let config = mxisd::config::load_str(&yaml, "fuzz.yaml", dir.clone(), &|_| None)
            .expect("the fuzz config loads");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let built = runtime
            .block_on(mxisd::app::build(config))
            .expect("the services start");
        runtime
            .block_on(built.store.create_token("@fuzz:localhost", TOKEN))
            .expect("an access token");
        let state = built.state;
        let routers = [
            mxisd::http::public_routes(state.clone()),
            mxisd::http::routes::internal_routes(state.clone()),
            mxisd::http::admin_routes(state),
        ];
        let app = App { runtime, routers };
        // Every path is a route: an empty object gets an answer other than "no such
        // endpoint", so the list above stays true to the server.
        for (router, path) in ENDPOINTS {
            let r = send(&app, *router, path, "application/json", b"{}");
            assert!(
                !String::from_utf8_lossy(r.body()).contains("M_UNRECOGNIZED"),
                "{path} is not an endpoint: {r:?}"
            );
        }
        app
    })
}

fn send(app: &App, router: u8, path: &str, content_type: &str, body: &[u8]) -> http::Response<bytes::Bytes> {
    let mut request = warp::test::request()
        .method("POST")
        .path(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body.to_vec());
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    app.runtime
        .block_on(request.reply(&app.routers[usize::from(router)]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let app = app();
    let (router, path) = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let content_type = CONTENT_TYPES[usize::from(pick / 64) % CONTENT_TYPES.len()];
    let r = send(app, router, path, content_type, body);
    let status = r.status().as_u16();
    if status >= 300 {
        assert!((400..500).contains(&status), "{path}: {status} {r:?}");
        let error: serde_json::Value =
            serde_json::from_slice(r.body()).expect("an error answer is JSON");
        assert!(
            error["errcode"].as_str().is_some_and(|c| c.starts_with("M_"))
                && error["error"].is_string(),
            "{path}: {error}"
        );
    }
});
