//! Deep links into the product's web app, so every entity in a result carries a `web_url` and the
//! model never has to guess one.

use chrono::{DateTime, SecondsFormat, Utc};
use url::Url;
use uuid::Uuid;

/// Builds `web_url`s under one base (`--web-url`).
#[derive(Debug, Clone)]
pub struct Links {
    base: Url,
}

impl Links {
    pub fn new(base: Url) -> Self {
        Self { base }
    }

    fn under(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub fn service(&self, name: &str) -> String {
        self.under(&["services", name]).into()
    }

    pub fn services(&self) -> String {
        self.under(&["services"]).into()
    }

    pub fn incident(&self, id: Uuid) -> String {
        self.under(&["incidents", &id.to_string()]).into()
    }

    pub fn alert(&self, id: Uuid) -> String {
        self.under(&["alerts", &id.to_string()]).into()
    }

    pub fn deployment(&self, service: &str, id: Uuid) -> String {
        self.under(&["services", service, "deployments", &id.to_string()])
            .into()
    }

    pub fn metric(
        &self,
        service: &str,
        metric: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> String {
        let mut url = self.under(&["services", service, "metrics", metric]);
        url.query_pairs_mut()
            .append_pair("from", &from.to_rfc3339_opts(SecondsFormat::Secs, true))
            .append_pair("to", &to.to_rfc3339_opts(SecondsFormat::Secs, true));
        url.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_sit_under_the_base_and_encode_names() {
        let links = Links::new(Url::parse("https://app.example.com/acme/").unwrap());
        assert_eq!(
            links.service("checkout-api"),
            "https://app.example.com/acme/services/checkout-api"
        );
        assert_eq!(
            links.service("a b"),
            "https://app.example.com/acme/services/a%20b"
        );
        let bare = Links::new(Url::parse("http://127.0.0.1:8080").unwrap());
        assert_eq!(bare.services(), "http://127.0.0.1:8080/services");
    }
}
