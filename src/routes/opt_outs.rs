//! Opt-outs: `POST /api/opt-outs`, `GET /api/opt-outs`, `DELETE /api/opt-outs/{phone}`.
//! A number that opted out is left out of every send and preview of the account (counted
//! as `optedOut`, never charged). Replies such as STOP add one too (`inbound.rs`).

use super::contacts::parse_phone;
use super::{page_limit, rfc3339, Listing, PageQuery};
use crate::auth::Authenticated;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{delete, get, post, web, HttpResponse};
use sendme_actors::domain::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_opt_out)
        .service(list_opt_outs)
        .service(delete_opt_out);
}

/// A number that must not be messaged by the account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OptOutView {
    /// E.164.
    #[schema(example = "+573001234567")]
    phone: String,
    /// `api` or `inbound` (a STOP reply).
    #[schema(example = "api")]
    source: &'static str,
    created_at: String,
}

impl From<&OptOut> for OptOutView {
    fn from(o: &OptOut) -> Self {
        OptOutView {
            phone: o.phone.as_str().to_owned(),
            source: o.source.as_str(),
            created_at: rfc3339(o.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OptOutPayload {
    /// Any common format; read with the account's default country.
    #[schema(example = "300 123 4567")]
    phone: String,
}

#[utoipa::path(
    post,
    path = "/api/opt-outs",
    tag = "opt-outs",
    description = "Opts a number out of the account's messages. Opting out again answers 200 with the first opt-out.",
    request_body = OptOutPayload,
    responses(
        (status = 201, description = "Opted out", body = OptOutView),
        (status = 200, description = "Already opted out", body = OptOutView),
        (status = 400, description = "Not a valid number (`invalid_request`)", body = ErrorBody),
    )
)]
#[post("/opt-outs")]
pub(crate) async fn create_opt_out(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    payload: JsonBody<OptOutPayload>,
) -> Result<HttpResponse, ApiError> {
    let phone = parse_phone(&state, member.account, &payload.phone).await?;
    let wanted = OptOut {
        account: member.account,
        phone,
        source: OptOutSource::Api,
        created_at: now_millis(),
    };
    let held = state.ports.opt_outs.add_opt_out(&wanted).await?;
    let mut response = if held == wanted {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(OptOutView::from(&held)))
}

/// A number as a cursor's 16 bytes: its digits, an integer (E.164 digits never start
/// with 0, and 38 digits fit).
fn phone_to_id(phone: &PhoneNumber) -> [u8; 16] {
    let digits = phone.as_str().trim_start_matches('+');
    digits.parse::<u128>().unwrap_or_default().to_be_bytes()
}

fn phone_from_id(id: [u8; 16]) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::from_trusted(&format!("+{}", u128::from_be_bytes(id)))
        .map_err(|_| ApiError::InvalidRequest("`cursor` is not valid for this listing".into()))
}

const LISTING: &str = "opt-outs";

#[utoipa::path(
    get,
    path = "/api/opt-outs",
    tag = "opt-outs",
    description = "The account's opt-outs in number order, paged.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of opt-outs", body = Listing<OptOutView>),
        (status = 400, description = "Bad `limit` or `cursor` (`invalid_request`)", body = ErrorBody),
    )
)]
#[get("/opt-outs")]
pub(crate) async fn list_opt_outs(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let cursors = state.keys.cursors();
    let after = q
        .cursor
        .map(|c| {
            cursors
                .open(member.account, LISTING, &c)
                .and_then(phone_from_id)
        })
        .transpose()?;
    let page = state
        .ports
        .opt_outs
        .list_opt_outs(member.account, after, page_limit(q.limit)?)
        .await?;
    Ok(HttpResponse::Ok().json(Listing {
        items: page.items.iter().map(OptOutView::from).collect(),
        next_cursor: page
            .next
            .map(|p| cursors.seal(member.account, LISTING, &phone_to_id(&p))),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/opt-outs/{phone}",
    tag = "opt-outs",
    description = "Opts the number back in.",
    params(("phone" = String, Path, description = "E.164, URL-encoded (`%2B573001234567`)")),
    responses(
        (status = 204, description = "Opted back in"),
        (status = 404, description = "The number has not opted out of this account (`not_found`)", body = ErrorBody),
    )
)]
#[delete("/opt-outs/{phone}")]
pub(crate) async fn delete_opt_out(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound("opt-out");
    let phone = PhoneNumber::parse(&path, None).map_err(|_| not_found())?;
    if state
        .ports
        .opt_outs
        .remove_opt_out(member.account, &phone)
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_survives_its_cursor_id() {
        for n in ["+573001234567", "+12125550100", "+4930123456789012"] {
            let phone = PhoneNumber::from_trusted(n).unwrap();
            assert_eq!(phone_from_id(phone_to_id(&phone)).unwrap(), phone);
        }
    }
}
