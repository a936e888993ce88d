//! Store contract cases: tags and contacts.

use super::*;

// ---------------------------------------------------------------------------------
// Contacts

fn contact(account: AccountId, phone: &str, tags: Vec<TagId>) -> Contact {
    Contact {
        id: ContactId::new(),
        account,
        phone: phone.into(),
        name: Some(format!("contact {phone}")),
        tags,
        created_at: 1_700_000_000_000,
    }
}

async fn tag(s: &Stores, account: AccountId, name: &str) -> TagId {
    let tag = Tag {
        id: TagId::new(),
        account,
        name: name.into(),
    };
    s.contacts.create_tag(&tag).await.unwrap();
    tag.id
}

pub async fn contacts_are_unique_by_phone_and_need_existing_tags(s: Stores) {
    let account = AccountId::new();
    let vip = tag(&s, account, "vip").await;
    let news = tag(&s, account, "news").await;
    let tags = s.contacts.tags(account).await.unwrap();
    assert_eq!(
        tags.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![vip, news]
    );
    assert_eq!(
        s.contacts.tag(account, vip).await.unwrap().unwrap().name,
        "vip"
    );
    assert_eq!(s.contacts.tag(AccountId::new(), vip).await.unwrap(), None);

    let unknown = TagId::new();
    match s
        .contacts
        .create_contact(&contact(account, "+573000000001", vec![vip, unknown]))
        .await
    {
        Err(ContactError::UnknownTag(t)) => assert_eq!(t, unknown),
        other => panic!("expected UnknownTag, got {other:?}"),
    }
    assert!(s.contacts.all_phones(account).await.unwrap().is_empty());

    let ana = contact(account, "+573000000001", vec![vip]);
    s.contacts.create_contact(&ana).await.unwrap();
    assert_eq!(
        s.contacts.contact(account, ana.id).await.unwrap(),
        Some(ana.clone())
    );
    assert_eq!(
        s.contacts.contact(AccountId::new(), ana.id).await.unwrap(),
        None
    );
    match s
        .contacts
        .create_contact(&contact(account, "+573000000001", vec![]))
        .await
    {
        Err(ContactError::DuplicatePhone(owner)) => assert_eq!(owner, ana.id),
        other => panic!("expected DuplicatePhone, got {other:?}"),
    }
    // The same number in another account is another contact.
    let elsewhere = contact(AccountId::new(), "+573000000001", vec![]);
    s.contacts.create_contact(&elsewhere).await.unwrap();

    assert!(s.contacts.delete_contact(account, ana.id).await.unwrap());
    assert!(!s.contacts.delete_contact(account, ana.id).await.unwrap());
    assert_eq!(s.contacts.contact(account, ana.id).await.unwrap(), None);
    assert!(s
        .contacts
        .tagged_phones(account, &[vip])
        .await
        .unwrap()
        .is_empty());
    // The number is free again.
    s.contacts
        .create_contact(&contact(account, "+573000000001", vec![news]))
        .await
        .unwrap();
}

pub async fn updating_a_contact_keeps_its_indexes_in_step(s: Stores) {
    let account = AccountId::new();
    let vip = tag(&s, account, "vip").await;
    let news = tag(&s, account, "news").await;
    let mut ana = contact(account, "+573000000001", vec![vip]);
    s.contacts.create_contact(&ana).await.unwrap();

    ana.phone = "+573000000002".into();
    ana.name = None;
    ana.tags = vec![news];
    s.contacts.update_contact(&ana).await.unwrap();
    assert_eq!(
        s.contacts.contact(account, ana.id).await.unwrap(),
        Some(ana.clone())
    );
    assert_eq!(
        s.contacts.all_phones(account).await.unwrap(),
        vec!["+573000000002"]
    );
    assert!(s
        .contacts
        .tagged_phones(account, &[vip])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.contacts.tagged_phones(account, &[news]).await.unwrap(),
        vec!["+573000000002"]
    );
    let listed = s
        .contacts
        .list_contacts(account, Some(vip), None, 10)
        .await
        .unwrap();
    assert!(listed.items.is_empty());

    // The old number is free, the new one taken.
    s.contacts
        .create_contact(&contact(account, "+573000000001", vec![]))
        .await
        .unwrap();
    assert!(matches!(
        s.contacts
            .create_contact(&contact(account, "+573000000002", vec![]))
            .await,
        Err(ContactError::DuplicatePhone(owner)) if owner == ana.id
    ));
    let mut bad = ana.clone();
    bad.tags = vec![TagId::new()];
    assert!(matches!(
        s.contacts.update_contact(&bad).await,
        Err(ContactError::UnknownTag(_))
    ));
    assert!(
        s.contacts
            .update_contact(&contact(account, "+573000000009", vec![]))
            .await
            .is_err(),
        "updating a contact that does not exist fails"
    );
}

/// 40 contacts, every other one tagged: more than a page of every scan.
async fn address_book(s: &Stores) -> (AccountId, TagId, TagId, Vec<Contact>) {
    let account = AccountId::new();
    let even = tag(s, account, "even").await;
    let all = tag(s, account, "all").await;
    let mut contacts = Vec::new();
    for i in 0..40u32 {
        let tags = if i % 2 == 0 {
            vec![even, all]
        } else {
            vec![all]
        };
        let c = contact(account, &format!("+5731{:08}", i), tags);
        s.contacts.create_contact(&c).await.unwrap();
        contacts.push(c);
    }
    contacts.sort_by_key(|c| c.id);
    (account, even, all, contacts)
}

pub async fn list_contacts_pages_in_id_order_with_and_without_tag(s: Stores) {
    let (account, even, _, contacts) = address_book(&s).await;
    for (tag, expected) in [
        (None, contacts.clone()),
        (
            Some(even),
            contacts
                .iter()
                .filter(|c| c.tags.contains(&even))
                .cloned()
                .collect::<Vec<_>>(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .contacts
                .list_contacts(account, tag, after, 7)
                .await
                .unwrap();
            assert!(page.items.len() <= 7);
            seen.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "tag filter {tag:?}");
    }
    let other = s
        .contacts
        .list_contacts(AccountId::new(), None, None, 10)
        .await
        .unwrap();
    assert!(other.items.is_empty() && other.next.is_none());
}

pub async fn all_phones_and_tagged_phones_page_through_every_contact(s: Stores) {
    let (account, even, all, contacts) = address_book(&s).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let every: Vec<String> = sorted(contacts.iter().map(|c| c.phone.clone()).collect());
    assert_eq!(sorted(s.contacts.all_phones(account).await.unwrap()), every);
    let evens: Vec<String> = sorted(
        contacts
            .iter()
            .filter(|c| c.tags.contains(&even))
            .map(|c| c.phone.clone())
            .collect(),
    );
    assert_eq!(
        sorted(s.contacts.tagged_phones(account, &[even]).await.unwrap()),
        evens
    );
    // A contact with both tags appears once per tag (the engine dedupes).
    let both = sorted(
        s.contacts
            .tagged_phones(account, &[even, all])
            .await
            .unwrap(),
    );
    assert_eq!(both, sorted(evens.iter().chain(&every).cloned().collect()));
    assert!(s
        .contacts
        .tagged_phones(account, &[TagId::new()])
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .contacts
        .all_phones(AccountId::new())
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------------
// Imports: upsert by phone

fn upsert(phone: &str, name: Option<&str>, tags: &[&str]) -> ContactUpsert {
    ContactUpsert {
        phone: PhoneNumber::from_trusted(phone).unwrap(),
        name: name.map(str::to_owned),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn id_of(outcome: UpsertOutcome) -> ContactId {
    match outcome {
        UpsertOutcome::Created(id) | UpsertOutcome::Updated(id) => id,
    }
}

pub async fn upsert_contacts_creates_new_phones_and_merges_into_existing_ones(s: Stores) {
    let account = AccountId::new();
    let vip = tag(&s, account, "vip").await;
    let ana = contact(account, "+573000000001", vec![vip]);
    s.contacts.create_contact(&ana).await.unwrap();

    let outcomes = s
        .contacts
        .upsert_contacts(
            account,
            vec![
                upsert("+573000000001", Some("Ana María"), &["news"]),
                upsert("+573000000002", None, &["vip"]),
                upsert("+573000000003", Some("Bea"), &[]),
                // Repeated in the same call: the contact of the second row, updated.
                upsert("+573000000002", Some("Carla"), &["news"]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    assert_eq!(outcomes[0], UpsertOutcome::Updated(ana.id));
    let carla = id_of(outcomes[1]);
    assert_eq!(outcomes[1], UpsertOutcome::Created(carla));
    let bea = id_of(outcomes[2]);
    assert_eq!(outcomes[2], UpsertOutcome::Created(bea));
    assert_eq!(outcomes[3], UpsertOutcome::Updated(carla));

    // The tag named on the fly exists once, next to the one that was there.
    let tags = s.contacts.tags(account).await.unwrap();
    assert_eq!(
        tags.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["vip", "news"]
    );
    let news = tags[1].id;

    let stored = |id| {
        let s = s.clone();
        async move { s.contacts.contact(account, id).await.unwrap().unwrap() }
    };
    let ana_now = stored(ana.id).await;
    assert_eq!(ana_now.name.as_deref(), Some("Ana María"));
    assert_eq!(ana_now.tags, vec![vip, news]);
    assert_eq!(
        (ana_now.phone.as_str(), ana_now.created_at),
        ("+573000000001", ana.created_at)
    );
    let carla_now = stored(carla).await;
    assert_eq!(carla_now.phone, "+573000000002");
    assert_eq!(carla_now.name.as_deref(), Some("Carla"));
    assert_eq!(carla_now.tags, vec![vip, news]);
    let bea_now = stored(bea).await;
    assert_eq!(
        (
            bea_now.phone.as_str(),
            bea_now.name.as_deref(),
            bea_now.tags.len()
        ),
        ("+573000000003", Some("Bea"), 0)
    );

    // A row without a name keeps the contact's; the tag is found, not made again.
    let again = s
        .contacts
        .upsert_contacts(account, vec![upsert("+573000000003", None, &["news"])])
        .await
        .unwrap();
    assert_eq!(again, vec![UpsertOutcome::Updated(bea)]);
    let bea_now = stored(bea).await;
    assert_eq!(bea_now.name.as_deref(), Some("Bea"));
    assert_eq!(bea_now.tags, vec![news]);
    assert_eq!(s.contacts.tags(account).await.unwrap().len(), 2);

    // The indexes follow: by phone (a create of the number conflicts) and by tag.
    let mut by_news = s.contacts.tagged_phones(account, &[news]).await.unwrap();
    by_news.sort();
    assert_eq!(
        by_news,
        vec!["+573000000001", "+573000000002", "+573000000003"]
    );
    assert!(matches!(
        s.contacts
            .create_contact(&contact(account, "+573000000002", vec![]))
            .await,
        Err(ContactError::DuplicatePhone(owner)) if owner == carla
    ));
    let mut all = s.contacts.all_phones(account).await.unwrap();
    all.sort();
    assert_eq!(all, vec!["+573000000001", "+573000000002", "+573000000003"]);
}

pub async fn upsert_contacts_touches_only_the_callers_account(s: Stores) {
    let mine = AccountId::new();
    let theirs = AccountId::new();
    let their_vip = tag(&s, theirs, "vip").await;
    let their_contact = contact(theirs, "+573000000001", vec![their_vip]);
    s.contacts.create_contact(&their_contact).await.unwrap();

    let outcomes = s
        .contacts
        .upsert_contacts(
            mine,
            vec![upsert("+573000000001", Some("Mine"), &["vip", "new"])],
        )
        .await
        .unwrap();
    let created = id_of(outcomes[0]);
    assert_eq!(outcomes, vec![UpsertOutcome::Created(created)]);
    assert_ne!(created, their_contact.id);

    // Their contact and tags are as they were.
    assert_eq!(
        s.contacts.contact(theirs, their_contact.id).await.unwrap(),
        Some(their_contact.clone())
    );
    assert_eq!(
        s.contacts.tags(theirs).await.unwrap(),
        vec![Tag {
            id: their_vip,
            account: theirs,
            name: "vip".into()
        }]
    );
    // Mine got tags of its own, under the same names.
    let my_tags = s.contacts.tags(mine).await.unwrap();
    assert_eq!(
        my_tags.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["vip", "new"]
    );
    assert!(my_tags
        .iter()
        .all(|t| t.id != their_vip && t.account == mine));
    let mine_now = s.contacts.contact(mine, created).await.unwrap().unwrap();
    assert_eq!(
        mine_now.tags,
        my_tags.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    assert_eq!(s.contacts.contact(theirs, created).await.unwrap(), None);
}
