//! Contacts and tags, the recipients of `/sms/all` and `/sms/tags`.

use super::{page_limit, rfc3339, Listing};
use crate::auth::Authenticated;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use sendme_actors::domain::*;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_contact)
        .service(list_contacts)
        .service(get_contact)
        .service(update_contact)
        .service(delete_contact)
        .service(set_contact_tags)
        .service(create_tag)
        .service(list_tags);
}

/// A contact of the account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContactView<'a> {
    id: ContactId,
    /// E.164.
    #[schema(example = "+573001234567")]
    phone: &'a str,
    name: Option<&'a str>,
    tag_ids: &'a [TagId],
    created_at: String,
}

impl<'a> From<&'a Contact> for ContactView<'a> {
    fn from(c: &'a Contact) -> Self {
        ContactView {
            id: c.id,
            phone: &c.phone,
            name: c.name.as_deref(),
            tag_ids: &c.tags,
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TagView<'a> {
    id: TagId,
    name: &'a str,
}

impl<'a> From<&'a Tag> for TagView<'a> {
    fn from(t: &'a Tag) -> Self {
        TagView {
            id: t.id,
            name: &t.name,
        }
    }
}

fn parse_tag_ids(ids: Option<Vec<String>>) -> Result<Vec<TagId>, ApiError> {
    let mut tags = ids
        .unwrap_or_default()
        .iter()
        .map(|t| t.parse::<TagId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::InvalidRequest("`tagIds` must be UUIDs".into()))?;
    tags.sort_unstable();
    tags.dedup();
    Ok(tags)
}

/// The country contacts' phones are read in (the account's default).
pub(super) async fn account_country(
    state: &AppState,
    account: AccountId,
) -> Result<Country, ApiError> {
    let acc = state
        .ports
        .accounts
        .account(account)
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    Ok(acc.default_country)
}

/// Normalizes a contact's phone with the account's default country.
pub(super) async fn parse_phone(
    state: &AppState,
    account: AccountId,
    raw: &str,
) -> Result<PhoneNumber, ApiError> {
    let country = account_country(state, account).await?;
    PhoneNumber::parse(raw, Some(country))
        .map_err(|_| ApiError::InvalidRequest(format!("`phone` is not a valid number: {raw:?}")))
}

async fn own_contact(state: &AppState, account: AccountId, id: &str) -> Result<Contact, ApiError> {
    let id: ContactId = id.parse().map_err(|_| ApiError::NotFound("contact"))?;
    state
        .ports
        .contacts
        .contact(account, id)
        .await?
        .ok_or(ApiError::NotFound("contact"))
}

fn non_blank(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(ApiError::InvalidRequest(format!(
            "`{field}` must not be blank"
        ))),
        Some(v) if v.chars().count() > 200 => Err(ApiError::InvalidRequest(format!(
            "`{field}` is longer than 200 characters"
        ))),
        other => Ok(other),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewContact {
    /// Normalized with the account's default country; invalid → 400.
    #[schema(example = "3001234567")]
    phone: String,
    /// Up to 200 characters, not blank.
    name: Option<String>,
    /// Tag ids (UUIDs) of existing tags.
    tag_ids: Option<Vec<String>>,
}

#[utoipa::path(
    post,
    path = "/api/contacts",
    tag = "contacts",
    description = "Creates a contact.",
    request_body = NewContact,
    responses(
        (status = 201, description = "Created", body = ContactView),
        (status = 409, description = "A contact with this phone exists (`contact_exists`)", body = ErrorBody),
    )
)]
#[post("/contacts")]
pub(crate) async fn create_contact(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    body: JsonBody<NewContact>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let phone = parse_phone(&state, member.account, &body.phone).await?;
    let contact = Contact {
        id: ContactId::new(),
        account: member.account,
        phone: phone.into_string(),
        name: non_blank("name", body.name)?,
        tags: parse_tag_ids(body.tag_ids)?,
        created_at: now_millis(),
    };
    state.ports.contacts.create_contact(&contact).await?;
    Ok(HttpResponse::Created().json(ContactView::from(&contact)))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ContactQuery {
    /// Only contacts with this tag (UUID).
    tag_id: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/contacts",
    tag = "contacts",
    description = "The account's contacts, paged.",
    params(ContactQuery),
    responses(
        (status = 200, description = "A page of contacts", body = Listing<ContactView>),
    )
)]
#[get("/contacts")]
pub(crate) async fn list_contacts(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    query: web::Query<ContactQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let tag = q
        .tag_id
        .map(|t| t.parse::<TagId>())
        .transpose()
        .map_err(|_| ApiError::InvalidRequest("`tagId` must be a UUID".into()))?;
    // A cursor is bound to the account and the tag filter.
    let cursors = state.keys.cursors();
    let listing = format!(
        "contacts|{}",
        tag.map(|t| t.to_string()).unwrap_or_default()
    );
    let after = q
        .cursor
        .map(|c| cursors.open(member.account, &listing, &c))
        .transpose()?
        .map(|id| ContactId(uuid::Uuid::from_bytes(id)));
    let page = state
        .ports
        .contacts
        .list_contacts(member.account, tag, after, page_limit(q.limit)?)
        .await?;
    Ok(HttpResponse::Ok().json(Listing {
        items: page.items.iter().map(ContactView::from).collect(),
        next_cursor: page
            .next
            .map(|c| cursors.seal(member.account, &listing, c.as_bytes())),
    }))
}

#[utoipa::path(
    get,
    path = "/api/contacts/{id}",
    tag = "contacts",
    description = "One contact.",
    params(("id" = String, Path, description = "The contact id")),
    responses(
        (status = 200, description = "The contact", body = ContactView),
    )
)]
#[get("/contacts/{id}")]
pub(crate) async fn get_contact(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let contact = own_contact(&state, member.account, &path).await?;
    Ok(HttpResponse::Ok().json(ContactView::from(&contact)))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct ContactChanges {
    /// A new phone, normalized with the account's default country.
    phone: Option<String>,
    /// A new name, up to 200 characters, not blank.
    name: Option<String>,
}

#[utoipa::path(
    patch,
    path = "/api/contacts/{id}",
    tag = "contacts",
    description = "Changes a contact's phone or name.",
    request_body = ContactChanges,
    params(("id" = String, Path, description = "The contact id")),
    responses(
        (status = 200, description = "The contact after the change", body = ContactView),
        (status = 409, description = "Another contact has this phone (`contact_exists`)", body = ErrorBody),
    )
)]
#[patch("/contacts/{id}")]
pub(crate) async fn update_contact(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
    body: JsonBody<ContactChanges>,
) -> Result<HttpResponse, ApiError> {
    let mut contact = own_contact(&state, member.account, &path).await?;
    let changes = body.into_inner();
    if let Some(phone) = changes.phone {
        contact.phone = parse_phone(&state, member.account, &phone)
            .await?
            .into_string();
    }
    if let Some(name) = non_blank("name", changes.name)? {
        contact.name = Some(name);
    }
    state.ports.contacts.update_contact(&contact).await?;
    Ok(HttpResponse::Ok().json(ContactView::from(&contact)))
}

#[utoipa::path(
    delete,
    path = "/api/contacts/{id}",
    tag = "contacts",
    description = "Deletes a contact.",
    params(("id" = String, Path, description = "The contact id")),
    responses(
        (status = 204, description = "Deleted"),
    )
)]
#[delete("/contacts/{id}")]
pub(crate) async fn delete_contact(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let contact = own_contact(&state, member.account, &path).await?;
    state
        .ports
        .contacts
        .delete_contact(member.account, contact.id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagAssignment {
    /// The contact's complete set of tags (UUIDs of existing tags).
    tag_ids: Vec<String>,
}

#[utoipa::path(
    put,
    path = "/api/contacts/{id}/tags",
    tag = "contacts",
    description = "Replaces a contact's tags.",
    request_body = TagAssignment,
    params(("id" = String, Path, description = "The contact id")),
    responses(
        (status = 200, description = "The contact with its new tags", body = ContactView),
    )
)]
#[put("/contacts/{id}/tags")]
pub(crate) async fn set_contact_tags(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
    body: JsonBody<TagAssignment>,
) -> Result<HttpResponse, ApiError> {
    let mut contact = own_contact(&state, member.account, &path).await?;
    contact.tags = parse_tag_ids(Some(body.into_inner().tag_ids))?;
    state.ports.contacts.update_contact(&contact).await?;
    Ok(HttpResponse::Ok().json(ContactView::from(&contact)))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct NewTag {
    /// Up to 200 characters, not blank.
    #[schema(example = "customers")]
    name: String,
}

#[utoipa::path(
    post,
    path = "/api/tags",
    tag = "contacts",
    description = "Creates a tag.",
    request_body = NewTag,
    responses(
        (status = 201, description = "Created", body = TagView),
    )
)]
#[post("/tags")]
pub(crate) async fn create_tag(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    body: JsonBody<NewTag>,
) -> Result<HttpResponse, ApiError> {
    let name = non_blank("name", Some(body.into_inner().name))?.unwrap_or_default();
    let tag = Tag {
        id: TagId::new(),
        account: member.account,
        name: name.trim().to_owned(),
    };
    state.ports.contacts.create_tag(&tag).await?;
    Ok(HttpResponse::Created().json(TagView::from(&tag)))
}

#[utoipa::path(
    get,
    path = "/api/tags",
    tag = "contacts",
    description = "Every tag of the account (one page, `nextCursor` null).",
    responses(
        (status = 200, description = "The tags", body = Listing<TagView>),
    )
)]
#[get("/tags")]
pub(crate) async fn list_tags(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let tags = state.ports.contacts.tags(member.account).await?;
    Ok(HttpResponse::Ok().json(Listing {
        items: tags.iter().map(TagView::from).collect(),
        next_cursor: None,
    }))
}
