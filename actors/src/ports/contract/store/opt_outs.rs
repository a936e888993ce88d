//! Store contract cases: opt-outs, inbound replies, who last messaged a number.

use super::*;
use uuid::Uuid;
use MessageStatus::*;

/// A number no other test (or earlier run on a shared keyspace) uses: `last_senders` is
/// keyed by number alone.
fn fresh_phone() -> PhoneNumber {
    let n = u32::from_le_bytes(Uuid::now_v7().as_bytes()[12..16].try_into().unwrap()) % 10_000_000;
    PhoneNumber::from_trusted(&format!("+57301{n:07}")).unwrap()
}

fn opt_out(account: AccountId, phone: &PhoneNumber, source: OptOutSource) -> OptOut {
    OptOut {
        account,
        phone: phone.clone(),
        source,
        created_at: 1_700_000_000_000,
    }
}

pub async fn opt_outs_are_kept_once_per_account_and_listed_in_number_order(s: Stores) {
    let (account, other) = (AccountId::new(), AccountId::new());
    let phones = [phone(3), phone(1), phone(2)];
    for p in &phones {
        let added = s
            .opt_outs
            .add_opt_out(&opt_out(account, p, OptOutSource::Api))
            .await
            .unwrap();
        assert_eq!(added, opt_out(account, p, OptOutSource::Api));
    }
    // A repeat (here a STOP after the API call) keeps the first.
    let again = OptOut {
        created_at: 1_800_000_000_000,
        ..opt_out(account, &phone(1), OptOutSource::Inbound)
    };
    assert_eq!(
        s.opt_outs.add_opt_out(&again).await.unwrap(),
        opt_out(account, &phone(1), OptOutSource::Api)
    );

    let first = s.opt_outs.list_opt_outs(account, None, 2).await.unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|o| o.phone.clone())
            .collect::<Vec<_>>(),
        vec![phone(1), phone(2)]
    );
    let rest = s
        .opt_outs
        .list_opt_outs(account, first.next.clone(), 2)
        .await
        .unwrap();
    assert_eq!(
        rest.items,
        vec![opt_out(account, &phone(3), OptOutSource::Api)]
    );
    assert_eq!(rest.next, None);
    let none = s.opt_outs.list_opt_outs(other, None, 10).await.unwrap();
    assert_eq!(
        none,
        Page {
            items: vec![],
            next: None
        }
    );

    let asked = [phone(2), phone(4), phone(3)];
    assert_eq!(
        s.opt_outs.opted_out(account, &asked).await.unwrap(),
        vec![phone(2), phone(3)]
    );
    assert!(s
        .opt_outs
        .opted_out(other, &asked)
        .await
        .unwrap()
        .is_empty());

    assert!(s.opt_outs.remove_opt_out(account, &phone(2)).await.unwrap());
    assert!(!s.opt_outs.remove_opt_out(account, &phone(2)).await.unwrap());
    assert!(!s.opt_outs.remove_opt_out(other, &phone(3)).await.unwrap());
    assert_eq!(
        s.opt_outs.opted_out(account, &asked).await.unwrap(),
        vec![phone(3)]
    );
}

pub async fn a_message_reaching_sent_names_its_account_the_numbers_last_sender(s: Stores) {
    let to = fresh_phone();
    assert_eq!(s.opt_outs.last_sender(&to).await.unwrap(), None);
    for account in [account_with(&s, 1).await, account_with(&s, 1).await] {
        let (_, ids) = accepted(&s, account, MessageType::Sms, std::slice::from_ref(&to)).await;
        apply_one(&s, change(ids[0], Queued, Sending))
            .await
            .unwrap();
        // Claimed is not sent: the number has not heard from this account yet.
        assert_ne!(s.opt_outs.last_sender(&to).await.unwrap(), Some(account));
        apply_one(&s, change(ids[0], Sending, Sent)).await.unwrap();
        assert_eq!(s.opt_outs.last_sender(&to).await.unwrap(), Some(account));
    }
}

pub async fn inbound_messages_are_listed_newest_first_per_account(s: Stores) {
    let (account, other) = (AccountId::new(), AccountId::new());
    let mut sent = Vec::new();
    for text in ["hola", "gracias", "¿quién es?"] {
        let m = InboundMessage {
            id: InboundId::new(),
            account,
            from: phone(7),
            to: Some("SENDME".into()),
            text: text.into(),
            provider: "simulated".into(),
            received_at: now_millis(),
        };
        s.opt_outs.add_inbound(&m).await.unwrap();
        sent.push(m);
    }
    sent.reverse();
    let first = s.opt_outs.list_inbound(account, None, 2).await.unwrap();
    assert_eq!(first.items, sent[..2]);
    let rest = s
        .opt_outs
        .list_inbound(account, first.next, 2)
        .await
        .unwrap();
    assert_eq!(
        rest,
        Page {
            items: sent[2..].to_vec(),
            next: None
        }
    );
    assert!(s
        .opt_outs
        .list_inbound(other, None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
}
