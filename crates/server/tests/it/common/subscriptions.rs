//! Webhook subscriptions through the API.

use serde_json::{Value, json};

use super::{Answer, PATIENCE, RESOURCE, Server, client, eventually, send};

pub const SUBSCRIPTIONS: &str = "/events/api/v1/subscriptions";

pub async fn create_subscription(server: &Server, token: &str, body: &Value) -> Answer {
    send(
        client()
            .post(server.at(SUBSCRIPTIONS))
            .bearer_auth(token)
            .json(body),
    )
    .await
}

/// Creates a subscription that must be accepted; returns it.
pub async fn subscribe(server: &Server, token: &str, body: &Value) -> Value {
    let answer = create_subscription(server, token, body).await;
    assert_eq!(answer.status, 201, "creating {body}: {}", answer.text);
    answer.body
}

/// Creates a subscription that must be accepted and waits until its endpoint answered the
/// handshake; its id.
pub async fn subscribe_validated(server: &Server, token: &str, body: &Value) -> i64 {
    let id = id_of(&subscribe(server, token, body).await);
    wait_validated(server, token, id).await;
    id
}

/// Subscribes `endpoint` to every event of `RESOURCE`, which must be accepted; the subscription's
/// id.
pub async fn subscribe_to(server: &Server, token: &str, endpoint: &str) -> i64 {
    let body = json!({"endPoint": endpoint, "resourceFilter": RESOURCE});
    id_of(&subscribe(server, token, &body).await)
}

pub fn id_of(subscription: &Value) -> i64 {
    subscription["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("integer id in {subscription}"))
}

pub async fn get_subscription(server: &Server, token: &str, id: i64) -> Answer {
    send(
        client()
            .get(server.at(&format!("{SUBSCRIPTIONS}/{id}")))
            .bearer_auth(token),
    )
    .await
}

/// Waits until the endpoint has answered the subscription's validation handshake with 2xx;
/// returns the subscription.
pub async fn wait_validated(server: &Server, token: &str, id: i64) -> Value {
    eventually(
        &format!("subscription {id} to be validated"),
        PATIENCE,
        async || {
            let answer = get_subscription(server, token, id).await;
            if answer.status == 200 && answer.body["validated"] == true {
                Ok(answer.body)
            } else {
                Err(answer.text)
            }
        },
    )
    .await
}

/// The deliveries of a subscription (optionally of one state), newest first; the listing's
/// `count` must match them.
pub async fn deliveries(server: &Server, token: &str, id: i64, state: Option<&str>) -> Vec<Value> {
    let mut url = server.at(&format!("{SUBSCRIPTIONS}/{id}/deliveries"));
    if let Some(state) = state {
        url.push_str(&format!("?state={state}"));
    }
    let answer = send(client().get(&url).bearer_auth(token)).await;
    assert_eq!(answer.status, 200, "{url}: {}", answer.text);
    let list = answer.body["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("deliveries array in {}", answer.text))
        .clone();
    assert_eq!(
        answer.body["count"].as_u64(),
        Some(list.len() as u64),
        "count of {}",
        answer.text
    );
    list
}
