//! Users, API tokens, agent secrets and the audit log.

use serde_json::json;
use testfleet_core::time_fmt::format_millis;
use testfleet_store::{Store, StoreError, StoredAgentSecret, StoredToken, StoredUser};

use crate::support::as_json;

contract_tests!(
    users_are_added_replaced_and_removed,
    tokens_are_unique_and_revoked_once,
    agent_secrets_rotate_and_revoke,
    audit_log_lists_newest_first,
);

const ARGON: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

async fn users_are_added_replaced_and_removed(store: Store) {
    assert_eq!(store.user("alice").await.unwrap(), None);
    assert!(store.users().await.unwrap().is_empty());
    store.put_user("alice", ARGON, true, 1_000).await.unwrap();
    assert_eq!(
        store.user("alice").await.unwrap(),
        Some(StoredUser {
            name: "alice".into(),
            password_hash: ARGON.into(),
            admin: true,
            digest_realm: None,
            digest_ha1_md5: None,
            digest_ha1_sha256: None,
        })
    );

    // With Digest credentials from the same password.
    let digest = StoredUser {
        name: "bob".into(),
        password_hash: ARGON.into(),
        admin: false,
        digest_realm: Some("testfleet".into()),
        digest_ha1_md5: Some("939e7578ed9e3c518a452acee763bce9".into()),
        digest_ha1_sha256: Some(
            "7987c9bc0ae0a3ebfd48e9f4c23a8ed6d1fc7fc7db4ba3b81f0ef2cbfc0c3c6c".into(),
        ),
    };
    store.save_user(&digest, 2_000).await.unwrap();
    assert_eq!(store.user("bob").await.unwrap(), Some(digest.clone()));
    assert_eq!(
        as_json(store.users().await.unwrap()),
        json!([
            {"name": "alice", "admin": true, "created_at": format_millis(1_000), "digest": false},
            {"name": "bob", "admin": false, "created_at": format_millis(2_000), "digest": true},
        ])
    );

    // A new password without Digest drops the old HA1 values.
    store
        .put_user("bob", "$argon2id$new", true, 3_000)
        .await
        .unwrap();
    let bob = store.user("bob").await.unwrap().unwrap();
    assert_eq!(bob.password_hash, "$argon2id$new");
    assert!(bob.admin);
    assert_eq!(bob.digest_realm, None);
    assert_eq!(bob.digest_ha1_md5, None);
    assert_eq!(bob.digest_ha1_sha256, None);
    assert_eq!(
        as_json(store.users().await.unwrap())[1]["digest"],
        json!(false)
    );

    store.remove_user("alice").await.unwrap();
    assert_eq!(store.user("alice").await.unwrap(), None);
    assert!(matches!(
        store.remove_user("alice").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.users().await.unwrap().len(), 1);
}

async fn tokens_are_unique_and_revoked_once(store: Store) {
    let (h1, h2, h3) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    store.add_token("ci", &h1, false, 1_000).await.unwrap();
    store.add_token("release", &h2, true, 2_000).await.unwrap();
    // Names and hashes are unique.
    assert!(matches!(
        store.add_token("ci", &h3, false, 3_000).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.add_token("other", &h1, false, 3_000).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.token_by_hash(&h1).await.unwrap(),
        Some(StoredToken {
            name: "ci".into(),
            admin: false,
            revoked: false,
        })
    );
    assert_eq!(store.token_by_hash(&h3).await.unwrap(), None);

    store.revoke_token("ci", 4_000).await.unwrap();
    assert_eq!(
        store.token_by_hash(&h1).await.unwrap(),
        Some(StoredToken {
            name: "ci".into(),
            admin: false,
            revoked: true,
        })
    );
    assert!(matches!(
        store.revoke_token("ci", 5_000).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_token("nope", 5_000).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        as_json(store.tokens().await.unwrap()),
        json!([
            {"name": "ci", "admin": false, "created_at": format_millis(1_000),
             "revoked_at": format_millis(4_000)},
            {"name": "release", "admin": true, "created_at": format_millis(2_000),
             "revoked_at": null},
        ])
    );
}

async fn agent_secrets_rotate_and_revoke(store: Store) {
    assert_eq!(store.agent_secret("linux-01").await.unwrap(), None);
    store
        .put_agent_secret("linux-01", "hash-1", 1_000)
        .await
        .unwrap();
    store
        .put_agent_secret("mac-01", "hash-m", 1_500)
        .await
        .unwrap();
    assert_eq!(
        store.agent_secret("linux-01").await.unwrap(),
        Some(StoredAgentSecret {
            secret_hash: "hash-1".into(),
            revoked: false,
        })
    );
    assert_eq!(
        store.agent_secrets_changed_since(500).await.unwrap(),
        vec!["linux-01".to_owned(), "mac-01".to_owned()]
    );
    // Strictly after.
    assert_eq!(
        store.agent_secrets_changed_since(1_000).await.unwrap(),
        vec!["mac-01".to_owned()]
    );
    assert!(
        store
            .agent_secrets_changed_since(1_500)
            .await
            .unwrap()
            .is_empty()
    );

    store.revoke_agent_secret("linux-01", 2_000).await.unwrap();
    assert_eq!(
        store.agent_secret("linux-01").await.unwrap(),
        Some(StoredAgentSecret {
            secret_hash: "hash-1".into(),
            revoked: true,
        })
    );
    assert_eq!(
        store.agent_secrets_changed_since(1_500).await.unwrap(),
        vec!["linux-01".to_owned()]
    );
    assert!(matches!(
        store.revoke_agent_secret("linux-01", 2_500).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_agent_secret("unknown", 2_500).await,
        Err(StoreError::NotFound(_))
    ));

    // Rotation replaces the hash and lifts the revocation.
    store
        .put_agent_secret("linux-01", "hash-2", 3_000)
        .await
        .unwrap();
    assert_eq!(
        store.agent_secret("linux-01").await.unwrap(),
        Some(StoredAgentSecret {
            secret_hash: "hash-2".into(),
            revoked: false,
        })
    );
    assert_eq!(
        store.agent_secrets_changed_since(2_500).await.unwrap(),
        vec!["linux-01".to_owned()]
    );
}

async fn audit_log_lists_newest_first(store: Store) {
    assert!(store.audit_log(10).await.unwrap().is_empty());
    store
        .audit(
            "ci",
            Some("10.0.0.7"),
            "job.submit",
            Some("job 1"),
            None,
            1_000,
        )
        .await
        .unwrap();
    store
        .audit(
            "admin",
            Some("192.0.2.1"),
            "job.cancel",
            Some("job 1"),
            Some(&json!({"reason": "stuck", "tasks": 3})),
            2_000,
        )
        .await
        .unwrap();
    store
        .audit("admin", None, "token.revoke", None, None, 3_000)
        .await
        .unwrap();
    assert_eq!(
        as_json(store.audit_log(2).await.unwrap()),
        json!([
            {"at": format_millis(3_000), "actor": "admin", "peer": null,
             "action": "token.revoke", "target": null, "detail": null},
            {"at": format_millis(2_000), "actor": "admin", "peer": "192.0.2.1",
             "action": "job.cancel", "target": "job 1",
             "detail": {"reason": "stuck", "tasks": 3}},
        ])
    );
    let all = as_json(store.audit_log(10).await.unwrap());
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    assert_eq!(all[2]["action"], "job.submit");
    assert_eq!(all[2]["peer"], "10.0.0.7");
}
