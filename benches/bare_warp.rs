//! A bare warp server answering `{}` to every request: the HTTP stack's own rate, the
//! yardstick `benches/load.sh` compares mxisd's lookups with. Serves only when
//! `BARE_WARP_PORT` is set (so `cargo bench` passes over it), on 127.0.0.1, until killed.

use warp::Filter;

fn main() {
    let Some(port) = std::env::var("BARE_WARP_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        println!("bare_warp: set BARE_WARP_PORT to serve (benches/load.sh does)");
        return;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bare_warp: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async move {
        let route = warp::any().map(|| {
            warp::http::Response::builder()
                .header("content-type", "application/json")
                .body("{}")
        });
        warp::serve(route).run(([127, 0, 0, 1], port)).await;
    });
}
