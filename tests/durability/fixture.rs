//! A tenant with keys, a branded collection and tokens in every state, and
//! the checks that everything acknowledged reads back the same after a
//! restart.

use crate::api::{id_of, Api};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Merchants the fixture's collection accepts.
pub const MERCHANTS: [&str; 2] = ["m-1", "m-2"];

/// A redeem that won, and what it was answered.
#[derive(Debug, Clone)]
pub struct Redemption {
    /// The token.
    pub token_id: String,
    /// The winning request's body.
    pub request: Value,
    /// Its 200 body.
    pub response: Value,
}

/// A hold left live, and the request that placed it.
#[derive(Debug, Clone)]
pub struct LiveHold {
    /// The token.
    pub token_id: String,
    /// The hold request's body.
    pub request: Value,
    /// Its 201 body.
    pub response: Value,
}

/// A void that was acknowledged.
#[derive(Debug, Clone)]
pub struct Voided {
    /// The token.
    pub token_id: String,
    /// The void request's body (with its `idempotencyKey`).
    pub request: Value,
}

/// An idempotent create that was acknowledged.
#[derive(Debug, Clone)]
pub struct IdempotentCreate {
    /// The request body (with its `idempotencyKey`).
    pub body: Value,
    /// The token created.
    pub token_id: String,
}

/// Everything a user created and was told about.
pub struct Fixture {
    /// The account.
    pub account_id: String,
    /// A `*` key.
    pub key: String,
    /// A `token:read` key.
    pub reader_key: String,
    /// A key that was revoked.
    pub revoked_key: String,
    /// The collection's id.
    pub collection_id: String,
    /// Every API key string handed out (none may reach the disk).
    pub secrets: Vec<String>,
    /// Redeems that won.
    pub redemptions: Vec<Redemption>,
    /// Tokens deleted.
    pub deleted: Vec<String>,
    /// Idempotent creates.
    pub idempotent: Vec<IdempotentCreate>,
    /// Holds left live.
    pub held: Vec<LiveHold>,
    /// Voids.
    pub voided: Vec<Voided>,
    /// Tokens still active, in creation order (candidates for later changes).
    pub active: Vec<String>,
    /// Rounds of writes done.
    rounds: usize,
    /// What the server answered before the restart, by what was asked.
    pub expected: Expected,
}

/// The state as read back through the API.
#[derive(Default, Clone, PartialEq)]
pub struct Expected {
    /// `GET /api/tokens/{id}` by id.
    pub tokens: BTreeMap<String, Value>,
    /// `GET /api/collections/{id}`.
    pub collection: Value,
    /// `GET /api/accounts/{id}/api-keys`.
    pub keys: Value,
}

impl Fixture {
    /// Creates the tenant: an account, a `*` key, a read-only key, a revoked
    /// key and a collection with branding, merchants, expiry and a schema.
    pub async fn setup(api: &Api, name: &str) -> Fixture {
        let account = api.create_account(name).await;
        let account_id = id_of(&account);
        let all = api.create_key(&account_id, "issuer", &["*"]).await;
        let reader = api.create_key(&account_id, "reader", &["token:read"]).await;
        let revoked = api.create_key(&account_id, "revoked", &["*"]).await;
        api.delete(
            &format!("/api/accounts/{account_id}/api-keys/{}", id_of(&revoked)),
            api.admin(),
        )
        .await
        .expect(204);
        let key = all["key"].as_str().unwrap().to_owned();
        let collection = api
            .post(
                "/api/collections",
                &key,
                &json!({
                    "name": "Coffee",
                    "description": "one coffee",
                    "issuer": "Centraperk Cafe",
                    "issuerImg": "https://example.com/issuer.png",
                    "img": "https://example.com/coffee.png",
                    "issuerWebsite": "https://example.com",
                    "value": [{"currency": "NZD", "amount": "5.00"}],
                    "merchants": MERCHANTS,
                    "tokenExpiresAfter": 30 * 24 * 3600,
                    "dataSchema": {
                        "type": ["object", "null"],
                        "properties": {"n": {"type": "integer"}}
                    }
                }),
            )
            .await
            .expect(201)
            .body;
        let secrets = [&all, &reader, &revoked]
            .iter()
            .map(|k| k["key"].as_str().unwrap().to_owned())
            .collect();
        Fixture {
            account_id,
            reader_key: reader["key"].as_str().unwrap().to_owned(),
            revoked_key: revoked["key"].as_str().unwrap().to_owned(),
            key,
            collection_id: id_of(&collection),
            secrets,
            redemptions: Vec::new(),
            deleted: Vec::new(),
            idempotent: Vec::new(),
            held: Vec::new(),
            voided: Vec::new(),
            active: Vec::new(),
            rounds: 0,
            expected: Expected::default(),
        }
    }

    fn token_body(&self, round: usize, n: usize) -> Value {
        json!({
            "collectionId": self.collection_id,
            "type": "card",
            "description": format!("round {round} token {n}"),
            "data": {"n": n, "round": round, "secret": format!("pan-{round}-{n}")},
            "metadata": {"order": format!("A-{round}-{n}"), "till": "3"},
            "encryption": {"cek": {"key": "wrapped-cek", "alg": "AES"},
                           "kek": {"key": "kek-1", "alg": "RSA"}},
            "activeFrom": "2020-01-01T00:00:00.000Z",
            "expiresAt": "2099-01-01T00:00:00.000Z"
        })
    }

    /// One round of writes, each acknowledged: tokens through the single,
    /// children and batch routes, an idempotent create, a redeem and a delete
    /// of new tokens, and a redeem and a delete of tokens of earlier rounds;
    /// then the lifecycle: a hold captured, a hold left live, a hold
    /// released, and a redemption voided and redeemed again.
    pub async fn write_round(&mut self, api: &Api) {
        self.rounds += 1;
        let round = self.rounds;
        let key = self.key.clone();
        let older: Vec<String> = self.active.clone();
        let mut new_ids = Vec::new();

        let single = api
            .post("/api/tokens", &key, &self.token_body(round, 0))
            .await
            .expect(201);
        new_ids.push(id_of(&single.body));

        let mut parent = self.token_body(round, 1);
        parent["children"] = json!([
            {"collectionId": self.collection_id, "data": {"n": 11}, "metadata": {"child": "a"}},
            {"collectionId": self.collection_id, "data": {"n": 12}}
        ]);
        let parent = api.post("/api/tokens", &key, &parent).await.expect(201);
        let children = parent.body["children"].as_array().expect("children");
        assert_eq!(children.len(), 2, "{}", parent.body);
        new_ids.push(id_of(&parent.body));
        new_ids.extend(children.iter().map(|c| c.as_str().unwrap().to_owned()));

        let batch: Vec<Value> = (2..6).map(|n| self.token_body(round, n)).collect();
        let batch = api
            .post("/api/tokens/batch", &key, &json!({ "tokens": batch }))
            .await
            .expect(201);
        new_ids.extend(batch.body["data"].as_array().unwrap().iter().map(id_of));

        let mut body = self.token_body(round, 6);
        body["idempotencyKey"] = json!(format!("create-{round}"));
        let created = api.post("/api/tokens", &key, &body).await.expect(201);
        let token_id = id_of(&created.body);
        let again = api.post("/api/tokens", &key, &body).await.expect(200);
        assert!(again.replayed(), "a replayed create says so");
        assert_eq!(id_of(&again.body), token_id);
        self.idempotent.push(IdempotentCreate { body, token_id });

        self.active.extend(new_ids.iter().cloned());
        // A new token and, from the second round on, one of an earlier round
        // are redeemed; likewise deleted.
        let mut to_redeem = vec![new_ids[0].clone()];
        let mut to_delete = vec![new_ids[2].clone()];
        if let Some(old) = older.first() {
            to_redeem.push(old.clone());
        }
        if let Some(old) = older.get(1) {
            to_delete.push(old.clone());
        }
        for (i, id) in to_redeem.into_iter().enumerate() {
            let request = json!({
                "merchantId": MERCHANTS[i % 2],
                "idempotencyKey": format!("pos-{round}-{i}")
            });
            let resp = api.redeem(&key, &id, &request).await.expect(200);
            assert_eq!(resp.body["status"], "redeemed");
            assert!(!resp.replayed());
            self.active.retain(|t| *t != id);
            self.redemptions.push(Redemption {
                token_id: id,
                request,
                response: resp.body,
            });
        }
        for id in to_delete {
            api.delete_token(&key, &id).await.expect(204);
            self.active.retain(|t| *t != id);
            self.deleted.push(id);
        }
        self.lifecycle_round(api, round, &new_ids).await;
    }

    /// The lifecycle part of a round, on new tokens 3, 4, 5 and 0.
    async fn lifecycle_round(&mut self, api: &Api, round: usize, new_ids: &[String]) {
        let key = self.key.clone();
        let hold_path = |id: &str| format!("/api/tokens/{id}/holds");

        let id = new_ids[3].clone();
        let request =
            json!({"merchantId": MERCHANTS[0], "idempotencyKey": format!("hold-{round}-a")});
        let held = api.post(&hold_path(&id), &key, &request).await.expect(201);
        let hold_id = held.body["hold"]["id"].as_str().unwrap().to_owned();
        let captured = api
            .post(
                &format!("{}/{hold_id}/capture", hold_path(&id)),
                &key,
                &json!({}),
            )
            .await
            .expect(200);
        assert_eq!(captured.body["redemption"]["holdId"], json!(hold_id));
        self.active.retain(|t| *t != id);
        // A capture redeems under the hold's merchant and key: repeating
        // them as a redeem is a replay of the capture.
        self.redemptions.push(Redemption {
            token_id: id,
            request,
            response: captured.body,
        });

        let id = new_ids[4].clone();
        let request =
            json!({"merchantId": MERCHANTS[1], "idempotencyKey": format!("hold-{round}-b")});
        let held = api.post(&hold_path(&id), &key, &request).await.expect(201);
        assert_eq!(held.body["status"], "held");
        self.active.retain(|t| *t != id);
        self.held.push(LiveHold {
            token_id: id,
            request,
            response: held.body,
        });

        let id = new_ids[5].clone();
        let held = api
            .post(&hold_path(&id), &key, &json!({"merchantId": MERCHANTS[0]}))
            .await
            .expect(201);
        let hold_id = held.body["hold"]["id"].as_str().unwrap();
        let released = api
            .post(
                &format!("{}/{hold_id}/release", hold_path(&id)),
                &key,
                &json!({}),
            )
            .await
            .expect(200);
        assert_eq!(released.body["status"], "active");

        let id = new_ids[0].clone();
        let request = json!({"reason": "refund", "idempotencyKey": format!("void-{round}")});
        let voided = api
            .post(&format!("/api/tokens/{id}/redemption/void"), &key, &request)
            .await
            .expect(200);
        assert_eq!(voided.body["status"], "active");
        self.voided.push(Voided {
            token_id: id.clone(),
            request,
        });
        let again = json!({"merchantId": MERCHANTS[1], "idempotencyKey": format!("again-{round}")});
        let redeemed = api.redeem(&key, &id, &again).await.expect(200);
        assert_eq!(
            redeemed.body["voidedRedemptions"].as_array().map(Vec::len),
            Some(1)
        );
        let winner = self
            .redemptions
            .iter_mut()
            .find(|r| r.token_id == id)
            .expect("token 0 was redeemed this round");
        winner.request = again;
        winner.response = redeemed.body;
    }

    /// Reads back everything (each read waits for what it shows to be
    /// durable) as the expectation for after the restart.
    pub async fn capture(&mut self, api: &Api) {
        self.expected = self.read(api).await;
        let redeemed = self
            .expected
            .tokens
            .values()
            .filter(|t| t["status"] == "redeemed")
            .count();
        assert_eq!(redeemed, self.redemptions.len());
    }

    async fn read(&self, api: &Api) -> Expected {
        let mut tokens = BTreeMap::new();
        for token in api.all_tokens(&self.key).await {
            let id = id_of(&token);
            let one = api.get_token(&self.key, &id).await.expect(200);
            tokens.insert(id, one.body);
        }
        let collection = api
            .get(
                &format!("/api/collections/{}", self.collection_id),
                &self.key,
            )
            .await
            .expect(200)
            .body;
        let keys = api.list_keys(&self.account_id).await.expect(200).body;
        Expected {
            tokens,
            collection,
            keys,
        }
    }

    /// Checks, on a restarted server, that everything captured reads back
    /// the same and behaves as before. Changes nothing.
    pub async fn verify(&self, api: &Api) {
        assert!(!self.expected.tokens.is_empty(), "capture() first");
        let now = self.read(api).await;
        assert_eq!(
            now.tokens.keys().collect::<Vec<_>>(),
            self.expected.tokens.keys().collect::<Vec<_>>(),
            "the same tokens exist"
        );
        for (id, before) in &self.expected.tokens {
            assert_eq!(&now.tokens[id], before, "token {id} reads back the same");
        }
        assert_eq!(now.collection, self.expected.collection);
        assert_eq!(now.keys, self.expected.keys, "the same API keys");

        // Keys: the old ones authenticate with their scopes, the revoked one
        // stays revoked.
        api.get("/api/collections", &self.key).await.expect(200);
        let any = self.expected.tokens.keys().next().unwrap();
        api.get_token(&self.reader_key, any).await.expect(200);
        api.post(
            "/api/tokens",
            &self.reader_key,
            &json!({"collectionId": self.collection_id}),
        )
        .await
        .expect_error(403, "PERMISSION_DENIED");
        api.get("/api/collections", &self.revoked_key)
            .await
            .expect_error(401, "UNAUTHENTICATED");

        for r in &self.redemptions {
            let redeemed_at = r.response["redemption"]["redeemedAt"].as_str().unwrap();
            let other = json!({"merchantId": "m-1", "idempotencyKey": "another-till"});
            let conflict = api
                .redeem(&self.key, &r.token_id, &other)
                .await
                .expect_error(409, "TOKEN_ALREADY_REDEEMED");
            let message = conflict.body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(redeemed_at),
                "the 409 names the original redeemedAt {redeemed_at}: {message}"
            );
            let replay = api.redeem(&self.key, &r.token_id, &r.request).await;
            let replay = replay.expect(200);
            assert!(replay.replayed(), "the winning request replays");
            assert_eq!(replay.body, r.response, "the replay has the same body");
        }
        for id in &self.deleted {
            let token = &now.tokens[id];
            assert_eq!(token["status"], "deleted", "{token}");
            assert!(token["deletedAt"].is_string(), "{token}");
            assert_eq!(token["data"], Value::Null, "{token}");
            assert_eq!(token["encryption"], Value::Null, "{token}");
            api.redeem(&self.key, id, &json!({"merchantId": "m-1"}))
                .await
                .expect_error(410, "TOKEN_DELETED");
        }
        for h in &self.held {
            assert_eq!(now.tokens[&h.token_id]["status"], "held");
            let replay = api
                .post(
                    &format!("/api/tokens/{}/holds", h.token_id),
                    &self.key,
                    &h.request,
                )
                .await
                .expect(200);
            assert!(replay.replayed(), "the live hold's request replays");
            assert_eq!(replay.body, h.response, "the replay has the same body");
            api.redeem(&self.key, &h.token_id, &json!({"merchantId": "m-1"}))
                .await
                .expect_error(409, "TOKEN_HELD");
        }
        for v in &self.voided {
            let replay = api
                .post(
                    &format!("/api/tokens/{}/redemption/void", v.token_id),
                    &self.key,
                    &v.request,
                )
                .await
                .expect(200);
            assert!(replay.replayed(), "a void's key replays");
            let voided = &now.tokens[&v.token_id]["voidedRedemptions"];
            assert!(
                voided.as_array().is_some_and(|l| l
                    .iter()
                    .any(|r| r["voidIdempotencyKey"] == v.request["idempotencyKey"])),
                "the void is kept: {voided}"
            );
        }
        for c in &self.idempotent {
            let replay = api
                .post("/api/tokens", &self.key, &c.body)
                .await
                .expect(200);
            assert!(replay.replayed());
            assert_eq!(id_of(&replay.body), c.token_id);
            let mut other = c.body.clone();
            other["description"] = json!("another body");
            api.post("/api/tokens", &self.key, &other)
                .await
                .expect_error(409, "TOKEN_ALREADY_CREATED");
        }
        for id in &self.active {
            let token = &now.tokens[id];
            assert_eq!(token["status"], "active", "{token}");
            assert!(
                token["data"].is_object(),
                "active tokens keep data: {token}"
            );
        }
    }

    /// Number of tokens captured.
    pub fn token_count(&self) -> usize {
        self.expected.tokens.len()
    }
}
