//! A Twilio Messages API stand-in on 127.0.0.1: checks basic auth, records each SMS
//! (To, From, Body) and answers 201, or 500 when told to fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warp::Filter;

#[derive(Debug, Clone)]
pub struct Sms {
    pub to: String,
    pub from: String,
    pub body: String,
}

pub struct FakeTwilio {
    pub url: String,
    sent: Arc<Mutex<Vec<Sms>>>,
    fail: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

pub const SID: &str = "AC0123";
pub const TOKEN: &str = "twilio-secret";

impl FakeTwilio {
    pub async fn start() -> Self {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(AtomicBool::new(false));
        let (s, f) = (sent.clone(), fail.clone());
        let route = warp::path!("2010-04-01" / "Accounts" / String / "Messages.json")
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::form::<HashMap<String, String>>())
            .map(
                move |sid: String, auth: Option<String>, form: HashMap<String, String>| {
                    use base64::Engine as _;
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
                    );
                    let reply = |status: u16, body: &str| {
                        warp::http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(body.to_owned())
                            .unwrap()
                    };
                    if sid != SID || auth.as_deref() != Some(expected.as_str()) {
                        return reply(401, r#"{"code":20003,"message":"Authenticate"}"#);
                    }
                    if f.load(Ordering::SeqCst) {
                        return reply(500, r#"{"code":30008,"message":"Unknown error"}"#);
                    }
                    s.lock().unwrap().push(Sms {
                        to: form.get("To").cloned().unwrap_or_default(),
                        from: form.get("From").cloned().unwrap_or_default(),
                        body: form.get("Body").cloned().unwrap_or_default(),
                    });
                    reply(201, r#"{"sid":"SM1","status":"queued"}"#)
                },
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            warp::serve(route).incoming(listener).run().await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            sent,
            fail,
            task,
        }
    }

    pub fn fail(&self, yes: bool) {
        self.fail.store(yes, Ordering::SeqCst);
    }

    pub fn sent(&self) -> Vec<Sms> {
        self.sent.lock().unwrap().clone()
    }

    /// Config for mxisd's Twilio connector pointing here.
    pub fn config(&self) -> String {
        format!(
            "    msisdn:\n      connectors:\n        twilio:\n          account_sid: {SID}\n          auth_token: {TOKEN}\n          number: \"+15550001111\"\n          baseUrl: {}\n",
            self.url
        )
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.task.abort();
    }
}
