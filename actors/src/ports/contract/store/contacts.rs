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
