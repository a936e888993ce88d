//! `POST /api/contacts/import`: a CSV file of contacts, upserted by normalized phone.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const CSV: &str = "text/csv";

/// Quoted commas, the usual phone formats, repeated numbers and invalid rows.
const FILE: &str = "phone,name,tags\r\n\
\"+57 300 123 4567\",\"Pérez, Ana\",\"vip;bogota\"\r\n\
3001234568,Luis,vip\r\n\
+57 300-123-4569,,\r\n\
(300) 123 4570,Marta,\"bogota; news ;vip\"\r\n\
3061234567,Bad,vip\r\n\
300 123 4567,Ana again,other\r\n\
3001234571,too,many,fields\r\n\
+573001234568,,\r\n\
3091234567,,\r\n";

fn errors_of_file() -> Value {
    json!([
        {"row": 5, "phone": "3061234567", "reason": "not a valid phone number"},
        {"row": 7, "phone": "3001234571", "reason": "expected 3 fields (phone,name,tags), found 4"},
        {"row": 9, "phone": "3091234567", "reason": "not a valid phone number"},
    ])
}

async fn import_ok(app: &TestApp, token: &str, body: &str) -> Value {
    let r = app.import_contacts(token, CSV, body).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// The account's tags, id → name.
async fn tag_names(app: &TestApp, token: &str) -> BTreeMap<String, String> {
    let tags: Value = app.get("/api/tags", token).await.json().await.unwrap();
    tags["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The account's contacts as phone → (name, sorted tag names).
async fn address_book(
    app: &TestApp,
    token: &str,
) -> BTreeMap<String, (Option<String>, Vec<String>)> {
    let names = tag_names(app, token).await;
    app.all_contacts(token)
        .await
        .iter()
        .map(|c| {
            let mut tags: Vec<String> = c["tagIds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| names[id.as_str().unwrap()].clone())
                .collect();
            tags.sort();
            (
                c["phone"].as_str().unwrap().to_owned(),
                (c["name"].as_str().map(str::to_owned), tags),
            )
        })
        .collect()
}

fn entry(
    phone: &str,
    name: Option<&str>,
    tags: &[&str],
) -> (String, (Option<String>, Vec<String>)) {
    (
        phone.to_owned(),
        (
            name.map(str::to_owned),
            tags.iter().map(|t| (*t).to_owned()).collect(),
        ),
    )
}

#[actix_web::test]
async fn a_csv_import_creates_contacts_and_tags_and_a_second_import_updates_them() {
    let app = spawn_app().await;
    let token = app.new_account(10, "CO", true).await;

    let report = import_ok(&app, &token, FILE).await;
    assert_eq!(
        report,
        json!({"imported": 4, "updated": 0, "invalid": 3, "duplicates": 2, "errors": errors_of_file()})
    );
    let first = BTreeMap::from([
        entry("+573001234567", Some("Pérez, Ana"), &["bogota", "vip"]),
        entry("+573001234568", Some("Luis"), &["vip"]),
        entry("+573001234569", None, &[]),
        entry("+573001234570", Some("Marta"), &["bogota", "news", "vip"]),
    ]);
    assert_eq!(address_book(&app, &token).await, first);
    // Tags named by rows that were not applied (invalid, repeated) are not created.
    let mut tags: Vec<String> = tag_names(&app, &token).await.into_values().collect();
    tags.sort();
    assert_eq!(tags, ["bogota", "news", "vip"]);

    // The same file again: every contact exists, nothing changes.
    let report = import_ok(&app, &token, FILE).await;
    assert_eq!(
        report,
        json!({"imported": 0, "updated": 4, "invalid": 3, "duplicates": 2, "errors": errors_of_file()})
    );
    assert_eq!(address_book(&app, &token).await, first);
    assert_eq!(tag_names(&app, &token).await.len(), 3);

    // A name replaces the contact's, an empty one keeps it; tags are added.
    let report = import_ok(
        &app,
        &token,
        "phone,name,tags\n3001234568,Luis Alberto,news\n+573001234567,,nueva\n3001234599,Nuevo,\n",
    )
    .await;
    assert_eq!(
        report,
        json!({"imported": 1, "updated": 2, "invalid": 0, "duplicates": 0, "errors": []})
    );
    let mut expected = first.clone();
    expected.extend([
        entry(
            "+573001234567",
            Some("Pérez, Ana"),
            &["bogota", "nueva", "vip"],
        ),
        entry("+573001234568", Some("Luis Alberto"), &["news", "vip"]),
        entry("+573001234599", Some("Nuevo"), &[]),
    ]);
    assert_eq!(address_book(&app, &token).await, expected);
    assert_eq!(tag_names(&app, &token).await.len(), 4);

    // The imported contacts are what /sms/tags sends to.
    let names = tag_names(&app, &token).await;
    let news = names.iter().find(|(_, n)| *n == "news").unwrap().0;
    let r = app
        .post(
            "/api/messages/sms/tags",
            &token,
            &json!({"message": HELLO, "tagIds": [news]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut sent = recipients(&r.json::<Value>().await.unwrap());
    sent.sort();
    assert_eq!(sent, ["+573001234568", "+573001234570"]);
}

#[actix_web::test]
async fn an_import_is_scoped_to_the_callers_account() {
    let app = spawn_app().await;
    let token = app.new_account(10, "CO", true).await;
    let other = app.new_account(10, "CO", true).await;
    import_ok(&app, &token, FILE).await;

    assert!(app.all_contacts(&other).await.is_empty());
    assert!(tag_names(&app, &other).await.is_empty());

    // The same number in another account is another contact.
    let report = import_ok(&app, &other, "phone,name,tags\n3001234567,Otra,vip\n").await;
    assert_eq!(
        report,
        json!({"imported": 1, "updated": 0, "invalid": 0, "duplicates": 0, "errors": []})
    );
    assert_eq!(
        address_book(&app, &other).await,
        BTreeMap::from([entry("+573001234567", Some("Otra"), &["vip"])])
    );
    let mine = address_book(&app, &token).await;
    assert_eq!(
        mine["+573001234567"],
        (
            Some("Pérez, Ana".to_owned()),
            vec!["bogota".into(), "vip".into()]
        )
    );
    assert_eq!(mine.len(), 4);
}

#[actix_web::test]
async fn an_import_needs_csv_with_the_header_row_and_a_token() {
    let app = spawn_app().await;
    let token = app.new_account(10, "CO", true).await;
    for content_type in ["application/json", "text/plain"] {
        let r = app.import_contacts(&token, content_type, FILE).await;
        assert_error(
            r,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    let r = app
        .client
        .post(app.url("/api/contacts/import"))
        .bearer_auth(&token)
        .body(FILE)
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    for body in [
        "",
        "3001234567,Ana,vip\n",
        "phone,name\n3001234567,Ana\n",
        "telefono,nombre,etiquetas\n3001234567,Ana,vip\n",
    ] {
        let r = app.import_contacts(&token, CSV, body).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let r = app.import_contacts("not-a-token", CSV, FILE).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(app.all_contacts(&token).await.is_empty());

    // A charset parameter, a byte order mark and a header in capitals are fine.
    let r = app
        .import_contacts(
            &token,
            "text/csv; charset=utf-8",
            "\u{feff}Phone, Name ,TAGS\n3001234567,Ana,\n",
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["imported"], 1);
}

#[actix_web::test]
async fn a_file_above_the_import_limit_is_refused_with_413() {
    let app = spawn_app_with(|s| s.limits.max_import_bytes = 64).await;
    let token = app.new_account(10, "CO", true).await;
    let r = app.import_contacts(&token, CSV, FILE).await;
    let body = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(body["message"], "the file is larger than 64 bytes");
    assert!(app.all_contacts(&token).await.is_empty());
}

#[actix_web::test]
async fn a_large_import_is_written_in_chunks_and_lists_the_first_100_invalid_rows() {
    let app = spawn_app().await;
    let token = app.new_account(10, "CO", true).await;
    let mut file = String::from("phone,name,tags\n");
    for i in 0..2_500u32 {
        file.push_str(&format!("3{:09},Contact {i},bulk\n", 100_000_000 + i));
    }
    for i in 0..150u32 {
        file.push_str(&format!("306{:07},Invalid {i},bulk\n", i));
    }
    let report = import_ok(&app, &token, &file).await;
    assert_eq!(report["imported"], 2_500);
    assert_eq!(report["updated"], 0);
    assert_eq!(report["invalid"], 150);
    assert_eq!(report["duplicates"], 0);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 100);
    assert_eq!(
        errors[0],
        json!({"row": 2_501, "phone": "3060000000", "reason": "not a valid phone number"})
    );
    assert_eq!(errors[99]["row"], 2_600);
    let contacts = app.all_contacts(&token).await;
    assert_eq!(contacts.len(), 2_500);
    assert!(contacts
        .iter()
        .all(|c| c["tagIds"].as_array().unwrap().len() == 1));
    assert_eq!(tag_names(&app, &token).await.len(), 1);
}
