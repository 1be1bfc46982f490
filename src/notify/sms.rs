//! SMS through Twilio's Messages API (form POST with basic auth), or nowhere (`none`).
//! The gateway is a configured destination, so the outbound guard does not apply; its
//! answer is never logged in full (it can quote the number).

use super::NotifyError;
use crate::config::threepid::{MsisdnConfig, SmsConnector};

struct Twilio {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: crate::config::reader::Secret,
    from: String,
}

pub struct SmsSender {
    twilio: Option<Twilio>,
}

impl SmsSender {
    pub fn new(config: &MsisdnConfig) -> Result<Self, String> {
        let twilio = match &config.connector {
            SmsConnector::None => None,
            SmsConnector::Twilio(t) => Some(Twilio {
                client: reqwest::Client::builder()
                    .dns_resolver(crate::dns::ForReqwest::new()?)
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(t.timeout)
                    .user_agent(concat!("mxisd/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the SMS HTTP client: {e}"))?,
                url: format!(
                    "{}/2010-04-01/Accounts/{}/Messages.json",
                    t.base_url,
                    percent_encoding::utf8_percent_encode(
                        &t.account_sid,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ),
                account_sid: t.account_sid.clone(),
                auth_token: t.auth_token.clone(),
                from: t.number.clone(),
            }),
        };
        Ok(Self { twilio })
    }

    pub fn delivers(&self) -> bool {
        self.twilio.is_some()
    }

    /// Sends `text` to the E.164 number `msisdn` (digits, no `+`).
    pub async fn send(&self, msisdn: &str, text: &str) -> Result<(), NotifyError> {
        let shown = crate::logging::redact_address(msisdn);
        let Some(t) = &self.twilio else {
            tracing::info!(to = %shown, "SMS not sent: threepid.medium.msisdn.connector is none");
            return Ok(());
        };
        let to = format!("+{msisdn}");
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", &to)
            .append_pair("From", &t.from)
            .append_pair("Body", text)
            .finish();
        let answer = t
            .client
            .post(&t.url)
            .basic_auth(&t.account_sid, Some(t.auth_token.expose()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                tracing::info!(to = %shown, "SMS accepted by the gateway");
                Ok(())
            }
            Ok(r) => {
                let status = r.status().as_u16();
                // Twilio's error code says what went wrong without quoting the number.
                let code = r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("code").and_then(serde_json::Value::as_u64));
                tracing::warn!(to = %shown, status, code, "SMS refused by the gateway");
                Err(NotifyError::Sms(format!("gateway answered {status}")))
            }
            Err(e) => {
                let class = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                tracing::warn!(to = %shown, error = class, "SMS gateway unreachable");
                Err(NotifyError::Sms(format!("gateway {class} error")))
            }
        }
    }
}
