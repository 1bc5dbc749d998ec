//! Who and what the demo organisations are: people, teams and the services they run, written out
//! by hand so the catalog reads like a real company's.

use crate::domain::kinds::{Role, Tier};

/// One demo organisation, before identifiers and numbers are drawn.
#[derive(Debug)]
pub(crate) struct OrganizationBlueprint {
    pub slug: &'static str,
    pub name: &'static str,
    /// The e-mail domain of its people, e.g. `acme.example`.
    pub domain: &'static str,
    pub users: &'static [UserBlueprint],
    pub teams: &'static [TeamBlueprint],
    pub services: &'static [ServiceBlueprint],
    pub traffic: TrafficShape,
    /// The service carrying the monitor set too close to its daily peak, which fires most days.
    pub noisy_monitor_service: &'static str,
}

#[derive(Debug)]
pub(crate) struct UserBlueprint {
    /// The part of the e-mail address before the `@`; also how the other blueprints name people.
    pub handle: &'static str,
    pub name: &'static str,
    pub role: Role,
}

#[derive(Debug)]
pub(crate) struct TeamBlueprint {
    pub name: &'static str,
    /// The handle of the person who owns the team's services.
    pub lead: &'static str,
}

#[derive(Debug)]
pub(crate) struct ServiceBlueprint {
    pub name: &'static str,
    pub team: &'static str,
    pub tier: Tier,
    pub description: &'static str,
    pub tags: &'static [&'static str],
}

/// When an organisation's customers are busy, in UTC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrafficShape {
    /// The hour of the day (UTC) with the most traffic.
    pub peak_hour: f64,
    /// Traffic on Saturdays and Sundays as a share of a weekday's.
    pub weekend_factor: f64,
}

impl OrganizationBlueprint {
    pub(crate) fn user(&self, handle: &str) -> &UserBlueprint {
        self.users
            .iter()
            .find(|user| user.handle == handle)
            .unwrap_or_else(|| panic!("the catalog of {} names no user {handle}", self.slug))
    }

    pub(crate) fn email(&self, handle: &str) -> String {
        format!("{}@{}", self.user(handle).handle, self.domain)
    }

    pub(crate) fn team(&self, name: &str) -> &TeamBlueprint {
        self.teams
            .iter()
            .find(|team| team.name == name)
            .unwrap_or_else(|| panic!("the catalog of {} names no team {name}", self.slug))
    }

    /// The handles of the people who may act on incidents (responders and admins), responders first.
    pub(crate) fn responders(&self) -> Vec<&'static str> {
        let mut handles: Vec<&'static str> = self
            .users
            .iter()
            .filter(|user| user.role == Role::Responder)
            .map(|user| user.handle)
            .collect();
        handles.extend(
            self.users
                .iter()
                .filter(|user| user.role == Role::Admin)
                .map(|user| user.handle),
        );
        handles
    }

    /// The wiki, dashboard and repository links of a service.
    pub(crate) fn service_links(&self, team: &str, service_name: &str) -> serde_json::Value {
        let domain = self.domain;
        serde_json::json!([
            { "title": "Runbook", "url": format!("https://wiki.{domain}/runbooks/{service_name}") },
            { "title": "Dashboard", "url": format!("https://grafana.{domain}/d/{service_name}") },
            { "title": "Repository", "url": format!("https://git.{domain}/{team}/{service_name}") },
        ])
    }
}

/// The demo organisations, in the order they are created.
pub(crate) static ORGANIZATIONS: [OrganizationBlueprint; 2] = [ACME, GLOBEX];

/// The one the catalog calls `slug`.
#[cfg(test)]
pub(crate) fn organization(slug: &str) -> &'static OrganizationBlueprint {
    ORGANIZATIONS
        .iter()
        .find(|organization| organization.slug == slug)
        .unwrap_or_else(|| panic!("the catalog has no organisation {slug}"))
}

const ACME: OrganizationBlueprint = OrganizationBlueprint {
    slug: "acme",
    name: "Acme Retail",
    domain: "acme.example",
    users: &[
        UserBlueprint {
            handle: "dana",
            name: "Dana Whitfield",
            role: Role::Admin,
        },
        UserBlueprint {
            handle: "marcus",
            name: "Marcus Oyelaran",
            role: Role::Responder,
        },
        UserBlueprint {
            handle: "priya",
            name: "Priya Raman",
            role: Role::Responder,
        },
        UserBlueprint {
            handle: "tomas",
            name: "Tomás Ortega",
            role: Role::Responder,
        },
        UserBlueprint {
            handle: "sam",
            name: "Sam Becker",
            role: Role::Viewer,
        },
    ],
    teams: &[
        TeamBlueprint {
            name: "checkout",
            lead: "marcus",
        },
        TeamBlueprint {
            name: "payments",
            lead: "priya",
        },
        TeamBlueprint {
            name: "discovery",
            lead: "tomas",
        },
        TeamBlueprint {
            name: "fulfillment",
            lead: "dana",
        },
        TeamBlueprint {
            name: "platform",
            lead: "dana",
        },
    ],
    services: &[
        ServiceBlueprint {
            name: "checkout-api",
            team: "checkout",
            tier: Tier::Tier1,
            description: "Turns a cart into an order: validates promotions, reserves stock and hands over to payments.",
            tags: &["customer-facing", "kotlin", "pci"],
        },
        ServiceBlueprint {
            name: "payments-gateway",
            team: "payments",
            tier: Tier::Tier1,
            description: "Authorises and captures card payments through the card processor and the wallet providers.",
            tags: &["customer-facing", "java", "pci"],
        },
        ServiceBlueprint {
            name: "cart-service",
            team: "checkout",
            tier: Tier::Tier1,
            description: "Shopping carts of signed-in and guest customers, kept in Redis.",
            tags: &["customer-facing", "go"],
        },
        ServiceBlueprint {
            name: "search-api",
            team: "discovery",
            tier: Tier::Tier1,
            description: "Product search and autocomplete on top of the Elasticsearch cluster.",
            tags: &["customer-facing", "java", "elasticsearch"],
        },
        ServiceBlueprint {
            name: "catalog-service",
            team: "discovery",
            tier: Tier::Tier2,
            description: "Product catalog: titles, attributes, images and category trees.",
            tags: &["go", "postgres"],
        },
        ServiceBlueprint {
            name: "inventory-service",
            team: "fulfillment",
            tier: Tier::Tier1,
            description: "Stock levels per warehouse, synchronised with the warehouse management system.",
            tags: &["go", "postgres"],
        },
        ServiceBlueprint {
            name: "pricing-service",
            team: "checkout",
            tier: Tier::Tier2,
            description: "Current prices, price lists per market and tax-inclusive display prices.",
            tags: &["kotlin"],
        },
        ServiceBlueprint {
            name: "promotions-service",
            team: "checkout",
            tier: Tier::Tier3,
            description: "Promotion codes, bundles and seasonal campaigns.",
            tags: &["node"],
        },
        ServiceBlueprint {
            name: "recommendations-service",
            team: "discovery",
            tier: Tier::Tier3,
            description: "\"Customers also bought\" and personalised home page rails.",
            tags: &["python", "ml"],
        },
        ServiceBlueprint {
            name: "order-service",
            team: "fulfillment",
            tier: Tier::Tier1,
            description: "Order lifecycle from placement to delivery, and the order history customers see.",
            tags: &["customer-facing", "java", "postgres"],
        },
        ServiceBlueprint {
            name: "fraud-detection",
            team: "payments",
            tier: Tier::Tier2,
            description: "Scores orders for fraud before capture and queues suspicious ones for review.",
            tags: &["python", "ml", "pci"],
        },
        ServiceBlueprint {
            name: "refunds-service",
            team: "payments",
            tier: Tier::Tier2,
            description: "Refunds and store credit for returns and cancelled orders.",
            tags: &["java", "pci"],
        },
        ServiceBlueprint {
            name: "customer-accounts",
            team: "platform",
            tier: Tier::Tier1,
            description: "Customer profiles, addresses and preferences.",
            tags: &["customer-facing", "go", "pii"],
        },
        ServiceBlueprint {
            name: "auth-service",
            team: "platform",
            tier: Tier::Tier1,
            description: "Sign-in, sessions and OAuth tokens for the web shop and the mobile apps.",
            tags: &["customer-facing", "go", "security"],
        },
        ServiceBlueprint {
            name: "notification-service",
            team: "platform",
            tier: Tier::Tier2,
            description: "Order confirmation e-mails, shipping updates and push notifications.",
            tags: &["node", "kafka"],
        },
        ServiceBlueprint {
            name: "reviews-service",
            team: "discovery",
            tier: Tier::Tier3,
            description: "Product ratings and reviews, with moderation.",
            tags: &["ruby"],
        },
        ServiceBlueprint {
            name: "shipping-quotes",
            team: "fulfillment",
            tier: Tier::Tier2,
            description: "Delivery options and prices shown at checkout, from the carriers' rate APIs.",
            tags: &["go"],
        },
        ServiceBlueprint {
            name: "storefront-web",
            team: "checkout",
            tier: Tier::Tier1,
            description: "Server-side rendering of the web shop.",
            tags: &["customer-facing", "node", "frontend"],
        },
        ServiceBlueprint {
            name: "image-resizer",
            team: "platform",
            tier: Tier::Tier3,
            description: "Resizes and caches product images for the CDN.",
            tags: &["rust", "cdn"],
        },
        ServiceBlueprint {
            name: "loyalty-service",
            team: "payments",
            tier: Tier::Tier3,
            description: "Loyalty points earned on orders and redeemed at checkout.",
            tags: &["kotlin"],
        },
    ],
    traffic: TrafficShape {
        peak_hour: 19.0,
        weekend_factor: 0.8,
    },
    noisy_monitor_service: "storefront-web",
};

const GLOBEX: OrganizationBlueprint = OrganizationBlueprint {
    slug: "globex",
    name: "Globex Logistics",
    domain: "globex.example",
    users: &[
        UserBlueprint {
            handle: "olivia",
            name: "Olivia Brandt",
            role: Role::Admin,
        },
        UserBlueprint {
            handle: "raj",
            name: "Raj Patel",
            role: Role::Responder,
        },
        UserBlueprint {
            handle: "mei",
            name: "Mei Chen",
            role: Role::Responder,
        },
        UserBlueprint {
            handle: "jonas",
            name: "Jonas Lindqvist",
            role: Role::Responder,
        },
        UserBlueprint {
            handle: "ana",
            name: "Ana Souza",
            role: Role::Viewer,
        },
    ],
    teams: &[
        TeamBlueprint {
            name: "tracking",
            lead: "raj",
        },
        TeamBlueprint {
            name: "routing",
            lead: "mei",
        },
        TeamBlueprint {
            name: "warehouse",
            lead: "jonas",
        },
        TeamBlueprint {
            name: "carrier-integrations",
            lead: "raj",
        },
        TeamBlueprint {
            name: "platform",
            lead: "olivia",
        },
    ],
    services: &[
        ServiceBlueprint {
            name: "shipment-tracker",
            team: "tracking",
            tier: Tier::Tier1,
            description: "Tracking events of every parcel, and the public tracking page's API.",
            tags: &["customer-facing", "go", "kafka"],
        },
        ServiceBlueprint {
            name: "route-planner",
            team: "routing",
            tier: Tier::Tier1,
            description: "Plans delivery routes for the next day and re-plans them during the day.",
            tags: &["java", "optimisation"],
        },
        ServiceBlueprint {
            name: "warehouse-api",
            team: "warehouse",
            tier: Tier::Tier1,
            description: "Inbound scans, picking and packing at the warehouses.",
            tags: &["go", "postgres"],
        },
        ServiceBlueprint {
            name: "carrier-gateway",
            team: "carrier-integrations",
            tier: Tier::Tier1,
            description: "Hands parcels over to partner carriers and receives their status callbacks.",
            tags: &["kotlin", "partners"],
        },
        ServiceBlueprint {
            name: "fleet-telemetry",
            team: "routing",
            tier: Tier::Tier2,
            description: "GPS positions and vehicle health from the delivery fleet.",
            tags: &["rust", "mqtt"],
        },
        ServiceBlueprint {
            name: "label-printer-service",
            team: "warehouse",
            tier: Tier::Tier3,
            description: "Renders shipping labels and sends them to the warehouse printers.",
            tags: &["python"],
        },
        ServiceBlueprint {
            name: "customs-docs",
            team: "carrier-integrations",
            tier: Tier::Tier2,
            description: "Customs declarations and commercial invoices for cross-border parcels.",
            tags: &["java", "compliance"],
        },
        ServiceBlueprint {
            name: "eta-predictor",
            team: "tracking",
            tier: Tier::Tier2,
            description: "Predicts delivery windows from route progress and historical data.",
            tags: &["python", "ml"],
        },
        ServiceBlueprint {
            name: "dock-scheduler",
            team: "warehouse",
            tier: Tier::Tier2,
            description: "Books loading dock slots for inbound and outbound trucks.",
            tags: &["go"],
        },
        ServiceBlueprint {
            name: "billing-service",
            team: "platform",
            tier: Tier::Tier1,
            description: "Invoices shippers monthly and per parcel, with surcharges.",
            tags: &["java", "postgres", "finance"],
        },
        ServiceBlueprint {
            name: "customer-portal",
            team: "tracking",
            tier: Tier::Tier1,
            description: "The shippers' portal: book pickups, print labels, follow shipments.",
            tags: &["customer-facing", "node", "frontend"],
        },
        ServiceBlueprint {
            name: "notification-service",
            team: "platform",
            tier: Tier::Tier2,
            description: "Delivery notifications by e-mail and SMS to recipients.",
            tags: &["node", "kafka"],
        },
        ServiceBlueprint {
            name: "address-validation",
            team: "routing",
            tier: Tier::Tier2,
            description: "Normalises and validates delivery addresses before routing.",
            tags: &["go"],
        },
        ServiceBlueprint {
            name: "inventory-sync",
            team: "warehouse",
            tier: Tier::Tier2,
            description: "Keeps stock positions in step with the shippers' ERP systems.",
            tags: &["kotlin", "batch"],
        },
        ServiceBlueprint {
            name: "rate-quotes",
            team: "carrier-integrations",
            tier: Tier::Tier1,
            description: "Prices a shipment across carriers and service levels.",
            tags: &["customer-facing", "go"],
        },
        ServiceBlueprint {
            name: "driver-app-api",
            team: "routing",
            tier: Tier::Tier1,
            description: "Backend of the drivers' mobile app: stops, proof of delivery, messages.",
            tags: &["kotlin", "mobile"],
        },
        ServiceBlueprint {
            name: "proof-of-delivery",
            team: "tracking",
            tier: Tier::Tier2,
            description: "Stores signatures and photos taken at delivery.",
            tags: &["go", "s3"],
        },
        ServiceBlueprint {
            name: "geocoder",
            team: "routing",
            tier: Tier::Tier3,
            description: "Turns addresses into coordinates, with a cache in front of the provider.",
            tags: &["rust"],
        },
        ServiceBlueprint {
            name: "auth-service",
            team: "platform",
            tier: Tier::Tier1,
            description: "Sign-in for shippers, drivers and staff; API keys of integrations.",
            tags: &["go", "security"],
        },
        ServiceBlueprint {
            name: "reporting-service",
            team: "platform",
            tier: Tier::Tier3,
            description: "Monthly delivery performance reports for shippers.",
            tags: &["python", "batch"],
        },
    ],
    traffic: TrafficShape {
        peak_hour: 13.0,
        weekend_factor: 0.55,
    },
    noisy_monitor_service: "fleet-telemetry",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn is_valid_service_name(name: &str) -> bool {
        let bytes = name.as_bytes();
        (1..=63).contains(&bytes.len())
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|&byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    }

    #[test]
    fn every_organisation_is_complete_and_consistent() {
        for organization in &ORGANIZATIONS {
            let roles: Vec<Role> = organization.users.iter().map(|user| user.role).collect();
            assert!(roles.contains(&Role::Admin), "{}", organization.slug);
            assert!(
                roles
                    .iter()
                    .filter(|&&role| role == Role::Responder)
                    .count()
                    >= 2
            );
            assert!(roles.contains(&Role::Viewer));
            assert!((4..=5).contains(&organization.teams.len()));
            assert_eq!(organization.services.len(), 20);
            for team in organization.teams {
                organization.user(team.lead);
            }
            for service in organization.services {
                // The longest numbered variant, `-100`, must still be a valid name.
                assert!(
                    is_valid_service_name(&format!("{}-100", service.name)),
                    "{}",
                    service.name
                );
                organization.team(service.team);
            }
            let mut names: Vec<&str> = organization
                .services
                .iter()
                .map(|service| service.name)
                .collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(
                names.len(),
                organization.services.len(),
                "service names repeat"
            );
            assert!(names.contains(&organization.noisy_monitor_service));
        }
    }
}
