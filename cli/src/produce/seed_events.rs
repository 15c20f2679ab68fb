//! The seed's own producer events (no route file) and the poison records mixed into every
//! run: the shapes the loaders were built on, and the tokens `verify` finds in dead letters.

use super::{Outgoing, Rng};

const EVENT_TYPES: [&str; 5] = ["page_view", "click", "purchase", "signup", "logout"];
const PAGES: [&str; 6] = [
    "/",
    "/search",
    "/product/42",
    "/cart",
    "/checkout",
    "/account",
];
const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
    "streamload-produce/1",
];

/// A seed producer event.
pub fn event(rng: &mut Rng, users: u64) -> (String, Outgoing) {
    let event_id = rng.uuid();
    let user = format!("user-{}", rng.below(users));
    let doc = serde_json::json!({
        "event_id": event_id,
        "user_id": user,
        "event_type": EVENT_TYPES[rng.below(5) as usize],
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "payload": {
            "page": PAGES[rng.below(PAGES.len() as u64) as usize],
            "session_id": rng.uuid(),
            "user_agent": AGENTS[rng.below(AGENTS.len() as u64) as usize],
        },
    });
    (
        event_id,
        Outgoing {
            key: user,
            bytes: doc.to_string().into_bytes(),
        },
    )
}

/// A poison record carrying `token`: alternately not JSON and JSON without `event_id`.
pub fn poison(rng: &mut Rng, n: u64) -> (String, Outgoing) {
    let token = format!("poison-{}", rng.uuid());
    let bytes = if n.is_multiple_of(2) {
        format!("{{not json {token}").into_bytes()
    } else {
        serde_json::json!({"user_id": "user-0", "event_type": "click", "note": token})
            .to_string()
            .into_bytes()
    };
    (
        token,
        Outgoing {
            key: "poison".into(),
            bytes,
        },
    )
}
